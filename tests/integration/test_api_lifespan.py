"""The API application's start-up, in this process, on the real NATS and PostgreSQL."""

import gc
from collections.abc import Iterator

import pytest
from litestar.testing import AsyncTestClient
from wgs_api.app import create_app
from wgs_api.config import Settings


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
