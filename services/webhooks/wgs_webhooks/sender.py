"""HTTP POSTs to tenants' endpoints, connecting only to addresses they may reach.

Unless private addresses are allowed, every new connection resolves the host
and refuses non-public addresses right before connecting (a check made once at
creation would not survive a DNS change), then connects to the address it checked;
a URL naming an address directly is judged by that address, read as aiohttp reads it
(`wgs_kit.urls.parse_url`: yarl's host, so `http://①②⑦.0.0.1/` is 127.0.0.1).

aiohttp's connection pool: its cost per request does not grow with the number of
open connections (httpcore's pool scans every connection for every request, which
made the HTTP client the webhooks service's bottleneck at a few dozen endpoints).
"""

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from wgs_kit.urls import RefusedUrl, is_public, parse_url, public_addresses

from wgs_webhooks.retry import parse_retry_after

MAX_BODY_READ = 64 * 1024
ERROR_SNIPPET = 200
KEEPALIVE_SECONDS = 30.0


class PublicOnlyResolver(AbstractResolver):
    """An aiohttp resolver that answers only with public addresses (else `RefusedUrl`), asked for
    every new connection (the connector keeps no DNS cache)."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve `host`; refuse it unless every address is public."""
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in await public_addresses(host, port)
        ]

    async def close(self) -> None:
        """Nothing to release."""


def refuse_private_literal(host: str) -> None:
    """`RefusedUrl` when `host` is an address literal that is not public (names are checked on connect)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    if not is_public(address):
        raise RefusedUrl(f"{host} is not a public address")


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
        self.allow_private = allow_private
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # made in the running loop, on first use
            connector = aiohttp.TCPConnector(
                limit=self.max_connections,
                limit_per_host=0,
                use_dns_cache=False,
                resolver=None if self.allow_private else PublicOnlyResolver(),
                keepalive_timeout=KEEPALIVE_SECONDS,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),  # bounded by asyncio.timeout in post()
                auto_decompress=True,
                trust_env=False,  # no proxies from the environment
            )
        return self._session

    async def close(self) -> None:
        """Close every pooled connection."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> Answer:
        """POST `body` to `url`; never raises for what the endpoint or the network did."""
        started = time.monotonic()

        def elapsed_ms() -> int:
            return round((time.monotonic() - started) * 1000)

        try:
            target = parse_url(url)
            if not self.allow_private:
                refuse_private_literal(target.host)
            async with asyncio.timeout(self.timeout_seconds):
                async with self._client().post(url, data=body, headers=headers, allow_redirects=False) as response:
                    answer = await read_answer(response)
        except (RefusedUrl, aiohttp.InvalidURL) as exc:  # InvalidURL: e.g. a legacy numeric IPv4 form
            return Answer(status_code=None, error=f"refused: {exc}", latency_ms=elapsed_ms(), refused=True)
        except TimeoutError:
            return Answer(status_code=None, error=f"timeout after {self.timeout_seconds:g}s", latency_ms=elapsed_ms())
        except Exception as exc:
            return Answer(status_code=None, error=f"{type(exc).__name__}: {exc}"[:500], latency_ms=elapsed_ms())
        status_code, error, retry_after = answer
        return Answer(status_code=status_code, error=error, latency_ms=elapsed_ms(), retry_after=retry_after)


async def read_answer(response: aiohttp.ClientResponse) -> tuple[int, str | None, float | None]:
    """(status, error for a non-2xx with the start of its body, Retry-After seconds); reads at most 64 KiB."""
    body = b""
    while len(body) < MAX_BODY_READ:
        chunk = await response.content.read(MAX_BODY_READ - len(body))
        if not chunk:
            break
        body += chunk
    error = None
    if not 200 <= response.status < 300:
        snippet = body[:ERROR_SNIPPET].decode(errors="replace").strip()
        error = f"HTTP {response.status}" + (f": {snippet}" if snippet else "")
    return response.status, error, parse_retry_after(response.headers.get("Retry-After"))
