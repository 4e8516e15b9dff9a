"""A send queued for an instance (`WGS_OUTBOUND`) goes out soon after its provider is back, also when
the provider is up but still restoring its linked session (`503 not ready`): the node agent offers it
again at least every `PROVIDER_WAIT_SECONDS`, not after the growing backoff of a failing send. The real
sandbox provider (in this process, on a unix socket) and real NATS."""

import asyncio
import functools
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from wgs_contracts import streams, subjects
from wgs_contracts.instance_events import MessageContent, MessageType, OutboundMessage
from wgs_contracts.messages import InstanceSpec, Provider
from wgs_kit.messaging import make_broker, publish_durable
from wgs_kit.waiting import wait_until
from wgs_node_agent.network import SandboxNetwork
from wgs_node_agent.runtime.base import InstancePaths
from wgs_node_agent.session import PROVIDER_WAIT_SECONDS, InstanceSession
from wgs_sandbox.http import Request, serve_connection
from wgs_sandbox.provider import SandboxProvider

INSTANCE_ID = 900_003  # no instance row; no other test queues sends for this instance
PHONE = "491700000031"
START_SECONDS = 8.0  # a session restored this slowly: the backoff of a failing send would reach 8 s
SPEC = InstanceSpec(
    instance_id=INSTANCE_ID, tenant_id=1, provider=Provider.SANDBOX, nano_cpus=0, memory_bytes=0, pids_limit=0
)


async def linked_provider(folder: Path) -> None:
    """Pair a sandbox phone whose state stays in `folder`, as a container would before a restart."""
    provider = SandboxProvider(instance_id=str(INSTANCE_ID), data_dir=folder, phone=PHONE)
    qr = (await provider.handle(Request("GET", "/qr", {}, {}, b""))).body["qr"]
    scanned = await provider.handle(Request("POST", "/sandbox/scan", {}, {}, f'{{"qr": "{qr}"}}'.encode()))
    assert scanned.status == 200, scanned.body


@pytest.fixture
async def restarted() -> AsyncIterator[tuple[SandboxProvider, InstancePaths]]:
    """The linked provider started again on its folder, restoring its session for START_SECONDS."""
    folder = Path(tempfile.mkdtemp(prefix="wgs-queued-", dir="/tmp"))  # unix socket paths must stay short
    paths = InstancePaths(state_dir=folder / "state", socket_dir=folder / "run")
    paths.state_dir.mkdir(parents=True)
    paths.socket_dir.mkdir(parents=True)
    await linked_provider(paths.state_dir)
    provider = SandboxProvider(
        instance_id=str(INSTANCE_ID), data_dir=paths.state_dir, phone=PHONE, start_seconds=START_SECONDS
    )
    server = await asyncio.start_unix_server(
        functools.partial(serve_connection, provider.handle), path=str(paths.socket)
    )
    yield provider, paths
    server.close()
    shutil.rmtree(folder)


async def test_a_queued_send_goes_out_soon_after_the_session_is_restored(
    migrated: dict[str, str], restarted: tuple[SandboxProvider, InstancePaths]
) -> None:
    provider, paths = restarted
    broker = make_broker(migrated["NATS_URL"], "test-agent-queued")
    await broker.start()
    message = OutboundMessage(
        id=uuid.uuid4().hex,
        instance_id=INSTANCE_ID,
        to="491700000032",
        content=MessageContent(type=MessageType.TEXT, text="waited for the session"),
    )
    await publish_durable(broker, subjects.outbound(INSTANCE_ID), message, msg_id=message.id, stream=streams.OUTBOUND)
    session = InstanceSession(SPEC, 1, paths, broker, SandboxNetwork(lambda: broker.connection))
    try:
        assert provider.state == "starting"
        await session.start()

        async def sent() -> bool:
            return message.id in provider.sent

        await wait_until(sent, timeout=START_SECONDS + 20, interval=0.05, what="the queued send taken")
        late = provider.clock() - provider.ready_at
    finally:
        await session.stop()
        await broker.stop()
    assert late < PROVIDER_WAIT_SECONDS + 1.5, f"sent {late:.1f} s after the session was back"
