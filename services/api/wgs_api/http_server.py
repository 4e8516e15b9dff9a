"""The API's HTTP/1.1 protocol: uvicorn's httptools protocol, sending a response's head and body in one write.

uvicorn writes a response's status line and headers when the app starts the response, and its
body in a second write: two system calls and two wake-ups of the client for every response,
though the body follows within microseconds. At 500 sends/s these two writes were 9% of the
API's CPU. `OneWriteHttpToolsProtocol` gives each response cycle a transport that holds the head
until the body's first write and sends both in one (aiohttp's server does the same for small
responses). Everything else the cycle writes goes out as before:

- a `100 Continue` at once (it is written before the response starts);
- a HEAD response, which has no body write, is not held;
- a response the app abandons after starting it gets its head written when its connection is
  closed, as uvicorn had written it.

Used by `wgs_api.__main__` (`uvicorn.run(..., http=OneWriteHttpToolsProtocol)`).
"""

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle


class HeadWithBody(asyncio.Transport):
    """The transport of one response cycle: holds the response head until the body's first write.

    A response cycle calls `write`, `close` and `is_closing` on its transport; they go to the
    connection's transport, the head joined to the next write.
    """

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        super().__init__()
        self._transport = transport
        self._cycle = cycle
        self._head: bytes | None = None
        self._head_seen = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Hold the response's first write (its head); send it with the next one."""
        if not self._head_seen and self._cycle.response_started:
            self._head_seen = True
            self._head = bytes(data)
            return
        if self._head is not None:
            data, self._head = self._head + data, None
        self._transport.write(data)

    def close(self) -> None:
        """Write a head still held, then close the connection."""
        if self._head is not None:
            self._transport.write(self._head)
            self._head = None
        self._transport.close()

    def is_closing(self) -> bool:
        """Whether the connection is closing."""
        return self._transport.is_closing()


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose responses leave in one write (see the module)."""

    def on_headers_complete(self) -> None:
        """Start the request's cycle as uvicorn does, with a `HeadWithBody` transport."""
        previous = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not previous and self.scope["method"] != "HEAD":  # not an upgrade, and a body will follow
            cycle.transport = HeadWithBody(self.transport, cycle)
