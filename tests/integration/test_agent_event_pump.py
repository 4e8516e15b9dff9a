"""The agent's event pump paces itself (decision 38), against the real sandbox provider (in this
process, on a unix socket) and real NATS: a backlog is read page after page without pause; once a
page has emptied the outbox, the pump lets the next events gather for `event_linger_seconds`
before it reads again, so a steady trickle of events goes out in a few pages, not one per event.
An event that breaks the contract is skipped, not retried in front of the events behind it."""

import asyncio
import contextlib
import functools
import itertools
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.js.client import JetStreamContext
from wgs_contracts import streams, subjects
from wgs_contracts.messages import InstanceSpec, Provider
from wgs_kit.messaging import make_broker
from wgs_kit.waiting import wait_until
from wgs_node_agent.network import SandboxNetwork
from wgs_node_agent.runtime.base import InstancePaths
from wgs_node_agent.session import InstanceSession
from wgs_sandbox.http import Request, Response, serve_connection
from wgs_sandbox.provider import PAGE_SIZE, SandboxProvider

INSTANCE_ID = 900_002  # no instance row; no other test publishes this instance's events
# Long against the QR period below, so that pacing shows plainly, and against what publishing one
# page can take on a loaded 2-core machine (a backlog page once waited 0.25 s in CI with 0.4 s
# here), so that "no pause" (under half of it) stays tellable from the linger.
LINGER_SECONDS = 1.0
QR_SECONDS = 0.02  # the unpaired sandbox emits a new QR this often: a steady trickle of events
BACKLOG = 2 * PAGE_SIZE + PAGE_SIZE // 2  # three pages' worth, in the outbox before the pump starts
SPEC = InstanceSpec(
    instance_id=INSTANCE_ID, tenant_id=1, provider=Provider.SANDBOX, nano_cpus=0, memory_bytes=0, pids_limit=0
)


@dataclass
class Read:
    """One `GET /events` the provider answered: when, how many events, and whether it emptied the outbox."""

    at: float
    events: int
    emptied: bool


class RecordingSandbox:
    """The sandbox provider, recording every page of events it hands out."""

    def __init__(self, folder: Path) -> None:
        self.paths = InstancePaths(state_dir=folder / "state", socket_dir=folder / "run")
        self.paths.state_dir.mkdir(parents=True)
        self.paths.socket_dir.mkdir(parents=True)
        self.provider = SandboxProvider(
            instance_id=str(INSTANCE_ID), data_dir=self.paths.state_dir, qr_seconds=QR_SECONDS
        )
        self.reads: list[Read] = []

    async def handle(self, request: Request) -> Response:
        response = await self.provider.handle(request)
        if request.path == "/events" and response.status == 200:
            events = response.body["events"]
            emptied = not events or events[-1]["seq"] >= response.body["last_seq"]
            self.reads.append(Read(asyncio.get_running_loop().time(), len(events), emptied))
        return response


@pytest.fixture
async def sandbox() -> AsyncIterator[RecordingSandbox]:
    folder = Path(tempfile.mkdtemp(prefix="wgs-pump-", dir="/tmp"))  # unix socket paths must stay short
    recording = RecordingSandbox(folder)
    server = await asyncio.start_unix_server(
        functools.partial(serve_connection, recording.handle), path=str(recording.paths.socket)
    )
    yield recording
    server.close()
    shutil.rmtree(folder)


async def published(js: JetStreamContext, kind: str = "qr") -> int:
    """How many of the test instance's events of `kind` the stream holds."""
    info = await js.stream_info(streams.EVENTS.name, subjects_filter=subjects.instance_event(INSTANCE_ID, kind))
    return sum((info.state.subjects or {}).values())


async def test_a_backlog_goes_at_once_and_a_trickle_gathers_while_the_pump_lingers(
    migrated: dict[str, str], js: JetStreamContext, sandbox: RecordingSandbox
) -> None:
    provider = sandbox.provider
    for n in range(BACKLOG):
        provider._emit("qr", {"qr": f"backlog-{n}"})
    await provider.commit()
    ticker = asyncio.create_task(provider.run())  # from now on, a new QR every QR_SECONDS
    broker = make_broker(migrated["NATS_URL"], "test-agent-pump")
    await broker.start()
    network = SandboxNetwork(lambda: broker.connection)
    session = InstanceSession(SPEC, 1, sandbox.paths, broker, network, event_linger_seconds=LINGER_SECONDS)
    before = await published(js)
    try:
        await session.start()

        async def lingered_a_few_times() -> bool:
            return sum(read.events > 0 and read.emptied for read in sandbox.reads) >= 4

        await wait_until(lingered_a_few_times, timeout=30, what="four pages that emptied the outbox")
    finally:
        await session.stop()
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        await broker.stop()

    reads = [read for read in sandbox.reads if read.events]
    assert [read.events for read in reads[:2]] == [PAGE_SIZE, PAGE_SIZE], "the backlog goes a full page at a time"
    for read, following in itertools.pairwise(reads):
        gap = following.at - read.at
        if read.emptied:  # the pump waited before reading again, and what came meanwhile came in one page
            assert gap >= LINGER_SECONDS * 0.95, f"read again {gap:.3f} s after emptying the outbox"
        else:  # more was waiting: no pause
            assert gap < LINGER_SECONDS / 2, f"a backlog page waited {gap:.3f} s"
    trickle = [read.events for read in reads if read.at > reads[0].at + LINGER_SECONDS]
    assert len(trickle) >= 3, f"pages of the trickle: {trickle}"
    assert min(trickle[1:]) > 5, f"pages of the trickle: {trickle}"
    assert await published(js) - before >= BACKLOG


async def test_an_event_that_breaks_the_contract_is_skipped_not_retried_forever(
    migrated: dict[str, str], js: JetStreamContext, sandbox: RecordingSandbox
) -> None:
    """A provider's event whose `data` does not match its type (a content type the contract lacks, a
    receipt without its fields) is logged and skipped: the events behind it still go out, and the
    outbox is acked past it."""
    provider = sandbox.provider
    provider._emit("qr", {"qr": "before"})
    provider._emit("message", {"message_id": "m1", "from": "491700000002", "content": {"type": "sticker"}})
    provider._emit("sandbox.receipt", {"id": 1})
    provider._emit("qr", {"qr": "after"})
    await provider.commit()
    broker = make_broker(migrated["NATS_URL"], "test-agent-pump-contract")
    await broker.start()
    network = SandboxNetwork(lambda: broker.connection)
    # generation 2: its event ids differ from the other test's, which the stream may still deduplicate
    session = InstanceSession(SPEC, 2, sandbox.paths, broker, network, event_linger_seconds=LINGER_SECONDS)
    before, messages_before = await published(js), await published(js, "message")
    try:
        await session.start()

        async def done() -> bool:
            return not provider.outbox and await published(js) >= before + 2

        await wait_until(done, timeout=30, what="the events behind the bad ones published, and all acked")
    finally:
        await session.stop()
        await broker.stop()
    assert await published(js, "message") == messages_before
