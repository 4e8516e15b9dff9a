"""The agent sends what waits together for one instance as one `POST /messages` batch call, against
the real sandbox provider (in this process, on a real unix socket) and providers that take no batch."""

import asyncio
import contextlib
import functools
import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from wgs_contracts.instance_events import ProviderReply
from wgs_contracts.messages import InstanceSpec, Provider
from wgs_kit.waiting import wait_until
from wgs_node_agent.runtime.base import InstancePaths
from wgs_node_agent.session import InstanceSession
from wgs_sandbox.http import Request, Response, serve_connection
from wgs_sandbox.provider import SandboxProvider

PEER = "491700000002"
SPEC = InstanceSpec(instance_id=1, tenant_id=1, provider=Provider.SANDBOX, nano_cpus=0, memory_bytes=0, pids_limit=0)


def send(message_id: str, text: str = "hi") -> bytes:
    return json.dumps({"id": message_id, "to": PEER, "content": {"type": "text", "text": text}}).encode()


class Sandbox:
    """A paired sandbox provider behind a session, with every `/messages` body it was sent."""

    def __init__(self, folder: Path) -> None:
        (folder / "state").mkdir()
        self.provider = SandboxProvider(instance_id="1", data_dir=folder / "state", phone="491700000001")
        self.paths = InstancePaths(state_dir=folder / "state", socket_dir=folder / "run")
        self.sends: list[dict] = []
        self.refuse_batches = False
        self.failures = 0  # how many `/messages` calls to answer 500 first
        self.answering = asyncio.Event()  # cleared: `/messages` calls are held (in flight) until set
        self.answering.set()
        self.session = InstanceSession(SPEC, 1, self.paths, broker=None, network=None)  # type: ignore[arg-type]

    async def handle(self, request: Request) -> Response:
        if request.path == "/messages":
            body = json.loads(request.body)
            self.sends.append(body)
            await self.answering.wait()
            if self.refuse_batches and "batch" in body:  # what a provider without batches answers
                return Response(422, {"error": "missing id", "field": "id"})
            if self.failures:
                self.failures -= 1
                return Response(500, {"error": "a moment"})

        return await self.provider.handle(request)

    def batch_sizes(self) -> list[int]:
        """Per `/messages` call: the number of sends in it (0: a plain call)."""
        return [len(body["batch"]) if "batch" in body else 0 for body in self.sends]


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    folder = Path(tempfile.mkdtemp(prefix="wgs-sb-", dir="/tmp"))  # unix socket paths must stay short
    scripted = Sandbox(folder)
    scripted.paths.socket_dir.mkdir(parents=True)
    server = await asyncio.start_unix_server(
        functools.partial(serve_connection, scripted.handle), path=str(scripted.paths.socket)
    )
    ticker = asyncio.create_task(scripted.provider.run())
    qr = json.loads((await scripted.session.relay("GET", "/qr", None)).body)["qr"]
    scanned = await scripted.session.relay("POST", "/sandbox/scan", json.dumps({"qr": qr}).encode())
    assert scanned.status == 200, scanned.body
    yield scripted
    await scripted.session.client.close()
    ticker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ticker
    server.close()
    shutil.rmtree(folder)


async def test_sends_waiting_together_go_in_one_call_each_with_its_own_answer(sandbox: Sandbox) -> None:
    bodies = [send("m1"), send("m2"), send("m3", text=""), send("m1"), send("m4")]
    replies = await asyncio.gather(*(sandbox.session.relay("POST", "/messages", body) for body in bodies))
    assert sandbox.batch_sizes() == [5]
    assert [r.status for r in replies] == [200, 200, 422, 200, 200]
    assert json.loads(replies[0].body) == {"id": "m1", "status": "sent"}
    assert json.loads(replies[2].body)["field"] == "content.text"
    assert json.loads(replies[3].body) == {"id": "m1", "status": "sent"}  # the repeat: sent once
    statuses = [e for e in sandbox.provider.outbox if e["type"] == "message.status"]
    assert [e["data"]["message_id"] for e in statuses] == ["m1", "m2", "m4"]


async def test_sends_arriving_while_a_call_is_in_flight_wait_for_it_and_go_together(sandbox: Sandbox) -> None:
    """One call in flight per instance (decision 39): a second one would split the batch."""
    sandbox.answering.clear()
    first = asyncio.ensure_future(sandbox.session.relay("POST", "/messages", send("m1")))

    async def calls_made(count: int) -> bool:
        return len(sandbox.sends) == count

    await wait_until(functools.partial(calls_made, 1), timeout=10, what="the first call at the provider")
    later: list[asyncio.Future[ProviderReply]] = []
    for waiting in range(1, 4):  # one by one: each finds the first call still in flight
        later.append(asyncio.ensure_future(sandbox.session.relay("POST", "/messages", send(f"m{waiting + 1}"))))

        async def queued(count: int = waiting) -> bool:
            return sandbox.session.sends_waiting == count

        await wait_until(queued, timeout=5, what=f"{waiting} send(s) waiting for the call in flight")
    sandbox.answering.set()
    replies = await asyncio.gather(first, *later)
    assert [json.loads(r.body) for r in replies] == [{"id": f"m{i}", "status": "sent"} for i in range(1, 5)]
    assert sandbox.batch_sizes() == [0, 3]


async def test_a_lone_send_is_a_plain_call(sandbox: Sandbox) -> None:
    reply = await sandbox.session.relay("POST", "/messages", send("m1"))
    assert (reply.status, json.loads(reply.body)) == (200, {"id": "m1", "status": "sent"})
    assert sandbox.batch_sizes() == [0]


async def test_a_provider_that_refuses_a_batch_gets_one_send_per_call_from_then_on(sandbox: Sandbox) -> None:
    sandbox.refuse_batches = True
    first = await asyncio.gather(*(sandbox.session.relay("POST", "/messages", send(f"a{i}")) for i in range(3)))
    later = await asyncio.gather(*(sandbox.session.relay("POST", "/messages", send(f"b{i}")) for i in range(3)))
    assert [r.status for r in first + later] == [200] * 6
    assert sandbox.batch_sizes() == [3, 0, 0, 0, 0, 0, 0]


async def test_a_batch_answered_otherwise_is_sent_one_by_one_and_batches_go_on(sandbox: Sandbox) -> None:
    sandbox.failures = 1
    first = await asyncio.gather(*(sandbox.session.relay("POST", "/messages", send(f"a{i}")) for i in range(2)))
    later = await asyncio.gather(*(sandbox.session.relay("POST", "/messages", send(f"b{i}")) for i in range(2)))
    assert [r.status for r in first + later] == [200] * 4
    assert sandbox.batch_sizes() == [2, 0, 0, 2]


@pytest.mark.parametrize(
    ("answer", "calls"),
    [
        (b"", 1),  # hangs up: the batch is not sent again
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nxyz", 4),  # not results: sent again one by one
        (b'HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n{"results":[]}', 4),  # not one per send: the same
    ],
    ids=["no-answer", "not-json", "wrong-count"],
)
async def test_a_batch_not_answered_per_send(answer: bytes, calls: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="wgs-sb-", dir="/tmp"))
    paths = InstancePaths(state_dir=folder / "state", socket_dir=folder)
    requests: list[bytes] = []

    async def scripted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                requests.append(head)
                sized = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
                await reader.readexactly(int(sized[0].split(b":")[1]))
                if not answer:
                    break
                writer.write(answer)
        writer.close()

    server = await asyncio.start_unix_server(scripted, path=str(paths.socket))
    session = InstanceSession(SPEC, 1, paths, broker=None, network=None)  # type: ignore[arg-type]
    try:
        replies = await asyncio.gather(*(session.relay("POST", "/messages", send(f"m{i}")) for i in range(3)))
        assert [r.status for r in replies] == [504 if not answer else 200] * 3
        assert len(requests) == calls
    finally:
        await session.client.close()
        server.close()
        shutil.rmtree(folder)
