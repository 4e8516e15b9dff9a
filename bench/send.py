"""Benchmark: sends through the gateway (API → NATS → node agent → sandbox provider → reply).

Starts the whole stack with two paired sandbox instances (A sends to B), and in the
same run a baseline: a bare Litestar handler doing one NATS request-reply to an echo
responder (`bench.echo_baseline`). For both it measures

- throughput: C connections in a closed loop for D seconds (wrk, after a 1 s warm-up), accepted sends per second,
  and sustained sends per second: over the run plus the time the event pipeline then needs to
  finish the work the sends left behind (the providers' outboxes, routing, the API's consumer).
  Once per C of `--in-flight` (default 32 and 64: the gateway batches the sends waiting
  together, so its throughput grows with the sends in flight);
- latency at a fixed offered rate (open loop, `bench.open_loop`: each latency counted from when
  its request was due; default 500/s for D seconds): p50/p95/p99, the machine's busy and steal share
  meanwhile (`bench.cpu.MachineSampler`; steal: time the hypervisor gave to other guests), the
  CPU per send of each component, and for the gateway the PostgreSQL transactions that wrote something, per send
  (every service's), both with the run's backlog included: counts that vary far less from run
  to run than latency does;
- latency at half the measured capacity (what a client sees below saturation);
- latency nearly idle (IDLE_RATE sends/s: the floor a single send costs end to end);
- with `--curve R1,R2,...`, latency at each of those offered rates as at the fixed one (busy and
  steal shares, CPU per send): where on this machine the p99 crosses the target.

Each run of the gateway starts once the events left by the run before it are handled
(`pipeline_idle`), so it does not measure the previous run's backlog.

Targets (issue): ≥ 1,000 accepted sends/s, p99 ≤ 30 ms at 500 sends/s. Every loop is
bounded in count and time. Usage: `python -m bench.send [--in-flight 32,64] [--rate 500] [--curve 300,400]`.
"""

import argparse
import asyncio
import json
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx
import nats
from wgs_api.messaging import EVENTS_CONSUMER
from wgs_contracts import streams
from wgs_devstack.processes import ManagedProcess, free_port
from wgs_kit.waiting import wait_until

from bench.cpu import MachineSampler, cpu_ms_per_unit, cpu_reading
from bench.open_loop import open_loop
from bench.stack import ROOT, Stack, cancel_on_sigterm, gateway_stack

TARGET_THROUGHPUT = 1000.0
TARGET_P99_MS = 30.0
IDLE_QUIET_SECONDS = 1.0
IDLE_RATE = 20.0  # sends/s of the "nearly idle" latency run: what one send costs end to end
IDLE_DEADLINE_SECONDS = 120.0
WARM_UP_SECONDS = 1
WRK_MISSING = (
    "bench.send measures throughput with wrk, which is not installed: run `make install` (or apt-get install wrk)"
)


async def paired_sandbox(stack: Stack, phone: str) -> int:
    """A running, paired sandbox instance."""
    body = {"phone": phone, "provider": "sandbox", "resources": {"cpu": "0.5", "memory": "128m"}}
    instance = (await stack.client.post("/api/instances", json=body, headers=stack.headers)).json()

    async def showing_qr() -> bool:
        view = (await stack.client.get(f"/api/instances/{instance['id']}", headers=stack.headers)).json()
        return bool(view["connectionState"] == "qr")

    await wait_until(showing_qr, timeout=30, what="provider shows a QR")
    scanned = await stack.client.post(f"/api/instances/{instance['id']}/sandbox/scan", headers=stack.headers)
    if scanned.status_code != 200:
        raise RuntimeError(f"pairing failed: {scanned.status_code} {scanned.text}")
    return int(instance["id"])


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("WRK_AUTH")
if auth ~= nil and auth ~= "" then wrk.headers["Authorization"] = auth end
done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("WRK_RESULT %d %d %f %f %f\\n", summary.requests, errors, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


async def wrk_closed_loop(url: str, body: dict, headers: dict, connections: int, seconds: float, work: Path) -> dict:
    """Throughput measured by wrk (C, one thread): accepted (2xx and 3xx) requests per second over
    `seconds` (whole seconds, at least 1)."""
    script = work / "send.lua"
    script.write_text(WRK_SCRIPT)
    process = await asyncio.create_subprocess_exec(
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, int(seconds))}s",
        "-s",
        str(script),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"WRK_BODY": json.dumps(body), "WRK_AUTH": headers.get("Authorization", "")},
    )
    output, _ = await asyncio.wait_for(process.communicate(), seconds + 30)
    line = next(x for x in output.decode().splitlines() if x.startswith("WRK_RESULT"))
    requests, errors, duration, p50, p99 = line.split()[1:]
    accepted = int(requests) - int(errors)
    return {
        "tool": "wrk",
        "connections": connections,
        "sends": int(requests),
        "accepted": accepted,
        "seconds": round(float(duration), 2),
        "per_second": round(accepted / float(duration), 1),
        "p50_ms": round(float(p50), 1),
        "p99_ms": round(float(p99), 1),
    }


async def pipeline_idle(nats_url: str) -> None:
    """Wait (up to IDLE_DEADLINE_SECONDS) until the events a burst of sends caused are all handled.

    A closed loop leaves work behind its last answer (the providers' outboxes, the routing between
    them, the API's event consumer); a latency run started on top of it would measure that backlog.
    Idle: nothing new on `WGS_EVENTS` for IDLE_QUIET_SECONDS and nothing pending for the API.
    """
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        last_seq, quiet_since = -1, time.monotonic()

        async def idle() -> bool:
            nonlocal last_seq, quiet_since
            seq = (await js.stream_info(streams.EVENTS.name)).state.last_seq
            consumer = await js.consumer_info(streams.EVENTS.name, EVENTS_CONSUMER)
            if seq != last_seq or consumer.num_pending or consumer.num_ack_pending:
                last_seq, quiet_since = seq, time.monotonic()
            return time.monotonic() - quiet_since >= IDLE_QUIET_SECONDS

        await wait_until(idle, timeout=IDLE_DEADLINE_SECONDS, interval=0.1, what="event pipeline idle")
    finally:
        await nc.close()


async def write_transactions(dsn: str) -> int:
    """How many transactions that wrote something PostgreSQL has started: its next transaction id.

    Exact at once, unlike the statistics views, which a backend updates up to 10 s after its last
    transaction. A read-only transaction takes no id and is not counted.
    """
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"))
    finally:
        await connection.close()


async def measure(
    url: str,
    body: dict,
    headers: dict,
    flights: list[int],
    rate: float,
    seconds: float,
    work: Path,
    settle: Callable[[], Awaitable[None]] | None = None,
    transactions: Callable[[], Awaitable[int]] | None = None,
    curve: list[float] | None = None,
) -> dict:
    """Throughput at each number of sends in flight (wrk), then latency at a fixed rate, at half the
    first throughput, and nearly idle; with `curve`, latency at each of those rates too.

    `settle` runs before each measurement: it waits until the work left by the previous one is done.
    `transactions` counts PostgreSQL's write transactions, read around the fixed-rate run; the CPU
    per send at a fixed rate counts its backlog too (the reading ends once `settle` returned).
    """
    throughputs = [
        await closed_loop_throughput(url, body, headers, flight, seconds, work, settle) for flight in flights
    ]
    idle = await open_loop(url, body, headers, IDLE_RATE, seconds)
    sustainable = await open_loop(url, body, headers, max(1.0, throughputs[0]["sustained_per_second"] / 2), seconds)
    at_rates = [await fixed_rate_latency(url, body, headers, offered, seconds, settle) for offered in curve or []]
    latency = await fixed_rate_latency(url, body, headers, rate, seconds, settle, transactions)  # last: it may overload
    return {
        "throughput": throughputs,
        "latency": latency,
        "latency_at_half_capacity": sustainable,
        "latency_nearly_idle": idle,
        **({"latency_curve": at_rates} if curve else {}),
    }


async def fixed_rate_latency(
    url: str,
    body: dict,
    headers: dict,
    rate: float,
    seconds: float,
    settle: Callable[[], Awaitable[None]] | None = None,
    transactions: Callable[[], Awaitable[int]] | None = None,
) -> dict:
    """Latency at `rate` (open loop), with the machine's busy and steal shares meanwhile and the CPU
    per send (its backlog included), and PostgreSQL's write transactions per send when `transactions`."""
    if settle is not None:
        await settle()
    before = await transactions() if transactions is not None else 0
    cpu_before = cpu_reading()
    async with MachineSampler() as machine:
        latency = await open_loop(url, body, headers, rate, seconds)
    latency["machine"] = machine.summary()
    if settle is not None:
        await settle()
    latency["cpu_ms_per_send"] = cpu_ms_per_unit(cpu_before, cpu_reading(), latency["completed"])
    if transactions is not None:
        latency["pg_write_transactions_per_send"] = round(
            (await transactions() - before) / max(1, latency["completed"]), 2
        )
    return latency


async def closed_loop_throughput(
    url: str,
    body: dict,
    headers: dict,
    flight: int,
    seconds: float,
    work: Path,
    settle: Callable[[], Awaitable[None]] | None,
) -> dict:
    """Accepted and sustained sends per second with `flight` in flight, and the CPU each cost."""
    await wrk_closed_loop(url, body, headers, flight, WARM_UP_SECONDS, work)
    if settle is not None:
        await settle()
    before = cpu_reading()
    throughput = await wrk_closed_loop(url, body, headers, flight, seconds, work)
    # Sustained: the work a send causes after its answer (events, receipts) counts too, so the
    # rate is over the run plus the time the pipeline then needs to become idle.
    backlog = 0.0
    if settle is not None:
        started = time.perf_counter()
        await settle()
        backlog = max(0.0, time.perf_counter() - started - IDLE_QUIET_SECONDS)
    throughput["in_flight"] = flight
    throughput["backlog_seconds"] = round(backlog, 2)
    throughput["sustained_per_second"] = round(throughput["accepted"] / (throughput["seconds"] + backlog), 1)
    throughput["cpu_ms_per_send"] = cpu_ms_per_unit(before, cpu_reading(), throughput["accepted"])
    return throughput


async def run(flights: list[int], rate: float, seconds: float, out: Path | None, curve: list[float]) -> dict:
    """Start the stack and the baseline, measure both, stop everything."""
    unlimited = {"sendRatePerSecond": 1_000_000, "sendBurst": 1_000_000}
    async with gateway_stack(tenant=unlimited) as stack:
        a = await paired_sandbox(stack, "491700000001")
        await paired_sandbox(stack, "491700000002")
        port = free_port()
        baseline = ManagedProcess(
            "echo-baseline",
            [sys.executable, "-m", "bench.echo_baseline"],
            env={**stack.env, "WGS_API_PORT": str(port), "PYTHONPATH": str(ROOT)},
            log_path=stack.work / "logs" / "echo-baseline.log",
        )
        baseline.start()
        try:

            async def baseline_up() -> bool:
                async with httpx.AsyncClient() as probe:
                    try:
                        return (await probe.post(f"http://127.0.0.1:{port}/send", content=b"x")).status_code == 200
                    except httpx.TransportError:
                        return False

            await wait_until(baseline_up, timeout=30, what="baseline server")
            body = {"to": "491700000002", "text": "bench"}
            base = await measure(
                f"http://127.0.0.1:{port}/send", body, {}, flights, rate, seconds, stack.work, curve=curve
            )
            gate = await measure(
                f"{stack.api.url}/api/instances/{a}/send",
                body,
                stack.headers,
                flights,
                rate,
                seconds,
                stack.work,
                settle=lambda: pipeline_idle(stack.nats.url),
                transactions=lambda: write_transactions(stack.env["DATABASE_URL"]),
                curve=curve,
            )
        finally:
            await baseline.stop()
    result = {
        "baseline_litestar_nats_echo": base,
        "gateway_send": gate,
        "targets": {"accepted_per_second": TARGET_THROUGHPUT, "p99_ms_at_offered_rate": TARGET_P99_MS},
        "machine": "2 cores; load generator, API, agent, provider, NATS and PostgreSQL all on it",
    }
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    return result


def print_table(result: dict) -> None:
    """The human-readable summary."""
    rows = (
        ("baseline (Litestar + NATS echo)", "baseline_litestar_nats_echo"),
        ("gateway send", "gateway_send"),
    )
    print(f"{'server':<32}{'in flight':>10}{'accepted/s':>12}{'sustained/s':>13}{'backlog s':>11}")
    for name, key in rows:
        for throughput in result[key]["throughput"]:
            print(
                f"{name:<32}{throughput['in_flight']:>10}{throughput['per_second']:>12}"
                f"{throughput['sustained_per_second']:>13}{throughput['backlog_seconds']:>11}"
            )
    rate = result["gateway_send"]["latency"]["offered_per_second"]
    print(
        f"{'server':<32}{f'p50 ms @ {rate:g}/s':>16}{'p95 ms':>9}{'p99 ms':>9}{'failed':>8}{'steal %':>9}"
        f"{'worst 1 s':>11}{'p99 @ half':>12}{'p50 idle':>10}"
    )
    for name, key in rows:
        row = result[key]
        latency, machine = row["latency"], row["latency"]["machine"]
        print(
            f"{name:<32}{latency['p50_ms']!s:>16}{latency['p95_ms']!s:>9}{latency['p99_ms']!s:>9}{latency['failed']:>8}"
            f"{machine['steal_percent']:>9}{machine['worst_second_steal_percent']:>11}"
            f"{row['latency_at_half_capacity']['p99_ms']!s:>12}{row['latency_nearly_idle']['p50_ms']!s:>10}"
        )
    if "latency_curve" in result["gateway_send"]:
        print(
            f"{'server':<32}{'offered/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'failed':>8}{'busy %':>8}"
            f"{'steal %':>9}"
        )
        for name, key in rows:
            for point in result[key]["latency_curve"]:
                print(
                    f"{name:<32}{point['offered_per_second']:>10g}{point['p50_ms']!s:>9}{point['p95_ms']!s:>9}"
                    f"{point['p99_ms']!s:>9}"
                    f"{point['failed']:>8}{point['machine']['busy_percent']:>8}{point['machine']['steal_percent']:>9}"
                )
    for name, key in rows:
        for run in ("latency", "latency_at_half_capacity", "latency_nearly_idle"):
            if result[key][run]["failures"]:
                print(f"failed, {name}, {run.replace('_', ' ')}: {result[key][run]['failures']}")
    print("steal: the share of the machine's time the hypervisor gave to other guests during the fixed-rate run")
    print(
        f"targets: >= {TARGET_THROUGHPUT:.0f} accepted/s (sustained); p99 <= {TARGET_P99_MS:.0f} ms at the offered rate"
    )
    transactions = result["gateway_send"]["latency"].get("pg_write_transactions_per_send")
    if transactions is not None:
        print(f"gateway PostgreSQL write transactions per send at {rate:g}/s (backlog included): {transactions}")
    spending = [(f"{t['in_flight']} in flight", t["cpu_ms_per_send"]) for t in result["gateway_send"]["throughput"]]
    spending.append((f"{rate:g}/s (backlog included)", result["gateway_send"]["latency"]["cpu_ms_per_send"]))
    for when, spent in spending:
        print(f"gateway CPU ms per accepted send, {when}: " + ", ".join(f"{name} {ms}" for name, ms in spent.items()))


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--in-flight", default="32,64", help="sends in flight of each throughput run, comma-separated (default 32,64)"
    )
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--curve",
        default="",
        help="also measure latency at each of these offered rates, comma-separated (e.g. 300,400,500; at most 8)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "send.json")
    args = parser.parse_args()
    try:
        flights = [int(part) for part in args.in_flight.split(",")]
    except ValueError:
        parser.error("--in-flight: comma-separated whole numbers")
    try:
        curve = [float(part) for part in args.curve.split(",")] if args.curve else []
    except ValueError:
        parser.error("--curve: comma-separated rates")
    if len(curve) > 8 or not all(0 < offered <= 5000 for offered in curve):
        parser.error("--curve: at most 8 rates of 0-5000")
    if not (
        1 <= len(flights) <= 4
        and all(1 <= flight <= 512 for flight in flights)
        and 0 < args.rate <= 5000
        and 1 <= args.seconds <= 60
    ):
        parser.error("bounds: in-flight 1-4 values of 1-512, rate 0-5000, seconds 1-60")
    if shutil.which("wrk") is None:
        parser.exit(2, WRK_MISSING + "\n")
    result = asyncio.run(cancel_on_sigterm(run(flights, args.rate, args.seconds, args.out, curve)))
    print(json.dumps(result, indent=2))
    print_table(result)


if __name__ == "__main__":
    main()
