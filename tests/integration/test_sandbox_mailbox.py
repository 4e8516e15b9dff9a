"""A sandbox phone that is away gets what was sent to it when it is back, as WhatsApp keeps a message
for a phone that is off: two node agents' sessions (real NATS, the real sandbox provider in this
process on a unix socket), a directory that knows both phones.

- A message to a phone whose instance is away (no session) waits in its mailbox, the sender's
  status stays `sent`; the receipts for a sender that is away in turn wait in the sender's mailbox;
  each side gets its mail once its session starts again.
- A message to a phone whose provider does not answer (its container stopped) waits the same way,
  and is delivered once the provider answers.
- How long an away phone is asked again first is a setting (`WGS_SANDBOX_RETRY_SECONDS`).
"""

import asyncio
import contextlib
import functools
import random
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from faststream.nats import NatsBroker
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext
from wgs_contracts.messages import InstanceSpec, Provider
from wgs_kit.messaging import make_broker
from wgs_kit.waiting import wait_until
from wgs_node_agent.network import SandboxNetwork
from wgs_node_agent.runtime.base import InstancePaths
from wgs_node_agent.session import InstanceSession
from wgs_sandbox.http import Request, serve_connection
from wgs_sandbox.provider import SandboxProvider

from tests.support.sandbox_network import Directory, mailbox

RETRY_SECONDS = 0.3  # how long an away phone is asked again before its mail waits (6 s in a deployment)


class SandboxPhone:
    """A paired sandbox provider in this process, served on its unix socket only while `up`."""

    def __init__(self, instance_id: int, folder: Path) -> None:
        self.number = f"49152{random.randrange(10**7):07d}"
        self.spec = InstanceSpec(
            instance_id=instance_id,
            tenant_id=1,
            provider=Provider.SANDBOX,
            nano_cpus=0,
            memory_bytes=0,
            pids_limit=0,
            phone_number=self.number,
        )
        self.paths = InstancePaths(state_dir=folder / "state", socket_dir=folder / "run")
        self.paths.state_dir.mkdir(parents=True)
        self.paths.socket_dir.mkdir(parents=True)
        self.provider = SandboxProvider(instance_id=str(instance_id), data_dir=self.paths.state_dir, phone=self.number)
        self._server: asyncio.Server | None = None

    async def call(self, method: str, path: str, body: bytes = b"") -> tuple[int, dict]:
        """A provider-contract call made in this process (what the agent relays for the API)."""
        response = await self.provider.handle(Request(method, path, {}, {}, body))
        return response.status, response.body

    async def pair(self) -> None:
        """Pair by scanning the current QR."""
        _, qr = await self.call("GET", "/qr")
        status, _ = await self.call("POST", "/sandbox/scan", b'{"qr": "%s"}' % qr["qr"].encode())
        assert status == 200

    async def up(self) -> None:
        """The provider answers on its socket (its container runs)."""
        self._server = await asyncio.start_unix_server(
            functools.partial(serve_connection, self.provider.handle), path=str(self.paths.socket)
        )

    async def down(self) -> None:
        """The provider stops answering (its container stopped)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self.paths.socket.unlink(missing_ok=True)
            self._server = None

    def status_of(self, message_id: str) -> str | None:
        """The provider's status of a message it sent."""
        return self.provider.sent.get(message_id)


class Node:
    """One node agent's NATS connection and sandbox network."""

    def __init__(self, broker: NatsBroker, directory: Directory) -> None:
        self.broker = broker
        self.network = SandboxNetwork(
            lambda: broker.connection, retry_seconds=RETRY_SECONDS, directory_subject=directory.subject
        )

    async def session(self, phone: SandboxPhone, generation: int) -> InstanceSession:
        """Start the phone's session here (its pump, its place on the network, its mailbox)."""
        session = InstanceSession(phone.spec, generation, phone.paths, self.broker, self.network)
        await session.start()
        return session


@pytest.fixture
async def nodes(migrated: dict[str, str]) -> AsyncIterator[tuple[Node, Node, Directory]]:
    """Two nodes and a directory (which knows the phones the test adds to it)."""
    directory_connection: NatsClient = await nats.connect(migrated["NATS_URL"])
    directory = Directory(known=set())
    await directory.serve(directory_connection)
    brokers = [make_broker(migrated["NATS_URL"], f"test-mailbox-{n}") for n in (1, 2)]
    for broker in brokers:
        await broker.start()
    yield Node(brokers[0], directory), Node(brokers[1], directory), directory
    for broker in brokers:
        await broker.stop()
    await directory_connection.close()


@pytest.fixture
async def phones(nodes: tuple[Node, Node, Directory]) -> AsyncIterator[tuple[SandboxPhone, SandboxPhone]]:
    """Phones A and B, paired and known to the directory; A's provider answers, B's not yet."""
    folder = Path(tempfile.mkdtemp(prefix="wgs-mail-", dir="/tmp"))  # unix socket paths must stay short
    a, b = SandboxPhone(900_011, folder / "a"), SandboxPhone(900_012, folder / "b")
    for phone in (a, b):
        await phone.pair()
        nodes[2].known.add(phone.number)
    await a.up()
    yield a, b
    for phone in (a, b):
        await phone.down()
    shutil.rmtree(folder)


@contextlib.asynccontextmanager
async def cleaned(*sessions: InstanceSession) -> AsyncIterator[None]:
    """Stop the sessions after the test, and drop their queues and consumers."""
    try:
        yield
    finally:
        for session in sessions:
            await session.stop()
            await session.forget_queued()


async def waits_in_mailbox(js: JetStreamContext, phone: SandboxPhone, count: int) -> None:
    """Wait until `count` envelopes wait in the phone's mailbox."""

    async def waiting() -> bool:
        return len(await mailbox(js, phone.number)) == count

    await wait_until(waiting, timeout=20, what=f"{count} envelope(s) waiting in {phone.number}'s mailbox")


async def send(phone: SandboxPhone, to: SandboxPhone) -> str:
    """Phone sends a text to `to` (as the API's relay would); its message id."""
    message_id = f"m{random.randrange(10**9)}"
    body = b'{"id": "%s", "to": "%s", "content": {"type": "text", "text": "hi"}}' % (
        message_id.encode(),
        to.number.encode(),
    )
    assert (await phone.call("POST", "/messages", body))[0] == 200
    return message_id


async def test_mail_waits_for_an_away_phone_and_its_receipts_for_an_away_sender(
    nodes: tuple[Node, Node, Directory], phones: tuple[SandboxPhone, SandboxPhone], js: JetStreamContext
) -> None:
    node_1, node_2, _ = nodes
    a, b = phones
    a_session = await node_1.session(a, generation=1)
    async with cleaned(a_session):
        message_id = await send(a, b)  # B is away: no session anywhere

        await waits_in_mailbox(js, b, count=1)
        assert a.status_of(message_id) == "sent"  # not failed: B is off, not unknown
        await a_session.stop()  # now A is away too

        await b.up()
        b_session = await node_2.session(b, generation=1)
        async with cleaned(b_session):

            async def receipts_wait_for_a() -> bool:
                return message_id in b.provider.delivered and len(await mailbox(js, a.number)) == 2

            await wait_until(receipts_wait_for_a, timeout=20, what="B's delivered and read receipts in A's mailbox")
            assert await mailbox(js, b.number) == []  # taken
            assert a.status_of(message_id) == "sent"

            a_again = await node_1.session(a, generation=2)  # A's instance is back
            async with cleaned(a_again):

                async def read() -> bool:
                    return a.status_of(message_id) == "read"

                await wait_until(read, timeout=20, what="A's message read")
                assert await mailbox(js, a.number) == []


async def test_mail_waits_for_a_phone_whose_provider_does_not_answer(
    nodes: tuple[Node, Node, Directory], phones: tuple[SandboxPhone, SandboxPhone], js: JetStreamContext
) -> None:
    node_1, node_2, _ = nodes
    a, b = phones
    sessions = [await node_1.session(a, generation=1), await node_2.session(b, generation=1)]
    async with cleaned(*sessions):
        message_id = await send(a, b)  # B's session holds the phone, its provider does not answer

        await waits_in_mailbox(js, b, count=1)
        assert a.status_of(message_id) == "sent"

        await b.up()  # B's container runs again

        async def read() -> bool:
            return a.status_of(message_id) == "read"

        await wait_until(read, timeout=20, what="A's message delivered and read")
        assert message_id in b.provider.delivered
        assert await mailbox(js, b.number) == []
