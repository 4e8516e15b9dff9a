"""Example internal subscriber: follow every instance event durably from JetStream.

    NATS_URL=nats://127.0.0.1:4222 python docs/examples/subscriber.py [--seconds 30]

Creates (or resumes) the durable pull consumer `example-subscriber` on stream
`WGS_EVENTS`, prints each event and acks it. Deduplicate by `event_id`: the
gateway delivers at least once. Stops after `--seconds`.
"""

import argparse
import asyncio
import json
import os
import time

import nats
from nats.errors import TimeoutError as NatsTimeoutError


async def follow(seconds: float) -> None:
    """Print events for `seconds`, acking each one."""
    nc = await nats.connect(os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    js = nc.jetstream()
    subscription = await js.pull_subscribe("wgs.evt.instance.>", durable="example-subscriber", stream="WGS_EVENTS")
    seen: set[str] = set()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                messages = await subscription.fetch(32, timeout=1)
            except (NatsTimeoutError, TimeoutError):  # nats-py raises either when nothing came in time
                continue
            for message in messages:
                event = json.loads(message.data)
                if event["event_id"] not in seen:
                    seen.add(event["event_id"])
                    print(message.subject, event["type"], json.dumps(event))
                await message.ack()
    finally:
        await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    asyncio.run(follow(parser.parse_args().seconds))
