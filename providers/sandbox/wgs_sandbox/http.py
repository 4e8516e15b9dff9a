"""A minimal HTTP/1.1 server over a unix socket (the provider contract's transport).

Enough for the node agent's requests: one request line, headers, an optional
Content-Length body, keep-alive. JSON in and out.
"""

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)
MAX_BODY = 16 * 1024 * 1024
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    413: "Payload Too Large",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class Response:
    """A JSON response."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        """Status line, headers and body as bytes."""
        payload = json.dumps(self.body, separators=(",", ":")).encode()
        head = [
            f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Status')}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
        ]
        head += [f"{k}: {v}" for k, v in self.headers.items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


class HttpError(Exception):
    """An error answer: `{"error": ..., "field"?: ..., **extra}` with its status."""

    def __init__(self, status: int, error: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.body: dict[str, Any] = {"error": error, **({"field": field} if field else {}), **extra}

    def response(self) -> Response:
        """The error as a response."""
        return Response(self.status, self.body)


@dataclass
class Request:
    """One parsed request."""

    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object (`{}` when empty); 400 when it is not one."""
        if not self.body.strip():
            return {}
        try:
            value = json.loads(self.body)
        except ValueError:
            raise HttpError(400, "body is not valid JSON") from None
        if not isinstance(value, dict):
            raise HttpError(400, "body must be a JSON object")
        return value


Handler = Callable[[Request], Awaitable[Response]]


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """Parse the next request on a connection; None at end of stream, HttpError when malformed."""
    line = await reader.readline()
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "malformed request line")
    method, target, _ = parts
    headers: dict[str, str] = {}
    while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, colon, value = raw.decode("latin-1").partition(":")
        if not colon or not name.strip():
            raise HttpError(400, "malformed header line")
        headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise HttpError(411, "send the body with Content-Length")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise HttpError(400, "bad Content-Length") from None
    if length < 0:
        raise HttpError(400, "bad Content-Length")
    if length > MAX_BODY:
        raise HttpError(413, f"body over {MAX_BODY} bytes")
    body = await reader.readexactly(length) if length else b""
    url = urlsplit(target)
    return Request(method.upper(), url.path, parse_qs(url.query), headers, body)


async def serve_connection(handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer requests on one connection until the client closes it or sends a malformed request."""
    try:
        while True:
            try:
                request = await read_request(reader)
            except HttpError as exc:  # the rest of the stream cannot be trusted: answer, then close
                writer.write(Response(exc.status, exc.body, {"Connection": "close"}).encode())
                await writer.drain()
                break
            if request is None:
                break
            try:
                response = await handler(request)
            except Exception:
                log.exception("handler failed for %s %s", request.method, request.path)
                response = Response(500, {"error": "internal error"})
            writer.write(response.encode())
            await writer.drain()
            if request.headers.get("connection", "").lower() == "close":
                break
    except (ValueError, asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
