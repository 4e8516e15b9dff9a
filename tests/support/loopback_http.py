"""A small keep-alive HTTP/1.1 server on loopback, in the test's own process: what the benchmarks'
load generators (`bench.open_loop`, wrk) are tested against."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

ConnectionHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
ANSWER_DELAY_SECONDS = 0.02


async def serve(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, on_request: Callable[[], None] | None = None
) -> None:
    """Keep-alive HTTP/1.1; the path says how to answer: `/ok`, `/slow`, `/error`, `/no-length`,
    `/hang-up`, `/in-pieces` (the answer in two writes, 20 ms apart). `on_request` is called as each
    request arrives."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if on_request is not None:
                on_request()
            path = head.split(b" ", 2)[1]
            lines = head.split(b"\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            if path == b"/hang-up":
                break
            if path == b"/slow":
                await asyncio.sleep(ANSWER_DELAY_SECONDS)
            answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
            if path == b"/no-length":
                answer = b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\n\r\n{}"
            elif path == b"/error":
                answer = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\n\r\n{}"
            if path == b"/in-pieces":
                writer.write(answer[:20])
                await writer.drain()
                await asyncio.sleep(ANSWER_DELAY_SECONDS)
                answer = answer[20:]
            writer.write(answer)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def serving(handler: ConnectionHandler) -> AsyncIterator[str]:
    """A loopback server running `handler` for each connection; its base URL."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()
