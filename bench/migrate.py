"""Benchmark: the service gap of a live migration, and the pause of a periodic snapshot.

Starts the whole gateway with two nodes (two Docker engines, two agents) and the
state service, creates one paired sandbox instance, gives it a 10 MB state folder
(random bytes: incompressible), then migrates it back and forth N times. For each
round it measures, on this process's clock:

- gap: from the `migrating` status event (the old container stops serving next) until
  the provider on the new node answers through the API again (QR endpoint: `409`
  already connected, which also proves the session moved);
- total: the `POST /migrate` request time.

Baseline in the same run, rounds interleaved: what moving the same container costs
with no gateway at all: `docker stop` + remove on engine 1, copy of the state folder
to engine 2's folder, `docker create` + `start` there, until its socket answers.
Then it collects the pause of periodic snapshots (pause → copy 10 MB → unpause)
from the agents' `SnapshotTaken` events. Prints JSON and a table; target: gap p50 ≤ 3 s.
Every loop is bounded; everything started is stopped by PID.
Usage: `python -m bench.migrate [-n 10] [--out FILE]`.
"""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import time
from pathlib import Path

import aiodocker
import msgspec
import nats
from wgs_contracts import subjects
from wgs_contracts.messages import InstanceSpec, InstanceStatus, InstanceStatusChanged, Provider, SnapshotTaken
from wgs_devstack.docker_engine import DockerEngine
from wgs_kit.waiting import wait_until
from wgs_node_agent.provider_client import ProviderClient
from wgs_node_agent.runtime.base import InstancePaths
from wgs_node_agent.runtime.docker import container_config, prepare_folders

from bench.stack import NODE, Stack, cancel_on_sigterm, gateway_stack, summary

SECOND_NODE = "bench-n2"
TARGET_GAP_MS = 3000.0
STATE_BYTES = 10 * 2**20
PAUSE_SAMPLES = 10
SNAPSHOT_SECONDS = "2"


async def paired_instance(stack: Stack) -> dict:
    """A sandbox instance, paired, with 10 MB of incompressible state."""
    body = {"phone": "491700012345", "provider": "sandbox", "resources": {"cpu": "0.2", "memory": "128m"}}
    instance = (await stack.client.post("/api/instances", json=body, headers=stack.headers)).json()
    path = f"/api/instances/{instance['id']}"

    async def connection(state: str) -> bool:
        return (await stack.client.get(path, headers=stack.headers)).json()["connectionState"] == state

    await wait_until(lambda: connection("qr"), timeout=30, what="QR")
    await stack.client.post(f"{path}/sandbox/scan", headers=stack.headers)
    await wait_until(lambda: connection("connected"), timeout=30, what="paired")
    state = stack.work / f"node-{NODE}" / "instances" / str(instance["id"]) / "state" / "bench"
    state.mkdir(parents=True, exist_ok=True)
    (state / "blob.bin").write_bytes(os.urandom(STATE_BYTES))
    return instance


async def provider_answers(stack: Stack, instance_id: int) -> bool:
    """True when the instance's provider answers through the API (a paired sandbox: 409 already connected)."""
    response = await stack.client.get(
        f"/api/instances/{instance_id}/qr", headers={**stack.headers, "Accept": "application/json"}
    )
    return response.status_code == 409


async def gateway_round(stack: Stack, nc: nats.NATS, instance_id: int, target: str) -> tuple[float, float]:
    """One migration; (gap s, request s)."""
    events = await nc.subscribe(subjects.instance_status(instance_id))
    try:
        started = time.perf_counter()
        migrating_at = None
        request = asyncio.create_task(
            stack.client.post(
                f"/api/instances/{instance_id}/migrate",
                json={"target_node": target},
                headers=stack.headers,
                timeout=120,
            )
        )
        while migrating_at is None:
            event = msgspec.json.decode((await events.next_msg(timeout=60)).data, type=InstanceStatusChanged)
            if event.status is InstanceStatus.MIGRATING:
                migrating_at = time.perf_counter()
        await wait_until(lambda: provider_answers(stack, instance_id), timeout=60, interval=0.02, what="serving")
        serving_at = time.perf_counter()
        response = await request
        if response.status_code != 200:
            raise RuntimeError(f"migration failed: {response.status_code} {response.text}")
        return serving_at - migrating_at, time.perf_counter() - started
    finally:
        await events.unsubscribe()


async def baseline_round(engines: tuple[DockerEngine, DockerEngine], work: Path, i: int) -> float:
    """Move a sandbox container with a 10 MB folder between the engines by hand; seconds until it answers."""
    spec = InstanceSpec(
        instance_id=900_000 + i,
        tenant_id=0,
        provider=Provider.SANDBOX,
        nano_cpus=200_000_000,
        memory_bytes=128 * 2**20,
        pids_limit=256,
    )
    source = InstancePaths.under(work / "baseline-a", spec.instance_id)
    target = InstancePaths.under(work / "baseline-b", spec.instance_id)
    async with aiodocker.Docker(url=engines[0].host) as first, aiodocker.Docker(url=engines[1].host) as second:
        prepare_folders(source)
        (source.state_dir / "blob.bin").write_bytes(os.urandom(STATE_BYTES))
        config = container_config(spec, 1, source, node="a", network_mode="none")
        old = await first.containers.create(config, name=f"bench-move-{i}")
        await old.start()
        await wait_until(lambda: answers(source), timeout=30, interval=0.02, what="baseline provider")
        started = time.perf_counter()
        await old.stop(t=10)
        await old.delete(force=True)
        shutil.copytree(source.state_dir, target.state_dir, symlinks=True)
        prepare_folders(target)
        new = await second.containers.create(
            container_config(spec, 1, target, node="b", network_mode="none"), name=f"bench-move-{i}"
        )
        await new.start()
        await wait_until(lambda: answers(target), timeout=30, interval=0.02, what="baseline provider moved")
        elapsed = time.perf_counter() - started
        await new.delete(force=True)
    shutil.rmtree(source.state_dir.parent, ignore_errors=True)
    shutil.rmtree(target.state_dir.parent, ignore_errors=True)
    return elapsed


async def answers(paths: InstancePaths) -> bool:
    """True when a provider answers `/health` on its socket."""
    client = ProviderClient(paths.socket)
    try:
        status, _, _ = await client.call("GET", "/health", timeout=1.0)
    except Exception:
        return False
    finally:
        await client.close()
    return status == 200


async def pauses(nc: nats.NATS, count: int) -> list[float]:
    """The pause (ms) of the next `count` periodic snapshots, from the agents' events (bounded: 60 s)."""
    events = await nc.subscribe(subjects.ALL_NODE_SNAPSHOTS)
    found: list[float] = []
    deadline = time.monotonic() + 60
    try:
        while len(found) < count and time.monotonic() < deadline:
            try:
                message = await events.next_msg(timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            event = msgspec.json.decode(message.data, type=SnapshotTaken)
            if event.reason == "periodic":
                found.append(event.pause_ms)
    finally:
        await events.unsubscribe()
    return found


async def run(rounds: int, out: Path | None) -> dict[str, object]:
    """Start the stack with two nodes, measure, stop everything."""
    settings = {"WGS_SNAPSHOT_SECONDS": SNAPSHOT_SECONDS}
    async with gateway_stack(settings=settings) as stack:
        second = await stack.add_node(SECOND_NODE)
        engines = (stack.engine, second)
        instance = await paired_instance(stack)
        nc = await nats.connect(stack.env["NATS_URL"])
        try:
            base, gaps, totals = [], [], []
            targets = [SECOND_NODE, NODE]
            await baseline_round(engines, stack.work, rounds)  # warm-up: page cache, connections
            for i in range(rounds):
                base.append(await baseline_round(engines, stack.work, i))
                gap, total = await gateway_round(stack, nc, instance["id"], targets[i % 2])
                gaps.append(gap)
                totals.append(total)
            paused = await pauses(nc, PAUSE_SAMPLES)
        finally:
            await nc.close()
    result: dict[str, object] = {
        "rounds": rounds,
        "state_bytes": STATE_BYTES,
        "gateway_gap": summary(gaps),
        "gateway_request": summary(totals),
        "baseline_move": summary(base),
        "gap_overhead_p50_ms": round((statistics.median(gaps) - statistics.median(base)) * 1000, 1),
        "snapshot_pause": {
            "samples": len(paused),
            "p50_ms": round(statistics.median(paused), 1) if paused else None,
            "max_ms": round(max(paused), 1) if paused else None,
        },
        "target_gap_p50_ms": TARGET_GAP_MS,
        "gap_target_met": statistics.median(gaps) * 1000 <= TARGET_GAP_MS,
    }
    text = json.dumps(result, indent=2)
    if out is not None:
        out.write_text(text + "\n")
    print(text)
    print_table(result)
    return result


def print_table(result: dict[str, object]) -> None:
    """The figures as a small table."""
    rows = [
        ("gateway gap (migrating → serving)", result["gateway_gap"]),
        ("gateway POST /migrate", result["gateway_request"]),
        ("baseline move by hand", result["baseline_move"]),
    ]
    print(f"\n{'measure':38} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}")
    for name, figures in rows:
        assert isinstance(figures, dict)
        print(f"{name:38} {figures['p50_ms']:>9} {figures['p95_ms']:>9} {figures['max_ms']:>9}")
    pause = result["snapshot_pause"]
    assert isinstance(pause, dict)
    print(f"periodic snapshot pause (10 MB state): p50 {pause['p50_ms']} ms, max {pause['max_ms']} ms")
    print(f"gap p50 target ≤ {TARGET_GAP_MS:.0f} ms: {'met' if result['gap_target_met'] else 'NOT met'}")


def main() -> None:
    """Console entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--rounds", type=int, default=10, help="migrations to measure (bounded: 1-50)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    asyncio.run(cancel_on_sigterm(run(max(1, min(args.rounds, 50)), args.out)))


if __name__ == "__main__":
    main()
