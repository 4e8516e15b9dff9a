"""The benchmarks' open-loop load generator (`bench.open_loop`) against a small HTTP server on loopback."""

import asyncio
import gc
import time
from collections.abc import AsyncIterator

import pytest

from bench.open_loop import build_request, open_loop, parse_response

ANSWER_DELAY_SECONDS = 0.02
COLLECTOR_STATES: list[bool] = []  # gc.isenabled() as the server saw it, one per request


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep-alive HTTP/1.1: the path says how to answer (`/ok`, `/slow`, `/error`, `/no-length`, `/hang-up`)."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1]
            lines = head.split(b"\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            COLLECTOR_STATES.append(gc.isenabled())
            if path == b"/hang-up":
                break
            if path == b"/slow":
                await asyncio.sleep(ANSWER_DELAY_SECONDS)
            if path == b"/no-length":
                writer.write(b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\n\r\n{}")
            else:
                status = b"500 Internal Server Error" if path == b"/error" else b"200 OK"
                writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 2\r\n\r\n{}")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def test_every_request_is_answered_at_the_offered_rate(base_url: str) -> None:
    started = time.monotonic()
    result = await open_loop(f"{base_url}/ok", {"to": "1"}, {"Authorization": "Bearer x"}, rate=200, seconds=0.5)
    assert result["completed"] == 100
    assert result["failed"] == 0
    assert time.monotonic() - started >= 0.49  # the schedule spreads them, not a burst
    assert result["p50_ms"] < 50


async def test_latency_includes_the_servers_time(base_url: str) -> None:
    result = await open_loop(f"{base_url}/slow", {}, {}, rate=100, seconds=0.3)
    assert result["completed"] == 30
    assert result["p50_ms"] >= ANSWER_DELAY_SECONDS * 1000


async def test_latency_counts_from_when_a_request_was_due(base_url: str) -> None:
    """A generator that falls behind its schedule counts the lag against the server.

    The event loop is stalled for 150 ms (a stand-in for a generator starved of CPU): the requests
    due meanwhile go out late, and their latency includes the wait. Measured from when they went
    out, every latency would be about a millisecond.
    """
    asyncio.get_running_loop().call_later(0.1, time.sleep, 0.15)
    result = await open_loop(f"{base_url}/ok", {}, {}, rate=100, seconds=0.5)
    assert result["completed"] == 50
    assert result["p99_ms"] >= 100


async def test_the_garbage_collector_pauses_nothing_during_a_run(base_url: str) -> None:
    """The generator's own collection pauses would count against the server: the collector is
    off while requests are due (the server runs in this process, so it sees the same state), and
    back on after."""
    COLLECTOR_STATES.clear()
    assert gc.isenabled()
    result = await open_loop(f"{base_url}/ok", {}, {}, rate=100, seconds=0.2)
    assert result["completed"] == 20
    assert COLLECTOR_STATES == [False] * 20
    assert gc.isenabled()


async def test_a_collector_already_off_stays_off(base_url: str) -> None:
    gc.disable()
    try:
        await open_loop(f"{base_url}/ok", {}, {}, rate=100, seconds=0.05)
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize("path", ["/error", "/no-length", "/hang-up"])
async def test_answers_that_are_not_a_success_count_as_failures(base_url: str, path: str) -> None:
    result = await open_loop(f"{base_url}{path}", {}, {}, rate=100, seconds=0.1)
    assert result["completed"] == 0
    assert result["failed"] == 10
    assert result["p50_ms"] is None


def test_a_response_is_parsed_only_once_it_is_whole() -> None:
    first = b'HTTP/1.1 202 Accepted\r\nContent-Length: 4\r\n\r\n{"a"'
    assert parse_response(bytearray(first[:20])) is None
    assert parse_response(bytearray(first[:-1])) is None
    assert parse_response(bytearray(first + b"HTTP/1.1 200 OK")) == (202, len(first))
    with pytest.raises(ValueError, match="not an HTTP"):
        parse_response(bytearray(b"SSH-2.0-OpenSSH\r\n\r\n"))


def test_the_request_is_built_once_with_its_headers() -> None:
    host, port, request = build_request("http://127.0.0.1:8080/api/x?y=1", {"to": "1"}, {"Authorization": "Bearer k"})
    assert (host, port) == ("127.0.0.1", 8080)
    assert request.startswith(b"POST /api/x?y=1 HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer k\r\n" in request
    assert request.endswith(b'\r\n\r\n{"to": "1"}')
    with pytest.raises(ValueError, match="only http"):
        build_request("https://example.org/", {}, {})
