"""Benchmark: provider event → signed webhook delivery at a local receiver.

Starts what webhooks need (NATS, PostgreSQL, the migrations, the API to create the tenant, instances
and endpoints, and the webhooks service; no Docker engine, scheduler or node agent: no instance runs)
and an HTTP receiver on 127.0.0.1; publishes `message` events on JetStream the way node agents do,
and measures

- throughput: N events published at once (up to 64 publishes in flight) over E instances (one
  endpoint each; order is kept per endpoint, so one endpoint alone is bounded by one round trip
  per event), events/s until the receiver got all, and the CPU per event of each component
  (the webhooks service, PostgreSQL, NATS; "load generator" is this process: publisher and receiver);
- latency at a fixed rate (default 500 events/s for D seconds): publish → receipt, p50/p99;
- baseline in the same run: the same receiver fed directly by signed POSTs from this
  process (the cost of the HTTP delivery alone), throughput and latency.

Targets (issue): ≥ 1,000 events/s, p99 ≤ 100 ms at 500 events/s. Bounded in count
and time. Usage: `python -m bench.webhooks [--events 2000] [--rate 500] [--seconds 5] [--endpoints 20]`.
"""

import argparse
import asyncio
import json
import statistics
import time
import uuid
from pathlib import Path

import aiohttp
import nats
from wgs_contracts import subjects
from wgs_contracts.instance_events import MessageContent, MessageReceived, MessageType
from wgs_contracts.messages import utcnow
from wgs_devstack.processes import free_port
from wgs_kit.messaging import encode
from wgs_kit.waiting import wait_until

from bench.cpu import cpu_ms_per_unit, cpu_reading
from bench.stack import ROOT, cancel_on_sigterm, control_plane, percentile

TARGET_PER_SECOND = 1000.0
TARGET_P99_MS = 100.0
MAX_SECONDS = 120.0
PUBLISHES_IN_FLIGHT = 64


ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


class ReceiverConnection(asyncio.Protocol):
    """One keep-alive connection of the receiver: HTTP/1.1 requests with a Content-Length, each
    answered `200 ok` once its body is in, its `webhook-id` noted with the time it arrived first.

    A bare protocol rather than a web framework: the receiver shares the machine's 2 cores with
    what it measures, and aiohttp's server cost several times the CPU per request."""

    def __init__(self, arrived: dict[str, float]) -> None:
        self.arrived = arrived
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            headers = {}
            for line in bytes(self.buffer[:end]).decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            whole = end + 4 + int(headers.get("content-length", "0"))
            if len(self.buffer) < whole:
                return
            del self.buffer[:whole]
            if "webhook-id" in headers:
                self.arrived.setdefault(headers["webhook-id"], time.time())
            assert self.transport is not None
            self.transport.write(ANSWER)


class Receiver:
    """Counts deliveries by webhook-id and the time each first arrived."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrived: dict[str, float] = {}
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: ReceiverConnection(self.arrived), "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def message_event(instance_id: int, tenant_id: int, seq: int) -> MessageReceived:
    """A provider `message` event."""
    return MessageReceived(
        event_id=f"{instance_id}:1:{seq}",
        instance_id=instance_id,
        tenant_id=tenant_id,
        generation=1,
        seq=seq,
        at=utcnow(),
        message_id=uuid.uuid4().hex,
        sender="491700000009",
        recipient="491700000001",
        content=MessageContent(type=MessageType.TEXT, text="bench"),
    )


async def run_gateway(events: int, rate: float, seconds: float, endpoints: int) -> dict:
    """Throughput and latency through the webhooks service, events spread over `endpoints` instances."""
    receiver = Receiver()
    await receiver.start()
    try:
        async with control_plane(settings={"WGS_WEBHOOKS_ALLOW_PRIVATE": "1"}) as stack:
            stack.start_service("webhooks", "wgs_webhooks")
            client, headers = stack.client, stack.headers
            instances = []
            for index in range(endpoints):
                body = {"phone": f"4917000{index:05d}", "provider": "waba"}
                instance = (await client.post("/api/instances?wait=0", json=body, headers=headers)).json()
                created = await client.post(
                    f"/api/instances/{instance['id']}/webhooks",
                    json={"url": f"http://127.0.0.1:{receiver.port}/hook", "events": ["message"]},
                    headers=headers,
                )
                if created.status_code != 201:
                    raise RuntimeError(f"endpoint: {created.status_code} {created.text}")
                instances.append(instance)
            nc = await nats.connect(stack.env["NATS_URL"])
            js = nc.jetstream()
            sent_at: dict[str, float] = {}
            seq = 0

            async def publish() -> None:
                nonlocal seq
                seq += 1
                instance = instances[seq % len(instances)]
                event = message_event(instance["id"], instance["tenantId"], seq)
                sent_at[event.event_id] = time.time()
                await js.publish(
                    subjects.instance_event(instance["id"], "message"),
                    encode(event),
                    headers={"Nats-Msg-Id": event.event_id},
                )

            in_flight = asyncio.Semaphore(PUBLISHES_IN_FLIGHT)

            async def publish_bounded() -> None:
                async with in_flight:
                    await publish()

            try:
                await publish()  # warm-up: the service is consuming
                await wait_until(lambda: _count(receiver, 1), timeout=60, what="first delivery")
                cpu_before = cpu_reading()
                started = time.perf_counter()
                await asyncio.gather(*(publish_bounded() for _ in range(events)))
                await wait_until(
                    lambda: _count(receiver, events + 1), timeout=MAX_SECONDS, interval=0.05, what="all deliveries"
                )
                throughput = events / (time.perf_counter() - started)
                cpu_per_event = cpu_ms_per_unit(cpu_before, cpu_reading(), events)
                first_latency_id = seq + 1
                start = time.perf_counter()
                for index in range(int(rate * seconds)):
                    delay = start + index / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await publish()
                await wait_until(lambda: _count(receiver, seq), timeout=MAX_SECONDS, interval=0.05, what="deliveries")
            finally:
                await nc.close()
        latencies = [
            receiver.arrived[event_id] - sent_at[event_id]
            for event_id in sent_at
            if int(event_id.rsplit(":", 1)[1]) >= first_latency_id and event_id in receiver.arrived
        ]
        return _result(throughput, latencies, rate) | {"cpu_ms_per_event": cpu_per_event}
    finally:
        await receiver.stop()


async def _count(receiver: Receiver, wanted: int) -> bool:
    return len(receiver.arrived) >= wanted


def _result(throughput: float, latencies: list[float], rate: float) -> dict:
    return {
        "events_per_second": round(throughput, 1),
        "offered_per_second": rate,
        "latency_samples": len(latencies),
        "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1) if latencies else None,
    }


async def run_baseline(events: int, rate: float, seconds: float) -> dict:
    """The receiver fed directly with POSTs from this process (no gateway)."""
    receiver = Receiver()
    await receiver.start()
    url = f"http://127.0.0.1:{receiver.port}/hook"
    try:
        async with aiohttp.ClientSession() as session:

            async def post(event_id: str) -> float:
                started = time.time()
                headers = {"webhook-id": event_id, "content-type": "application/json"}
                async with session.post(url, data=json.dumps({"id": event_id}), headers=headers) as response:
                    await response.read()
                return receiver.arrived[event_id] - started

            started = time.perf_counter()
            await asyncio.gather(*(post(f"t{i}") for i in range(events)))
            throughput = events / (time.perf_counter() - started)
            tasks = []
            start = time.perf_counter()
            for index in range(int(rate * seconds)):
                delay = start + index / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(post(f"l{index}")))
            latencies = list(await asyncio.wait_for(asyncio.gather(*tasks), MAX_SECONDS))
        return _result(throughput, latencies, rate)
    finally:
        await receiver.stop()


async def run(events: int, rate: float, seconds: float, endpoints: int, out: Path | None) -> dict:
    """Baseline, then the gateway."""
    result = {
        "endpoints": endpoints,
        "baseline_direct_post": await run_baseline(events, rate, seconds),
        "gateway_webhooks": await run_gateway(events, rate, seconds, endpoints),
        "targets": {"events_per_second": TARGET_PER_SECOND, "p99_ms_at_offered_rate": TARGET_P99_MS},
    }
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--endpoints", type=int, default=20, help="instances, one endpoint each (order is per endpoint)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "webhooks.json")
    args = parser.parse_args()
    if not (
        1 <= args.events <= 50_000 and 0 < args.rate <= 5000 and 0 < args.seconds <= 60 and 1 <= args.endpoints <= 200
    ):
        parser.error("bounds: events 1-50000, rate 0-5000, seconds 0-60, endpoints 1-200")
    result = asyncio.run(cancel_on_sigterm(run(args.events, args.rate, args.seconds, args.endpoints, args.out)))
    print(json.dumps(result, indent=2))
    print(f"{'path':<28}{'events/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, key in (("baseline direct POST", "baseline_direct_post"), ("gateway webhooks", "gateway_webhooks")):
        row = result[key]
        print(f"{name:<28}{row['events_per_second']:>10}{row['p50_ms']!s:>10}{row['p99_ms']!s:>10}")
    print(f"targets: >= {TARGET_PER_SECOND:.0f} events/s; p99 <= {TARGET_P99_MS:.0f} ms at the offered rate")
    spent = result["gateway_webhooks"]["cpu_ms_per_event"]
    print("gateway CPU ms per event, throughput run: " + ", ".join(f"{name} {ms}" for name, ms in spent.items()))


if __name__ == "__main__":
    main()
