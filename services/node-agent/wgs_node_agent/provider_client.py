"""HTTP/1.1 to one provider over its unix socket.

aiohttp rather than httpx: httpcore's connection pool costs CPU per request that grows
with the pool, and every send, event page and receipt of an instance passes here.
"""

import asyncio
from pathlib import Path

import aiohttp

PROVIDER_BASE_URL = "http://provider"
JSON = "application/json"


class ProviderUnavailable(Exception):
    """The provider's socket does not answer (starting, stopped or crashed)."""


class ProviderClient:
    """Calls the provider contract of one instance."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _client(self) -> aiohttp.ClientSession:
        if self._closed:  # a call still running when its session stopped must not open a new pool
            raise ProviderUnavailable("the instance's session on this node stopped")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                base_url=PROVIDER_BASE_URL,
                connector=aiohttp.UnixConnector(path=str(self.socket), limit=16),
                timeout=aiohttp.ClientTimeout(total=None),  # each call bounds itself
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    async def call(
        self, method: str, path: str, body: bytes | None = None, *, timeout: float = 10.0
    ) -> tuple[int, bytes, str]:
        """(status, body, content type) of one request; ProviderUnavailable when nobody answers."""
        try:
            async with (
                asyncio.timeout(timeout),
                self._client().request(
                    method, path, data=body, headers={"Content-Type": JSON} if body is not None else None
                ) as response,
            ):
                return response.status, await response.read(), response.headers.get("Content-Type", JSON)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ProviderUnavailable(repr(exc)) from exc

    async def close(self) -> None:
        """Close the connection pool; later calls fail with ProviderUnavailable."""
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None
