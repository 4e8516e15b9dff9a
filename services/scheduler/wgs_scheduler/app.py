"""Wiring of one scheduler process: broker, leader election, consumers, pending retries."""

import asyncio
import logging

from faststream.nats import NatsMessage
from wgs_contracts import streams, subjects
from wgs_contracts.messages import (
    AssignmentsRequest,
    ControlCommand,
    NodeHeartbeat,
    SchedulerLeaderElected,
)
from wgs_db.engine import close_database, open_database
from wgs_kit.lifecycle import cancel_all, wait_for_shutdown
from wgs_kit.messaging import (
    decode,
    durable_subscriber,
    encode,
    guarded_delivery,
    make_broker,
    publish_core,
)

from wgs_scheduler.config import Settings
from wgs_scheduler.leader import LeaderElection
from wgs_scheduler.service import Scheduler

log = logging.getLogger(__name__)
COMMAND_CONSUMER = "scheduler-commands"
COMMAND_MAX_DELIVER = 8
QUEUE_GROUP = "scheduler"


async def run(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT."""
    await open_database(settings.database_url)
    broker = make_broker(settings.nats_url, "wgs-scheduler")
    scheduler = Scheduler(broker, settings)

    @broker.subscriber(subjects.ALL_NODE_HEARTBEATS, queue=QUEUE_GROUP)
    async def on_heartbeat(body: bytes) -> None:
        await scheduler.heartbeat(decode(body, NodeHeartbeat))

    @broker.subscriber(subjects.ALL_NODE_ASSIGNMENTS, queue=QUEUE_GROUP)
    async def on_assignments(body: bytes) -> bytes:
        request = decode(body, AssignmentsRequest)
        return encode(await scheduler.assignments(request.node))

    commands = durable_subscriber(
        broker,
        stream=streams.COMMANDS,
        subject=subjects.ALL_COMMANDS,
        durable=COMMAND_CONSUMER,
        max_deliver=COMMAND_MAX_DELIVER,
    )

    @commands
    async def on_command(body: bytes, msg: NatsMessage) -> None:
        async with guarded_delivery(broker, msg, consumer=COMMAND_CONSUMER, max_deliver=COMMAND_MAX_DELIVER):
            await scheduler.handle(decode(body, ControlCommand))  # type: ignore[arg-type]

    retry_task: asyncio.Task[None] | None = None

    async def retry_pending_forever() -> None:
        while True:
            await asyncio.sleep(settings.retry_pending_seconds)
            try:
                await scheduler.retry_pending()
            except Exception:
                log.exception("retrying pending instances failed")

    async def on_elected() -> None:
        nonlocal retry_task
        await commands.start()
        retry_task = asyncio.create_task(retry_pending_forever())
        await publish_core(broker, subjects.SCHEDULER_LEADER, SchedulerLeaderElected(holder=settings.holder))

    async def on_deposed() -> None:
        if retry_task is not None:
            retry_task.cancel()
        await commands.stop()

    election = LeaderElection(
        settings.database_url,
        settings.holder,
        poll_seconds=settings.leader_poll_seconds,
        on_elected=on_elected,
        on_deposed=on_deposed,
    )
    await broker.start()
    await commands.stop()  # consumes only while leader
    election_task = asyncio.create_task(election.run())
    log.info("scheduler %s up", settings.holder)
    await wait_for_shutdown()
    await cancel_all([election_task])
    await election.close()
    await broker.stop()
    await close_database()
