"""A webhook receiver on 127.0.0.1 for tests, and the documented signature check."""

import asyncio
import json
import runpy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from wgs_devstack.processes import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RECEIVER_EXAMPLE = runpy.run_path(str(PROJECT_ROOT / "docs" / "webhook_receiver_example.py"))
verify_webhook: Callable[..., None] = RECEIVER_EXAMPLE["verify_webhook"]
InvalidWebhook: type[Exception] = RECEIVER_EXAMPLE["InvalidWebhook"]


@dataclass
class Hit:
    """One request the receiver got, and what it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int = 0

    @property
    def event_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Behaviour:
    """How one path answers: `statuses` first (one per request), then 200; each after `delay` seconds,
    with a `Retry-After: <retry_after>` header when it is set."""

    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    retry_after: str | None = None


class Receiver:
    """A webhook receiver on 127.0.0.1 with programmable answers per path; records every request."""

    def __init__(self) -> None:
        self.port = free_port()
        self.hits: list[Hit] = []
        self.behaviours: dict[str, Behaviour] = {}
        self._runner: web.AppRunner | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{name}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        hit = Hit(name, {k.lower(): v for k, v in request.headers.items()}, await request.read(), time.monotonic())
        self.hits.append(hit)
        behaviour = self.behaviours.setdefault(name, Behaviour())
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)  # deliberately slow endpoint, not a wait
        hit.status = behaviour.statuses.pop(0) if behaviour.statuses else 200
        headers = {"Retry-After": behaviour.retry_after} if behaviour.retry_after else {}
        return web.Response(status=hit.status, text="nope" if hit.status >= 300 else "ok", headers=headers)

    def requests(self, name: str) -> list[Hit]:
        return [h for h in self.hits if h.path == name]

    def delivered(self, name: str) -> list[str]:
        """Event ids answered with 2xx on `name`, deduplicated by webhook-id, in arrival order."""
        return list(dict.fromkeys(h.event_id for h in self.requests(name) if 200 <= h.status < 300))
