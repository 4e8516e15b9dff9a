"""A service process that holds its connections and waits (the state service, until its
issue gives it work)."""

import logging

from wgs_db.engine import close_database, open_database

from wgs_kit.lifecycle import wait_for_shutdown
from wgs_kit.messaging import make_broker
from wgs_kit.service_settings import DatabaseAndNats

log = logging.getLogger(__name__)


async def run_idle_service(name: str, settings: DatabaseAndNats) -> None:
    """Connect to PostgreSQL and NATS, then wait for SIGTERM."""
    await open_database(settings.database_url, max_size=2)
    broker = make_broker(settings.nats_url, name)
    await broker.start()
    log.info("%s up: connected, no work assigned to this service yet", name)
    try:
        await wait_for_shutdown()
    finally:
        await broker.stop()
        await close_database()
