"""The API application's start-up, in this process, on the real NATS and PostgreSQL; its HTTP
server's keep-alive, in a process of its own."""

import asyncio
import gc
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient
from wgs_api.app import create_app
from wgs_api.config import Settings
from wgs_devstack.processes import free_port
from wgs_devstack.services import ApiService


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Give the test process its garbage collection back afterwards."""
    gc.unfreeze()
    yield
    gc.unfreeze()


async def test_startup_freezes_the_heap_it_made(
    migrated: dict[str, str], monkeypatch: pytest.MonkeyPatch, unfrozen: None
) -> None:
    """Full collections skip what start-up made (`wgs_kit.lifecycle.freeze_startup_heap`)."""
    monkeypatch.setenv("DATABASE_URL", migrated["DATABASE_URL"])
    monkeypatch.setenv("NATS_URL", migrated["NATS_URL"])
    assert gc.get_freeze_count() == 0
    async with AsyncTestClient(create_app(Settings.from_env())) as client:
        assert gc.get_freeze_count() > 10_000
        assert (await client.get("/")).status_code == 200


async def test_the_api_closes_a_connection_idle_for_its_keep_alive_seconds(
    migrated: dict[str, str], work_dir: Path
) -> None:
    port = free_port()
    api = ApiService({**migrated, "WGS_API_KEEP_ALIVE_SECONDS": "1"}, work_dir / "logs", port, name="api-keep-alive")
    await api.ready()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        assert head.startswith(b"HTTP/1.1 200")
        answered = time.monotonic()
        rest = await asyncio.wait_for(reader.read(), timeout=10)  # the body, then the end when the API closes it
        idle = time.monotonic() - answered
        writer.close()
        assert rest == b'{"status":"ok"}'
        assert 0.9 <= idle < 5  # closed after the configured second, not uvicorn's 5 s nor the default 75 s
    finally:
        await api.stop()
