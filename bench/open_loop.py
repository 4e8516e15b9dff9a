"""Open-loop HTTP load: requests start on a fixed schedule, whatever the answers do.

A closed loop (wrk) waits for an answer before its next request, so a slow server lowers the
rate instead of showing as latency. An open loop keeps the schedule: a request is due every
1/rate seconds, on an idle keep-alive connection or on a new one.

Latency is measured from the moment a request was due, not from when it went out. When the
generator itself falls behind, that counts against the server, never in its favour (the
"coordinated omission" of naive load generators).

The generator is lean on purpose, because it shares the machine with the server it measures:
- plain asyncio protocols speaking HTTP/1.1 with keep-alive;
- the request's bytes are built once;
- no pause of its own counts against the server: Python's cyclic garbage collector is off while
  requests are due and answered (`collector_paused`; a run allocates little). A full collection
  of the benchmark process, which also holds the whole stack's clients, took 66 ms in the middle
  of a run at 500/s: 30 of its 50 slowest answers.

At 500 requests/s against the gateway it uses 11-12% of one core (the kernel's loopback work
for its requests included); the aiohttp client used before used 25-29%, on a machine of two.
Answers must carry a `Content-Length` (uvicorn's do); anything else counts as a failure.
"""

import asyncio
import contextlib
import gc
import json
import statistics
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

from bench.stack import percentile

MAX_SECONDS = 60.0  # how long the answers of a run may take after its last request is due
WARM_CONNECTIONS = 32  # opened before the first request is due, so the run does not pay for them
MAX_CONNECTIONS = 512  # a request due when this many are busy fails


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, run: "_Run") -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.due: float | None = None  # when its request in flight was due; None when idle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            answer = parse_response(self.buffer)
        except ValueError:
            self.buffer.clear()
            self.close()
            return
        if answer is not None:
            status, length = answer
            del self.buffer[:length]
            self.run.answered(self, status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.run.lost(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def parse_response(buffer: bytearray) -> tuple[int, int] | None:
    """(status, bytes taken) of the first whole response in `buffer`; None while it is incomplete.

    Raises ValueError for what is not an HTTP/1.1 response with a `Content-Length`.
    """
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = bytes(buffer[:head_end]).lower()
    if not head.startswith(b"http/1.1 "):
        raise ValueError("not an HTTP/1.1 response")
    status = int(head[9:12])
    marker = head.find(b"\r\ncontent-length:")
    if marker < 0:
        raise ValueError("response without Content-Length")
    line_end = head.find(b"\r\n", marker + 2)
    length = int(head[marker + 17 : line_end if line_end >= 0 else len(head)])
    total = head_end + 4 + length
    return (status, total) if len(buffer) >= total else None


@dataclass
class _Run:
    """The bookkeeping of one run: idle connections, requests in flight, latencies."""

    loop: asyncio.AbstractEventLoop
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    idle: list[_Connection] = field(default_factory=list)
    open: set[_Connection] = field(default_factory=set)
    in_flight: int = 0
    all_answered: asyncio.Event = field(default_factory=asyncio.Event)

    def answered(self, connection: _Connection, status: int) -> None:
        if connection.due is None:
            connection.close()  # an answer nobody asked for
            return
        if status < 300:
            self.latencies.append(self.loop.time() - connection.due)
        else:
            self.failures += 1
        self._settled(connection)
        self.idle.append(connection)

    def lost(self, connection: _Connection) -> None:
        self.open.discard(connection)
        if connection in self.idle:
            self.idle.remove(connection)
        if connection.due is not None:
            self.failures += 1
            self._settled(connection)

    def sent(self, connection: _Connection, due: float, request: bytes) -> None:
        assert connection.transport is not None
        connection.due = due
        self.in_flight += 1
        self.all_answered.clear()
        connection.transport.write(request)

    def _settled(self, connection: _Connection) -> None:
        connection.due = None
        self.in_flight -= 1
        if not self.in_flight:
            self.all_answered.set()


def build_request(url: str, body: dict, headers: dict[str, str]) -> tuple[str, int, bytes]:
    """(host, port, the bytes of one POST of `body` as JSON to `url`)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"only http:// URLs: {url}")
    port = parts.port or 80
    payload = json.dumps(body).encode()
    lines = [
        f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
        f"Host: {parts.hostname}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return parts.hostname, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off (after one collection) until the block ends, then as it was."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


async def open_loop(url: str, body: dict, headers: dict[str, str], rate: float, seconds: float) -> dict:
    """POST `body` to `url` `rate` times a second for `seconds`; latency of each, from when it was due."""
    host, port, request = build_request(url, body, headers)
    loop = asyncio.get_running_loop()
    run = _Run(loop)

    async def connect() -> _Connection:
        _, connection = await loop.create_connection(lambda: _Connection(run), host, port)
        run.open.add(connection)
        return connection

    run.idle.extend(await asyncio.gather(*(connect() for _ in range(WARM_CONNECTIONS))))
    count = max(1, int(rate * seconds))
    with collector_paused():
        return await _offer(run, connect, request, rate, count)


async def _offer(
    run: _Run, connect: Callable[[], Awaitable[_Connection]], request: bytes, rate: float, count: int
) -> dict:
    """Send `count` requests on the schedule, wait for their answers, and summarize the run."""
    loop = run.loop
    start = loop.time()
    try:
        for index in range(count):
            due = start + index / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                if run.idle:
                    connection = run.idle.pop()
                elif len(run.open) < MAX_CONNECTIONS:
                    connection = await connect()
                else:
                    run.failures += 1
                    continue
            except OSError:
                run.failures += 1
                continue
            run.sent(connection, due, request)
        if run.in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.all_answered.wait(), MAX_SECONDS)
        run.failures += run.in_flight
    finally:
        for connection in list(run.open):
            connection.close()
    return {
        "offered_per_second": round(rate, 1),
        "completed": len(run.latencies),
        "failed": run.failures,
        "p50_ms": round(statistics.median(run.latencies) * 1000, 1) if run.latencies else None,
        "p99_ms": round(percentile(run.latencies, 0.99) * 1000, 1) if run.latencies else None,
    }
