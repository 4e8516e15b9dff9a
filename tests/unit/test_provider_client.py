"""The agent's HTTP/1.1 client of a provider socket, against scripted servers on a real unix socket:
lengths, chunked and close-delimited bodies, responses in pieces, keep-alive and its stale
connections, and every way a provider fails to answer."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from wgs_kit.waiting import wait_until
from wgs_node_agent.provider_client import ProviderClient, ProviderUnavailable

Answer = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]  # request head → keep the connection?


class Provider:
    """A unix-socket server answering each request with `answer`; counts connections and requests."""

    def __init__(self, socket: Path, answer: Answer) -> None:
        self.socket = socket
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                self.requests.append(head + await reader.readexactly(length))
                if not await self.answer(head, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def provider(tmp_path: Path) -> AsyncIterator[Callable[[Answer], Awaitable[Provider]]]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> Provider:
        scripted = Provider(tmp_path / "provider.sock", answer)
        servers.append(await asyncio.start_unix_server(scripted.serve, path=str(scripted.socket)))
        return scripted

    yield start
    for server in servers:
        server.close()


def json_answer(body: bytes = b'{"ok":true}', status: int = 200) -> Answer:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (status, len(body))
        )
        writer.write(body)
        return True

    return answer


async def test_a_call_sends_the_request_and_reads_a_sized_body_keeping_the_connection(provider) -> None:
    server = await provider(json_answer(b'{"status":"ok"}', status=201))
    client = ProviderClient(server.socket)

    answers = [await client.call("POST", "/messages", b'{"id":"m1"}') for _ in range(3)]

    assert answers == [(201, b'{"status":"ok"}', "application/json")] * 3
    assert server.connections == 1  # kept alive
    assert server.requests[0] == (
        b"POST /messages HTTP/1.1\r\nHost: provider\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
        b'{"id":"m1"}'
    )
    await client.close()


async def test_a_get_has_no_body(provider) -> None:
    server = await provider(json_answer())
    client = ProviderClient(server.socket)
    await client.call("GET", "/events?after=3&wait=20")
    assert server.requests == [b"GET /events?after=3&wait=20 HTTP/1.1\r\nHost: provider\r\n\r\n"]
    await client.close()


async def test_a_chunked_body_in_pieces_is_put_together(provider) -> None:
    response = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json; charset=utf-8\r\n\r\n"
        b'4\r\n{"a"\r\n6;ext=1\r\n:[1,2]\r\n1\r\n}\r\n0\r\nX-Trailer: 1\r\n\r\n'
    )

    async def byte_by_byte(head: bytes, writer: asyncio.StreamWriter) -> bool:
        for index in range(len(response)):
            writer.write(response[index : index + 1])
            await writer.drain()
        return True

    server = await provider(byte_by_byte)
    client = ProviderClient(server.socket)
    assert await client.call("GET", "/health") == (200, b'{"a":[1,2]}', "application/json; charset=utf-8")
    assert await client.call("GET", "/health") == (200, b'{"a":[1,2]}', "application/json; charset=utf-8")
    assert server.connections == 1
    await client.close()


async def test_a_body_without_length_ends_with_the_connection(provider) -> None:
    async def until_close(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b'HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n{"error":"Client not connected"}')
        return False

    server = await provider(until_close)
    client = ProviderClient(server.socket)
    assert await client.call("POST", "/messages", b"{}") == (
        503,
        b'{"error":"Client not connected"}',
        "application/json",
    )
    assert await client.call("POST", "/messages", b"{}") == (
        503,
        b'{"error":"Client not connected"}',
        "application/json",
    )
    assert server.connections == 2  # not kept: the body ended with it
    await client.close()


async def test_a_kept_connection_the_provider_closed_is_replaced_once(provider) -> None:
    server = await provider(json_answer())
    client = ProviderClient(server.socket)
    await client.call("GET", "/health")
    server.writers[0].close()  # e.g. the provider restarted its server

    assert (await client.call("GET", "/health"))[0] == 200
    assert server.connections == 2
    await client.close()


async def test_nobody_listening_is_unavailable(tmp_path: Path) -> None:
    client = ProviderClient(tmp_path / "nobody.sock")
    with pytest.raises(ProviderUnavailable):
        await client.call("GET", "/health")


async def test_no_answer_in_time_is_unavailable_and_the_connection_is_not_reused(provider) -> None:
    calls = 0

    async def first_never(head: bytes, writer: asyncio.StreamWriter) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.get_running_loop().create_future()  # hangs until the connection is dropped
        return await json_answer()(head, writer)

    server = await provider(first_never)
    client = ProviderClient(server.socket)
    with pytest.raises(ProviderUnavailable, match=r"no answer within 0\.2 s"):
        await client.call("GET", "/health", timeout=0.2)
    assert (await client.call("GET", "/health"))[0] == 200
    assert server.connections == 2
    await client.close()


@pytest.mark.parametrize(
    ("response", "then_close"),
    [
        (b"SMTP ready\r\n\r\n", False),
        (b"HTTP/1.1 abc OK\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", False),
        (b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial"', True),
    ],
    ids=["not-http", "bad-status", "bad-length", "bad-chunk", "body-cut-short"],
)
async def test_a_malformed_answer_is_unavailable(provider, response: bytes, then_close: bool) -> None:
    async def nonsense(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(response)
        return not then_close

    server = await provider(nonsense)
    client = ProviderClient(server.socket)
    with pytest.raises(ProviderUnavailable):
        await client.call("GET", "/health", timeout=2)
    await client.close()


async def test_a_closed_client_refuses_calls_and_fails_those_in_flight(provider) -> None:
    async def never(head: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.get_running_loop().create_future()
        return False

    server = await provider(never)
    client = ProviderClient(server.socket)
    in_flight = asyncio.create_task(client.call("GET", "/events?wait=20", timeout=30))

    async def arrived() -> bool:
        return bool(server.requests)

    await wait_until(arrived, timeout=5, what="the request reached the provider")
    await client.close()

    with pytest.raises(ProviderUnavailable):
        await asyncio.wait_for(in_flight, 5)
    with pytest.raises(ProviderUnavailable):
        await client.call("GET", "/health")
