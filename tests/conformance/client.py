"""A small client of one provider container under test, speaking the provider contract over its socket."""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiodocker.containers import DockerContainer
from wgs_kit.waiting import wait_until

SANDBOX_REPOSITORY = "wgs-provider-sandbox"
STATES = {"starting", "qr", "connected", "disconnected", "failed"}


def is_sandbox_image(image: str) -> bool:
    """True when `image` names the sandbox provider (any registry or tag)."""
    return image.rsplit("/", 1)[-1].split("@")[0].split(":")[0] == SANDBOX_REPOSITORY


@dataclass
class ProviderUnderTest:
    """One running provider container and an HTTP client on its unix socket."""

    image: str
    phone: str
    socket: Path
    http: httpx.AsyncClient
    container: DockerContainer

    async def get(self, path: str, **params: Any) -> httpx.Response:
        """GET `path` with query `params`."""
        return await self.http.get(path, params=params)

    async def post(self, path: str, body: Any = None) -> httpx.Response:
        """POST `body` as JSON (no body when None)."""
        return await self.http.post(path, json=body) if body is not None else await self.http.post(path)

    @property
    def is_sandbox(self) -> bool:
        """True for the sandbox image."""
        return is_sandbox_image(self.image)

    async def raw_status(self, data: bytes, *, then_closed: bool = False, timeout: float = 10) -> int:
        """Send raw bytes on a new connection; the status code of the answer.

        With `then_closed`, also check that the provider closes the connection after the answer.
        """
        reader, writer = await asyncio.open_unix_connection(str(self.socket))
        try:
            writer.write(data)
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), timeout)
            if then_closed:
                try:
                    await asyncio.wait_for(reader.read(), timeout)  # the rest, up to the end of the connection
                except TimeoutError:
                    raise AssertionError(f"connection still open {timeout:g} s after {status_line!r}") from None
        finally:
            writer.close()
        return int(status_line.split()[1])

    async def health(self) -> dict[str, Any]:
        """`GET /health`, checked for the contract's shape."""
        response = await self.get("/health")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["state"] in STATES
        assert body["reason"] is None or isinstance(body["reason"], str)
        assert body["phone_id"] is None or isinstance(body["phone_id"], str)
        return body

    async def wait_healthy(self, timeout: float = 30) -> dict[str, Any]:
        """Wait until `/health` answers over the socket."""

        async def answered() -> dict[str, Any] | None:
            try:
                return await self.health()
            except httpx.TransportError:
                return None

        return await wait_until(answered, timeout=timeout, what=f"{self.image} answering /health")

    async def wait_state(self, state: str, timeout: float = 30) -> dict[str, Any]:
        """Wait until `/health` shows `state`."""

        async def reached() -> dict[str, Any] | None:
            health = await self.health()
            return health if health["state"] == state else None

        return await wait_until(reached, timeout=timeout, what=f"state {state}")

    async def events(self, after: int = 0, wait: float = 0) -> dict[str, Any]:
        """`GET /events`, checked: 200, seq increasing and above `after`."""
        response = await self.get("/events", after=after, wait=wait)
        assert response.status_code == 200, response.text
        page = response.json()
        seqs = [event["seq"] for event in page["events"]]
        assert seqs == sorted(set(seqs))
        assert all(after < seq <= page["last_seq"] for seq in seqs)
        return page

    async def wait_event(
        self, kind: str, after: int, where: Callable[[dict[str, Any]], bool] = lambda data: True, timeout: float = 30
    ) -> dict[str, Any]:
        """The first event of `kind` after seq `after` whose data satisfies `where`."""
        cursor = after

        async def found() -> dict[str, Any] | None:
            nonlocal cursor
            page = await self.events(cursor, wait=1)
            for event in page["events"]:
                cursor = event["seq"]
                if event["type"] == kind and where(event["data"]):
                    return event
            return None

        return await wait_until(found, timeout=timeout, what=f"a {kind} event")

    async def last_seq(self) -> int:
        """The provider's highest sequence number so far."""
        return (await self.events(after=0))["last_seq"]

    async def pair(self) -> dict[str, Any]:
        """Pair through the sandbox's simulated phone (scan the current QR); the `connection` event."""
        await self.wait_state("qr")
        after = await self.last_seq()
        qr = (await self.get("/qr")).json()["qr"]
        response = await self.post("/sandbox/scan", {"qr": qr})
        assert response.status_code == 200, response.text
        assert response.json() == {"state": "connected", "phone_id": self.phone}
        return await self.wait_event("connection", after, lambda data: data["state"] == "connected")

    async def restart(self) -> None:
        """`docker restart` the container and wait until it answers again."""
        await self.container.restart(t=10)
        await self.wait_healthy()
