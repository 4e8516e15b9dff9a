"""Wiring of one webhooks process: the fan-out consumer and the delivery dispatcher."""

import asyncio
import contextlib
import logging

from wgs_db.engine import close_database, open_database
from wgs_kit.lifecycle import cancel_all, freeze_startup_heap, wait_for_shutdown
from wgs_kit.messaging import connect_nats

from wgs_webhooks.config import Settings
from wgs_webhooks.dispatcher import Dispatcher
from wgs_webhooks.fanout import FanOut
from wgs_webhooks.sender import Sender

log = logging.getLogger(__name__)
NATS_DRAIN_SECONDS = 5.0


async def run(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT."""
    # Claims and attempts may be lost to a crash of PostgreSQL (sent again); fan-out is flushed (store).
    await open_database(settings.database_url, max_size=min(settings.concurrency, 16) + 2, wait_for_flush=False)
    nc = await connect_nats(settings.nats_url, "wgs-webhooks")
    sender = Sender(
        timeout_seconds=settings.timeout_seconds,
        allow_private=settings.allow_private,
        max_connections=settings.concurrency,
    )
    dispatcher = Dispatcher(settings, sender)
    # Fan-out only writes rows (never waits for HTTP) and wakes the dispatcher when it wrote some.
    fan_out = FanOut(nc.jetstream(), dispatcher.wake)
    await fan_out.start()
    dispatching = asyncio.create_task(dispatcher.run())
    freeze_startup_heap()
    log.info(
        "webhooks up: concurrency %d (%d per tenant), timeout %gs, schedule %s, private addresses %s",
        settings.concurrency,
        settings.tenant_concurrency,
        settings.timeout_seconds,
        ",".join(f"{d:g}" for d in settings.schedule),
        "allowed" if settings.allow_private else "refused",
    )
    try:
        await wait_for_shutdown()
    finally:
        await fan_out.stop()
        with contextlib.suppress(Exception):  # flushes the last acks; bounded if NATS is gone
            await asyncio.wait_for(nc.drain(), NATS_DRAIN_SECONDS)
        if not nc.is_closed:
            await nc.close()
        await cancel_all([dispatching])
        await dispatcher.drain()
        await sender.close()
        await close_database()
