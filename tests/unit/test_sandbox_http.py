"""The sandbox's HTTP/1.1 server on a real unix socket: keep-alive and the transport's error answers."""

import asyncio
import functools
import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from wgs_sandbox.http import MAX_BODY, Request, Response, serve_connection


async def echo(request: Request) -> Response:
    if request.path == "/boom":
        raise RuntimeError("boom")
    return Response(
        200, {"method": request.method, "path": request.path, "query": request.query, "size": len(request.body)}
    )


@pytest.fixture
async def socket_path() -> AsyncIterator[str]:
    folder = Path(tempfile.mkdtemp(prefix="wgs-h-", dir="/tmp"))  # unix socket paths must stay short
    path = str(folder / "s.sock")
    server = await asyncio.start_unix_server(functools.partial(serve_connection, echo), path=path)
    yield path
    server.close()
    shutil.rmtree(folder)


async def exchange(path: str, raw: bytes, answers: int = 1) -> list[tuple[int, dict[str, str], dict]]:
    """Send `raw` on one connection; read `answers` responses, then check the server closed or kept it."""
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(raw)
    await writer.drain()
    found = []
    for _ in range(answers):
        status_line = await reader.readline()
        headers = {}
        while (line := await reader.readline()) != b"\r\n":
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = json.loads(await reader.readexactly(int(headers["content-length"])))
        found.append((int(status_line.split()[1]), headers, body))
    writer.close()
    return found


async def test_keep_alive_answers_requests_in_order(socket_path):
    raw = b"GET /a?x=1 HTTP/1.1\r\nHost: p\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
    [first, second] = await exchange(socket_path, raw, answers=2)
    assert first[2] == {"method": "GET", "path": "/a", "query": {"x": ["1"]}, "size": 0}
    assert second[2] == {"method": "POST", "path": "/b", "query": {}, "size": 3}


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (f"POST /m HTTP/1.1\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode(), 413),
        (b"POST /m HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
        (b"POST /m HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\n: no name\r\n\r\n", 400),
    ],
)
async def test_malformed_requests_are_answered_then_the_connection_closes(socket_path, raw, status):
    reader, writer = await asyncio.open_unix_connection(socket_path)
    writer.write(raw)
    answer = await reader.read()  # until the server closes
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == str(status).encode()
    assert b"Connection: close" in head
    assert "error" in json.loads(body)


async def test_a_failing_handler_answers_500_and_keeps_the_connection(socket_path):
    [boom, ok] = await exchange(socket_path, b"GET /boom HTTP/1.1\r\n\r\nGET /ok HTTP/1.1\r\n\r\n", answers=2)
    assert (boom[0], boom[2]) == (500, {"error": "internal error"})
    assert ok[0] == 200
