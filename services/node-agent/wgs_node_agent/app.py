"""Wiring of one node agent process: runtime, command consumer, heartbeats, reconcile loop."""

import asyncio
import logging

from nats.aio.msg import Msg
from wgs_contracts import streams, subjects
from wgs_contracts.instance_events import ProviderCall, ProviderSends
from wgs_contracts.messages import HandOffRequest, NodeCommand
from wgs_kit.batched import BatchedPullConsumer
from wgs_kit.lifecycle import cancel_all, freeze_startup_heap, wait_for_shutdown
from wgs_kit.messaging import decode, encode, make_broker
from wgs_kit.outages import log_failure
from wgs_kit.requests import RequestServer

from wgs_node_agent.agent import NodeAgent
from wgs_node_agent.config import Settings
from wgs_node_agent.runtime.select import open_runtime

log = logging.getLogger(__name__)
COMMAND_MAX_DELIVER = 8
COMMAND_ACK_WAIT_SECONDS = 60.0  # a command may start a container (and restore its snapshot)
COMMANDS_AT_ONCE = 16  # commands handled at the same time: one container start does not wait for another


async def heartbeat_forever(agent: NodeAgent, seconds: float) -> None:
    """Publish a heartbeat every `seconds`, surviving failures."""
    while True:
        try:
            await agent.heartbeat()
        except Exception as exc:
            log_failure(log, exc, "heartbeat")
        await asyncio.sleep(seconds)


async def watch_containers_forever(agent: NodeAgent) -> None:
    """Follow the runtime's container events, resubscribing after a broken stream."""
    while True:
        try:
            async for event in agent.runtime.events():
                await agent.on_container_event(event)
        except Exception:
            log.exception("container event stream failed")
        await asyncio.sleep(1.0)


async def reconcile_forever(agent: NodeAgent, seconds: float) -> None:
    """Reconcile at once, retrying every second until the scheduler answers, then every `seconds`."""
    while True:
        try:
            done = await agent.reconcile_once()
        except Exception as exc:
            log_failure(log, exc, "reconcile")
            done = False
        await asyncio.sleep(seconds if done else 1.0)


async def snapshot_forever(agent: NodeAgent, seconds: float) -> None:
    """Snapshot every running instance every `seconds` (unchanged state is not uploaded)."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await agent.snapshot_all()
        except Exception as exc:
            log_failure(log, exc, "periodic snapshots")


async def run(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT; containers keep running when the agent stops."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    runtime = await open_runtime(settings)
    broker = make_broker(settings.nats_url, f"wgs-node-agent-{settings.node_name}")
    agent = NodeAgent(settings, runtime, broker)

    async def on_commands(msgs: list[Msg]) -> None:
        for msg in msgs:
            await agent.handle(decode(msg.data, NodeCommand))  # type: ignore[arg-type]

    async def on_provider_call(body: bytes) -> bytes:
        return encode(await agent.relay(decode(body, ProviderCall)))

    async def on_provider_sends(body: bytes) -> bytes:
        return encode(await agent.relay_sends(decode(body, ProviderSends)))

    async def on_handoff(body: bytes) -> bytes:
        return encode(await agent.handoff(decode(body, HandOffRequest)))

    await broker.start()
    commands = BatchedPullConsumer(
        broker.connection.jetstream(),
        on_commands,
        stream=streams.NODE_COMMANDS,
        durable=f"node-{settings.node_name}",
        filter_subjects=[subjects.node_commands(settings.node_name)],
        max_deliver=COMMAND_MAX_DELIVER,
        ack_wait_seconds=COMMAND_ACK_WAIT_SECONDS,
        fetch_batch=COMMANDS_AT_ONCE,
        concurrent=True,
    )
    await commands.start()
    requests = RequestServer(broker.connection)  # concurrently: each relayed call waits on its provider
    await requests.serve(subjects.provider_calls(settings.node_name), on_provider_call)
    await requests.serve(subjects.provider_sends(settings.node_name), on_provider_sends)
    await requests.serve(subjects.node_handoff(settings.node_name), on_handoff)
    freeze_startup_heap()
    log.info("node agent %s up with the %s runtime", settings.node_name, runtime.name)
    tasks = [
        asyncio.create_task(heartbeat_forever(agent, settings.heartbeat_seconds)),
        asyncio.create_task(reconcile_forever(agent, settings.reconcile_seconds)),
        asyncio.create_task(watch_containers_forever(agent)),
        asyncio.create_task(snapshot_forever(agent, settings.snapshot_seconds)),
    ]
    await wait_for_shutdown()
    await requests.close()
    await cancel_all(tasks)
    await commands.stop()
    await agent.close_sessions()
    await broker.stop()
    if runtime.name == "process":
        await runtime.close()
