"""The agent's queue drains (real NATS): a queued send in flight when its session stops is handed back at
once; a phone's mail consumer nobody drains expires, and a new drain takes what was left."""

import asyncio
import contextlib
import functools
from pathlib import Path
from uuid import uuid4

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from wgs_contracts import streams, subjects
from wgs_contracts.instance_events import MessageContent, MessageType, OutboundMessage
from wgs_contracts.messages import InstanceSpec, Provider
from wgs_kit.messaging import decode, make_broker, publish_durable
from wgs_kit.waiting import wait_until
from wgs_node_agent.network import SandboxNetwork
from wgs_node_agent.queue_drain import QueueDrain
from wgs_node_agent.runtime.base import InstancePaths
from wgs_node_agent.session import InstanceSession, mailbox_name

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


async def test_an_idle_mailbox_consumer_expires_and_a_new_drain_takes_what_was_left(
    migrated: dict[str, str], js: JetStreamContext
) -> None:
    phone = f"49153{uuid4().int % 10**7:07d}"
    subject = subjects.sandbox_mail(phone)
    handled: list[bytes] = []

    async def take(message: Msg) -> None:
        handled.append(message.data)
        await message.ack()

    broker = make_broker(migrated["NATS_URL"], "test-mail-drain")
    await broker.start()
    drain = QueueDrain(broker, streams.SANDBOX_MAIL, subject, mailbox_name(phone), take, expire_after_idle=1.0)
    try:
        await js.publish(subject, b"first", stream=streams.SANDBOX_MAIL.name)
        draining = asyncio.create_task(drain.forever())

        async def took(count: int) -> bool:
            return len(handled) == count

        await wait_until(functools.partial(took, 1), timeout=20, what="the first mail taken")
        draining.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await draining

        async def expired() -> bool:
            try:
                await js.consumer_info(streams.SANDBOX_MAIL.name, mailbox_name(phone))
            except NotFoundError:
                return True
            return False

        await wait_until(expired, timeout=20, what="the idle consumer removed by the server")
        await js.publish(subject, b"second", stream=streams.SANDBOX_MAIL.name)  # mail for a phone away that long
        draining = asyncio.create_task(drain.forever())
        await wait_until(functools.partial(took, 2), timeout=20, what="the second mail taken by a new consumer")
        draining.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await draining
        assert handled == [b"first", b"second"]
    finally:
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(streams.SANDBOX_MAIL.name, mailbox_name(phone))
        await broker.stop()
