"""The agent's drain of queued sends (real NATS): a send in flight when its session stops is handed back at once."""

import asyncio
from pathlib import Path
from uuid import uuid4

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.client import JetStreamContext
from wgs_contracts import streams, subjects
from wgs_contracts.instance_events import MessageContent, MessageType, OutboundMessage
from wgs_contracts.messages import InstanceSpec, Provider
from wgs_kit.messaging import decode, make_broker, publish_durable
from wgs_kit.waiting import wait_until
from wgs_node_agent.network import SandboxNetwork
from wgs_node_agent.runtime.base import InstancePaths
from wgs_node_agent.session import InstanceSession

INSTANCE_ID = 900_001  # no instance row: the queue subject is per instance, and no other test uses this one
HAND_BACK_SECONDS = 10.0  # well below the consumer's ack_wait (60 s), which is what a kept send would cost


async def test_a_queued_send_in_flight_when_the_session_stops_is_handed_back_at_once(
    migrated: dict[str, str], js: JetStreamContext, tmp_path: Path
) -> None:
    paths = InstancePaths(state_dir=tmp_path / "state", socket_dir=tmp_path / "run")
    paths.socket_dir.mkdir(parents=True)
    send_arrived = asyncio.Event()

    async def provider_that_never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"POST /messages"):
            send_arrived.set()
        await asyncio.get_running_loop().create_future()  # hangs until the connection is dropped

    server = await asyncio.start_unix_server(provider_that_never_answers, path=str(paths.socket))
    broker = make_broker(migrated["NATS_URL"], "test-agent-drain")
    await broker.start()
    spec = InstanceSpec(
        instance_id=INSTANCE_ID, tenant_id=1, provider=Provider.WABA, nano_cpus=10**8, memory_bytes=2**26, pids_limit=64
    )
    session = InstanceSession(spec, 1, paths, broker, SandboxNetwork(lambda: broker.connection))
    try:
        queued = OutboundMessage(
            id=uuid4().hex,
            instance_id=INSTANCE_ID,
            to="491701234567",
            content=MessageContent(type=MessageType.TEXT, text="queued"),
        )
        subject = subjects.outbound(INSTANCE_ID)
        await publish_durable(broker, subject, queued, msg_id=queued.id, stream=streams.OUTBOUND)
        await session.start()

        async def arrived() -> bool:
            return send_arrived.is_set()

        await wait_until(arrived, timeout=20, what="queued send handed to the provider")
        await session.stop()  # the provider never answered: the send is still in flight

        # The next holder of the consumer (the agent the instance moves to) gets it at once.
        successor = await js.pull_subscribe(subject, durable=f"outbound-{INSTANCE_ID}", stream=streams.OUTBOUND.name)
        try:
            [message] = await successor.fetch(1, timeout=HAND_BACK_SECONDS)
        except (NatsTimeoutError, TimeoutError):
            raise AssertionError(f"the in-flight send was not handed back within {HAND_BACK_SECONDS}s") from None
        assert decode(message.data, OutboundMessage).id == queued.id
        assert message.metadata.num_delivered == 2
        await message.ack()
        await successor.unsubscribe()
    finally:
        await session.forget_queued()
        await session.stop()
        await broker.stop()
        server.close()
