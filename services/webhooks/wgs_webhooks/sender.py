"""HTTP POSTs to tenants' endpoints, connecting only to addresses they may reach.

Unless private addresses are allowed, every new connection resolves the host
and refuses non-public addresses right before connecting (a check made once at
creation would not survive a DNS change), then connects to the address it checked.
"""

import asyncio
import time
import typing
from dataclasses import dataclass

import httpcore
from wgs_kit.urls import RefusedUrl, parse_url, public_addresses

from wgs_webhooks.retry import parse_retry_after

MAX_BODY_READ = 64 * 1024
ERROR_SNIPPET = 200


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to public addresses, checked at connect time."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve `host`, refuse it unless every address is public, connect to the first that answers."""
        addresses = await public_addresses(host, port)
        for address in addresses[:-1]:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError:
                continue
        return await self._inner.connect_tcp(addresses[-1], port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Never: webhooks go over TCP."""
        raise RefusedUrl("unix sockets are not webhook targets")

    async def sleep(self, seconds: float) -> None:
        """Sleep as the wrapped backend does."""
        await self._inner.sleep(seconds)


@dataclass(frozen=True, kw_only=True)
class Answer:
    """What one POST got: a status code, or an error (with `refused` when retrying cannot help)."""

    status_code: int | None
    error: str | None
    latency_ms: int
    retry_after: float | None = None
    refused: bool = False


class Sender:
    """Posts webhook bodies over a shared connection pool, each attempt bounded by `timeout_seconds`."""

    def __init__(self, *, timeout_seconds: float, allow_private: bool, max_connections: int) -> None:
        self.timeout_seconds = timeout_seconds
        self.pool = httpcore.AsyncConnectionPool(
            max_connections=max_connections,
            keepalive_expiry=30.0,
            network_backend=None if allow_private else PublicOnlyBackend(),
        )

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.pool.aclose()

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> Answer:
        """POST `body` to `url`; never raises for what the endpoint or the network did."""
        started = time.monotonic()

        def elapsed_ms() -> int:
            return round((time.monotonic() - started) * 1000)

        try:
            parse_url(url)
            async with asyncio.timeout(self.timeout_seconds):
                async with self.pool.stream("POST", url, headers=list(headers.items()), content=body) as response:
                    answer = await read_answer(response)
        except RefusedUrl as exc:
            return Answer(status_code=None, error=f"refused: {exc}", latency_ms=elapsed_ms(), refused=True)
        except TimeoutError:
            return Answer(status_code=None, error=f"timeout after {self.timeout_seconds:g}s", latency_ms=elapsed_ms())
        except Exception as exc:
            return Answer(status_code=None, error=f"{type(exc).__name__}: {exc}"[:500], latency_ms=elapsed_ms())
        status_code, error, retry_after = answer
        return Answer(status_code=status_code, error=error, latency_ms=elapsed_ms(), retry_after=retry_after)


async def read_answer(response: httpcore.Response) -> tuple[int, str | None, float | None]:
    """(status, error for a non-2xx with the start of its body, Retry-After seconds); reads at most 64 KiB."""
    body = b""
    async for chunk in response.aiter_stream():
        body += chunk
        if len(body) >= MAX_BODY_READ:
            break
    retry_after = next((v.decode("latin-1") for k, v in response.headers if k.lower() == b"retry-after"), None)
    error = None
    if not 200 <= response.status < 300:
        snippet = body[:ERROR_SNIPPET].decode(errors="replace").strip()
        error = f"HTTP {response.status}" + (f": {snippet}" if snippet else "")
    return response.status, error, parse_retry_after(retry_after)
