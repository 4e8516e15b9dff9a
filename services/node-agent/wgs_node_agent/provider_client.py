"""HTTP/1.1 to one provider over its unix socket."""

from pathlib import Path

import httpx

PROVIDER_BASE_URL = "http://provider"


class ProviderUnavailable(Exception):
    """The provider's socket does not answer (starting, stopped or crashed)."""


class ProviderClient:
    """Calls the provider contract of one instance."""

    def __init__(self, socket: Path) -> None:
        self.http = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(socket)), base_url=PROVIDER_BASE_URL)

    async def call(
        self, method: str, path: str, body: bytes | None = None, *, timeout: float = 10.0
    ) -> tuple[int, bytes, str]:
        """(status, body, content type) of one request; ProviderUnavailable when nobody answers."""
        try:
            response = await self.http.request(
                method,
                path,
                content=body,
                headers={"content-type": "application/json"} if body is not None else None,
                timeout=timeout,
            )
        except httpx.TransportError as exc:
            raise ProviderUnavailable(repr(exc)) from exc
        return response.status_code, response.content, response.headers.get("content-type", "application/json")

    async def close(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()
