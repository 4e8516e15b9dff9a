"""Wiring of one webhooks process: the fan-out consumer and the delivery dispatcher."""

import asyncio
import logging

from faststream.nats import NatsMessage
from wgs_contracts import streams, subjects
from wgs_contracts.instance_events import InstanceEvent, TenantEvent
from wgs_contracts.state import SnapshotFallback
from wgs_db.engine import close_database, open_database
from wgs_kit.lifecycle import cancel_all, wait_for_shutdown
from wgs_kit.messaging import decode, durable_subscriber, guarded_delivery, make_broker

from wgs_webhooks import store
from wgs_webhooks.config import Settings
from wgs_webhooks.dispatcher import Dispatcher
from wgs_webhooks.envelope import envelope_body, event_type
from wgs_webhooks.sender import Sender

log = logging.getLogger(__name__)
FANOUT_CONSUMER = "webhooks-fanout"
FANOUT_MAX_DELIVER = 8
# Fan-out is a couple of inserts; an event held by a process that died is fanned out again this soon.
FANOUT_ACK_WAIT_SECONDS = 10.0


async def fan_out(event: TenantEvent) -> int:
    """Turn one event into deliveries (one per matching endpoint, payload frozen now)."""
    return await store.fan_out(
        event_id=event.event_id,
        event_type=event_type(event),
        tenant_id=event.tenant_id,
        instance_id=event.instance_id,
        at=event.at,
        payload=envelope_body(event).decode(),
    )


async def run(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT."""
    await open_database(settings.database_url, max_size=min(settings.concurrency, 16) + 2)
    broker = make_broker(settings.nats_url, "wgs-webhooks")
    sender = Sender(
        timeout_seconds=settings.timeout_seconds,
        allow_private=settings.allow_private,
        max_connections=settings.concurrency,
    )
    dispatcher = Dispatcher(settings, sender)

    # One event at a time (batch of 1): deliveries are created in stream order, which is the order
    # an endpoint receives them in. Fan-out only writes rows; it never waits for HTTP.
    @durable_subscriber(
        broker,
        stream=streams.EVENTS,
        subject=subjects.ALL_INSTANCE_EVENTS,
        durable=FANOUT_CONSUMER,
        max_deliver=FANOUT_MAX_DELIVER,
        ack_wait_seconds=FANOUT_ACK_WAIT_SECONDS,
        batch_size=1,
    )
    async def on_event(body: bytes, msg: NatsMessage) -> None:
        async with guarded_delivery(broker, msg, consumer=FANOUT_CONSUMER, max_deliver=FANOUT_MAX_DELIVER):
            event: InstanceEvent = decode(body, InstanceEvent)  # type: ignore[arg-type]
            if isinstance(event, SnapshotFallback):
                return  # an operator's event, not a tenant's webhook
            if await fan_out(event):
                dispatcher.wake()

    await broker.start()
    dispatching = asyncio.create_task(dispatcher.run())
    log.info(
        "webhooks up: concurrency %d, timeout %gs, schedule %s, private addresses %s",
        settings.concurrency,
        settings.timeout_seconds,
        ",".join(f"{d:g}" for d in settings.schedule),
        "allowed" if settings.allow_private else "refused",
    )
    try:
        await wait_for_shutdown()
    finally:
        await broker.stop()
        await cancel_all([dispatching])
        await dispatcher.drain()
        await sender.close()
        await close_database()
