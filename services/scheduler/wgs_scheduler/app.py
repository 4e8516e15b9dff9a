"""Wiring of one scheduler process: broker, leader election, consumers, and the leader's periodic work
(pending retries, failover, the retention sweep)."""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from wgs_contracts import streams, subjects
from wgs_contracts.messages import (
    AssignmentsRequest,
    ControlCommand,
    DrainRequest,
    MigrateRequest,
    NodeHeartbeat,
    SchedulerLeaderElected,
)
from wgs_db import retention
from wgs_db.engine import DATABASE_OUTAGES, NATS_AND_DATABASE_OUTAGES, close_database, open_database
from wgs_kit.batched import BatchedPullConsumer
from wgs_kit.lifecycle import cancel_all, freeze_startup_heap, wait_for_shutdown
from wgs_kit.messaging import decode, encode, make_broker, publish_core
from wgs_kit.outages import log_failure
from wgs_kit.requests import RequestServer

from wgs_scheduler.config import Settings
from wgs_scheduler.leader import LeaderElection
from wgs_scheduler.moves import Mover
from wgs_scheduler.service import Scheduler

log = logging.getLogger(__name__)
COMMAND_CONSUMER = "scheduler-commands"
COMMAND_MAX_DELIVER = 8
COMMANDS_AT_ONCE = 16
QUEUE_GROUP = "scheduler"


async def run(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT."""
    await open_database(settings.database_url)
    broker = make_broker(settings.nats_url, "wgs-scheduler")
    scheduler = Scheduler(broker, settings)
    mover = Mover(scheduler)

    @broker.subscriber(subjects.ALL_NODE_HEARTBEATS, queue=QUEUE_GROUP)
    async def on_heartbeat(body: bytes) -> None:
        await scheduler.heartbeat(decode(body, NodeHeartbeat))

    @broker.subscriber(subjects.ALL_NODE_ASSIGNMENTS, queue=QUEUE_GROUP)
    async def on_assignments(body: bytes) -> bytes:
        request = decode(body, AssignmentsRequest)
        return encode(await scheduler.assignments(request.node))

    async def on_commands(msgs: list[Msg]) -> None:
        for msg in msgs:
            await scheduler.handle(decode(msg.data, ControlCommand))  # type: ignore[arg-type]

    await broker.start()
    commands = BatchedPullConsumer(  # started while this scheduler leads
        broker.connection.jetstream(),
        on_commands,
        stream=streams.COMMANDS,
        durable=COMMAND_CONSUMER,
        filter_subjects=[subjects.ALL_COMMANDS],
        max_deliver=COMMAND_MAX_DELIVER,
        fetch_batch=COMMANDS_AT_ONCE,
        concurrent=True,
        outages=DATABASE_OUTAGES,  # a PostgreSQL outage holds the commands: it never dead-letters them
    )
    leader_tasks: list[asyncio.Task[None]] = []
    leader_requests: list[RequestServer] = []

    async def every(
        seconds: float, work: Callable[[], Awaitable[None]], what: str, *, first_after: float | None = None
    ) -> None:
        await asyncio.sleep(seconds if first_after is None else first_after)
        while True:
            try:
                await work()
            except Exception as exc:
                log_failure(log, exc, what, outages=NATS_AND_DATABASE_OUTAGES)
            await asyncio.sleep(seconds)

    async def answer_migrate(body: bytes) -> bytes:
        request = decode(body, MigrateRequest)
        return encode(await mover.migrate(request.instance_id, request.target_node))

    async def answer_drain(body: bytes) -> bytes:
        return encode(await mover.drain(decode(body, DrainRequest).node))

    async def sweep_retention() -> None:
        swept = await retention.sweep()
        if swept.messages or swept.deliveries or swept.unclaimed_statuses or swept.expired_secrets:
            log.info(
                "retention: deleted %d messages, %d webhook deliveries and %d unclaimed message statuses;"
                " erased %d expired webhook secrets",
                swept.messages,
                swept.deliveries,
                swept.unclaimed_statuses,
                swept.expired_secrets,
            )

    async def on_elected() -> None:
        await commands.start()
        retry = every(settings.retry_pending_seconds, scheduler.retry_pending, "retrying pending instances")
        # A new leader first hears heartbeats for one timeout: nodes were not silent, this scheduler was.
        failover = every(
            settings.leader_poll_seconds,
            mover.fail_over,
            "failover",
            first_after=settings.node_timeout_seconds + settings.leader_poll_seconds,
        )
        sweeping = every(settings.retention_sweep_seconds, sweep_retention, "retention sweep", first_after=0.0)
        leader_tasks.extend([asyncio.create_task(task) for task in (retry, failover, sweeping)])
        requests = RequestServer(broker.connection)  # a migration waits for nodes: one task per request
        await requests.serve(subjects.SCHEDULER_MIGRATE, answer_migrate, queue=QUEUE_GROUP)
        await requests.serve(subjects.SCHEDULER_DRAIN, answer_drain, queue=QUEUE_GROUP)
        leader_requests.append(requests)
        await publish_core(broker, subjects.SCHEDULER_LEADER, SchedulerLeaderElected(holder=settings.holder))

    async def on_deposed() -> None:
        for requests in leader_requests:
            await requests.close()
        leader_requests.clear()
        await cancel_all(leader_tasks)
        leader_tasks.clear()
        await commands.stop()

    election = LeaderElection(
        settings.database_url,
        settings.holder,
        poll_seconds=settings.leader_poll_seconds,
        on_elected=on_elected,
        on_deposed=on_deposed,
    )
    election_task = asyncio.create_task(election.run())
    freeze_startup_heap()
    log.info("scheduler %s up", settings.holder)
    await wait_for_shutdown()
    await cancel_all([election_task])
    await election.close()
    await broker.stop()
    await close_database()
