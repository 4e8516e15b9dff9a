"""Benchmark: CPU the API process spends on its durable consumer of instance events.

Starts NATS, PostgreSQL, the migrations and one API process in a temporary folder (no other
service), publishes N `message` and N `message.status` events on JetStream the way node agents do
(64 publishes in flight), waits until the API's consumer `api-instance-events` has nothing pending
or unacknowledged, and reads the API process's user + system CPU time (/proc/<pid>/stat) before and
after. Reports CPU ms per published event (and per event the API applies), with the process's idle
CPU over the same wall time measured first, for reference.

Usage: `python -m bench.api_events [--events 3000]` (N of each kind; bounded).
"""

import argparse
import asyncio
import json
import os
import time
import uuid
from pathlib import Path

import nats
from nats.js.client import JetStreamContext
from wgs_contracts import streams, subjects
from wgs_contracts.instance_events import (
    DeliveryStatus,
    InstanceEvent,
    MessageContent,
    MessageReceived,
    MessageStatusChanged,
    MessageType,
)
from wgs_contracts.messages import utcnow
from wgs_kit.messaging import encode
from wgs_kit.waiting import wait_until

from bench.stack import ROOT, cancel_on_sigterm, control_plane

CONSUMER = "api-instance-events"
PUBLISHES_IN_FLIGHT = 64
MAX_SECONDS = 300.0
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15 of stat)


def events(count: int, instance_id: int) -> list[tuple[str, InstanceEvent]]:
    """`count` inbound messages and `count` status changes of sent messages, interleaved."""
    result: list[tuple[str, InstanceEvent]] = []
    run = uuid.uuid4().hex[:8]
    for n in range(count):
        common = {"instance_id": instance_id, "tenant_id": 1, "generation": 1, "at": utcnow()}
        result.append(
            (
                subjects.instance_event(instance_id, "message"),
                MessageReceived(
                    event_id=f"{run}:m:{n}",
                    seq=2 * n,
                    message_id=uuid.uuid4().hex,
                    sender="491700000009",
                    recipient="491700000001",
                    content=MessageContent(type=MessageType.TEXT, text="bench"),
                    **common,  # type: ignore[arg-type]
                ),
            )
        )
        result.append(
            (
                subjects.instance_event(instance_id, "message_status"),
                MessageStatusChanged(
                    event_id=f"{run}:s:{n}",
                    seq=2 * n + 1,
                    message_id=uuid.uuid4().hex,
                    status=DeliveryStatus.DELIVERED,
                    **common,  # type: ignore[arg-type]
                ),
            )
        )
    return result


async def settled(js: JetStreamContext) -> bool:
    info = await js.consumer_info(streams.EVENTS.name, CONSUMER)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def run(count: int, out: Path | None) -> dict:
    async with control_plane() as stack:
        api = stack.api
        assert api.pid is not None
        nc = await nats.connect(stack.env["NATS_URL"])
        js = nc.jetstream()
        try:
            await wait_until(lambda: settled(js), 30, what="the API's consumer")
            batch = events(count, 1)
            idle_started, idle_cpu = time.perf_counter(), cpu_seconds(api.pid)
            await asyncio.sleep(2.0)
            idle_rate = (cpu_seconds(api.pid) - idle_cpu) / (time.perf_counter() - idle_started)

            in_flight = asyncio.Semaphore(PUBLISHES_IN_FLIGHT)

            async def publish(subject: str, event: InstanceEvent) -> None:
                async with in_flight:
                    await js.publish(subject, encode(event), headers={"Nats-Msg-Id": event.event_id})

            started, cpu_before = time.perf_counter(), cpu_seconds(api.pid)
            await asyncio.gather(*(publish(subject, event) for subject, event in batch))
            await wait_until(lambda: settled(js), MAX_SECONDS, interval=0.05, what="all events consumed")
            wall = time.perf_counter() - started
            cpu = cpu_seconds(api.pid) - cpu_before
        finally:
            await nc.close()
    published = len(batch)
    result = {
        "events_published": published,
        "events_applied_kinds": count,
        "wall_seconds": round(wall, 2),
        "api_cpu_seconds": round(cpu, 3),
        "api_idle_cpu_seconds_same_wall": round(idle_rate * wall, 3),
        "api_cpu_ms_per_published_event": round(cpu * 1000 / published, 3),
        "api_cpu_ms_per_applied_event": round(cpu * 1000 / count, 3),
    }
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000, help="events of each kind (message, message.status)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "api_events.json")
    args = parser.parse_args()
    if not 1 <= args.events <= 50_000:
        parser.error("bounds: events 1-50000")
    result = asyncio.run(cancel_on_sigterm(run(args.events, args.out)))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
