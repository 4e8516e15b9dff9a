"""The fan-out consumer: instance events from WGS_EVENTS, in batches, turned into delivery rows.

A `wgs_kit.batched.BatchedPullConsumer` on the durable consumer `webhooks-fanout` (every
instance event). Each fetch asks for up to `FETCH_BATCH` events and returns as soon as one is
there, with whatever else is already waiting, so a lone event is not held back to fill a batch
and a backlog goes 100 at a time.

A batch is fanned out by one multi-row INSERT in stream order (an endpoint's queue is its
deliveries in creation order), and only then are its messages acknowledged: on any failure
nothing has been acknowledged, and the batch is handled again one message at a time, in order,
so that one poison message holds back only itself. A message that fails on its own is
redelivered with backoff, and dead-lettered on `wgs.dlq.webhooks-fanout` at its last delivery
(the rules of every durable consumer here, `wgs_kit.batched`).
"""

import logging
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.js.client import JetStreamContext
from wgs_contracts import streams, subjects
from wgs_contracts.instance_events import InstanceEvent
from wgs_contracts.state import SnapshotFallback
from wgs_contracts.webhook_envelope import envelope_body, event_type
from wgs_db.engine import DATABASE_OUTAGES
from wgs_kit.batched import BatchedPullConsumer
from wgs_kit.messaging import decode

from wgs_webhooks import store

log = logging.getLogger(__name__)
FANOUT_CONSUMER = "webhooks-fanout"
FANOUT_MAX_DELIVER = 8
# Fan-out is a couple of statements per batch; an event held by a process that died is fanned out again this soon.
FANOUT_ACK_WAIT_SECONDS = 10.0
FETCH_BATCH = 100


def delivery_event(msg: Msg) -> store.Event | None:
    """What fan-out stores of one stream message; None for events that are not tenants' (operators')."""
    event: InstanceEvent = decode(msg.data, InstanceEvent)  # type: ignore[arg-type]
    if isinstance(event, SnapshotFallback):
        return None
    return store.Event(
        event_id=event.event_id,
        event_type=event_type(event),
        tenant_id=event.tenant_id,
        instance_id=event.instance_id,
        at=event.at,
        payload=envelope_body(event).decode(),
    )


class FanOut:
    """Consumes WGS_EVENTS in batches and calls `created()` whenever new deliveries were written."""

    def __init__(self, js: JetStreamContext, created: Callable[[], None]) -> None:
        self.created = created
        self.consumer = BatchedPullConsumer(
            js,
            self.fan_out,
            stream=streams.EVENTS,
            durable=FANOUT_CONSUMER,
            filter_subjects=[subjects.ALL_INSTANCE_EVENTS],
            max_deliver=FANOUT_MAX_DELIVER,
            ack_wait_seconds=FANOUT_ACK_WAIT_SECONDS,
            fetch_batch=FETCH_BATCH,
            outages=DATABASE_OUTAGES,  # a PostgreSQL outage holds the events: it never dead-letters them
        )

    async def start(self) -> None:
        """Bind to (or create) the durable consumer and start consuming."""
        await self.consumer.start()

    async def stop(self) -> None:
        """Stop fetching; let a batch being fanned out finish (bounded), then stop."""
        await self.consumer.stop()

    async def fan_out(self, msgs: list[Msg]) -> None:
        """Fan a batch (or, after a failed batch, one message) out in one INSERT; acked by the consumer after."""
        events = [e for e in map(delivery_event, msgs) if e is not None]
        if await store.fan_out(events):
            self.created()
