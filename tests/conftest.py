"""Session-wide real infrastructure: NATS with JetStream, PostgreSQL, Docker engines, and the
gateway's services as processes. Nothing here is mocked; everything started is stopped by PID."""

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import nats
import pytest
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from wgs_devstack.docker_engine import DockerEngine
from wgs_devstack.images import build_all, copy_image
from wgs_devstack.nats import EmbeddedNats
from wgs_devstack.postgres import EmbeddedPostgres
from wgs_devstack.processes import free_port
from wgs_devstack.services import ApiService, Service
from wgs_kit.waiting import wait_until

from tests.support.sandbox import SANDBOX_IMAGE
from tests.support.webhooks import Receiver

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENGINE_NAMES = ("n1",)


@pytest.fixture(scope="session")
def work_dir() -> Iterator[Path]:
    """A short-pathed folder for everything the session starts (unix socket paths are short)."""
    path = Path(tempfile.mkdtemp(prefix="wgs-t-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
async def nats_server(work_dir: Path) -> AsyncIterator[EmbeddedNats]:
    """A real nats-server with JetStream."""
    server = EmbeddedNats(work_dir / "nats")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
async def postgres(work_dir: Path) -> AsyncIterator[EmbeddedPostgres]:
    """A real PostgreSQL cluster."""
    server = EmbeddedPostgres(work_dir / "pg", fsync=False)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
async def migrated(nats_server: EmbeddedNats, postgres: EmbeddedPostgres) -> dict[str, str]:
    """Run `wgs-migrate` once; returns the base environment of every service."""
    env = {
        "DATABASE_URL": postgres.dsn,
        "NATS_URL": nats_server.url,
        "WGS_LOG_LEVEL": "INFO",
        "WGS_NODE_TIMEOUT_SECONDS": "4",
        "WGS_HEARTBEAT_SECONDS": "1",
        "WGS_RECONCILE_SECONDS": "3",
        "WGS_LEADER_POLL_SECONDS": "0.3",
        "WGS_RETRY_PENDING_SECONDS": "1",
        "WGS_WEBHOOKS_ALLOW_PRIVATE": "1",
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "wgs_db.migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return env


@pytest.fixture(scope="session")
async def db(migrated: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    """A connection pool for assertions on the database."""
    pool = await asyncpg.create_pool(migrated["DATABASE_URL"], min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def engines(work_dir: Path) -> AsyncIterator[list[DockerEngine]]:
    """Real Docker engines, one per simulated node (one for now), each with the sandbox image."""
    started: list[DockerEngine] = []
    try:
        for name in ENGINE_NAMES:
            engine = DockerEngine(work_dir / f"docker-{name}", name)
            await engine.start()
            started.append(engine)
        await build_all(started[0].host, PROJECT_ROOT, ["sandbox"])
        for engine in started[1:]:
            await copy_image(started[0].host, engine.host, SANDBOX_IMAGE)
        yield started
    finally:
        for engine in started:
            await engine.stop()


@pytest.fixture(scope="session")
async def api(migrated: dict[str, str], work_dir: Path) -> AsyncIterator[ApiService]:
    """The REST API process."""
    service = ApiService(migrated, work_dir / "logs", free_port())
    await service.ready()
    yield service
    await service.stop()


@pytest.fixture
async def client(api: ApiService) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the API."""
    async with httpx.AsyncClient(base_url=api.url, timeout=60) as http:
        yield http


@pytest.fixture(scope="session")
async def scheduler(migrated: dict[str, str], work_dir: Path) -> AsyncIterator[Service]:
    """One scheduler process."""
    service = Service("scheduler", "wgs_scheduler", migrated, work_dir / "logs")
    service.start()
    yield service
    await service.stop()


WEBHOOK_SCHEDULE = "0.2,0.4,0.8,1.6,3.2"  # 6 attempts over about 6 s
WEBHOOK_TIMEOUT_SECONDS = 1.0


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver on 127.0.0.1."""
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
async def js(migrated: dict[str, str]) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(migrated["NATS_URL"])
    yield nc.jetstream()
    await nc.close()


@pytest.fixture(scope="session")
async def webhooks(migrated: dict[str, str], work_dir: Path, js: JetStreamContext) -> AsyncIterator[Service]:
    """The webhooks service, allowed to call 127.0.0.1, with a short schedule and timeout."""
    env = {
        **migrated,
        "WGS_WEBHOOKS_ALLOW_PRIVATE": "1",
        "WGS_WEBHOOKS_SCHEDULE": WEBHOOK_SCHEDULE,
        "WGS_WEBHOOKS_TIMEOUT_SECONDS": str(WEBHOOK_TIMEOUT_SECONDS),
    }
    service = Service("webhooks", "wgs_webhooks", env, work_dir / "logs")
    service.start()

    async def consuming() -> bool:
        try:
            return bool(await js.consumer_info("WGS_EVENTS", "webhooks-fanout"))
        except NotFoundError:
            return False

    await wait_until(consuming, 30, what="the webhooks consumer")
    yield service
    await service.stop()


LOG_DIRS: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def _remember_log_dir(work_dir: Path) -> None:
    LOG_DIRS.append(work_dir / "logs")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """On failure, attach the tail of every service log to the report."""
    report = yield
    if report.failed:
        for folder in LOG_DIRS:
            for log in sorted(folder.glob("*.log")):
                lines = log.read_text(errors="replace").splitlines()[-40:]
                report.sections.append((f"log {log.name}", "\n".join(lines)))
    return report
