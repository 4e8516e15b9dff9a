"""The whole gateway for benchmarks: NATS, PostgreSQL, one Docker engine, migrations, API,
scheduler and one node agent, started in a temporary folder and stopped by PID."""

import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from wgs_devstack.docker_engine import DockerEngine
from wgs_devstack.images import build_all, copy_image
from wgs_devstack.nats import EmbeddedNats
from wgs_devstack.postgres import EmbeddedPostgres
from wgs_devstack.processes import free_port, run_command
from wgs_devstack.services import ADMIN_SECRET, ApiService, Service
from wgs_kit.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
ADMIN = {"X-Admin-API-Secret": ADMIN_SECRET}
NODE = "bench-n1"
SANDBOX_IMAGE = "wgs-provider-sandbox:latest"
T = TypeVar("T")


@dataclass
class Stack:
    """What a benchmark talks to."""

    work: Path
    env: dict[str, str]
    nats: EmbeddedNats
    postgres: EmbeddedPostgres
    api: ApiService
    client: httpx.AsyncClient
    headers: dict[str, str]
    services: list[Service]
    engines: list[DockerEngine]

    @property
    def engine(self) -> DockerEngine:
        """The first node's Docker engine (it holds the built images)."""
        return self.engines[0]

    def start_service(self, name: str, module: str, extra_env: dict[str, str] | None = None) -> Service:
        """Start one more service process (stopped with the stack)."""
        service = Service(name, module, {**self.env, **(extra_env or {})}, self.work / "logs")
        service.start()
        self.services.append(service)
        return service

    async def start_engine(self, name: str) -> DockerEngine:
        """Start one more Docker engine (stopped with the stack)."""
        engine = DockerEngine(self.work / f"docker-{name}", name)
        self.engines.append(engine)
        await engine.start()
        return engine

    async def register_node(self, name: str, engine: DockerEngine, settings: dict[str, str] | None = None) -> None:
        """Register node `name` on `engine`, start its agent and wait until it heartbeats."""
        await self.client.post(
            "/admin/nodes", json={"name": name, "dockerHost": engine.host, "publicHost": "127.0.0.1"}, headers=ADMIN
        )
        self.start_service(f"agent-{name}", "wgs_node_agent", agent_env(name, engine, self.work, settings))
        await wait_until(lambda: node_is_ready(self.client, name), timeout=60, what=f"node {name} ready")

    async def add_node(self, name: str, settings: dict[str, str] | None = None) -> DockerEngine:
        """One more node: its own Docker engine with the sandbox image, registered, with its agent."""
        engine = await self.start_engine(name)
        await copy_image(self.engine.host, engine.host, SANDBOX_IMAGE)
        await self.register_node(name, engine, settings)
        return engine


def agent_env(name: str, engine: DockerEngine, work: Path, settings: dict[str, str] | None) -> dict[str, str]:
    """The environment of the node agent of node `name` on `engine`."""
    return {
        "WGS_NODE_NAME": name,
        "DOCKER_HOST": engine.host,
        "WGS_RUNTIME": "docker",
        "WGS_NODE_DATA_DIR": str(work / f"node-{name}"),
        **(settings or {}),
    }


async def node_is_ready(client: httpx.AsyncClient, name: str) -> bool:
    """True once the node's heartbeats arrive."""
    nodes = (await client.get("/admin/nodes", headers=ADMIN)).json()
    return any(n["name"] == name and n["status"] == "ready" for n in nodes)


@asynccontextmanager
async def control_plane(
    tenant: dict[str, Any] | None = None, settings: dict[str, str] | None = None
) -> AsyncIterator[Stack]:
    """NATS, PostgreSQL, migrations, the API and a tenant (with extra `settings` in every service's
    environment), no node yet; everything started later through the stack is stopped with it, by PID."""
    work = Path(tempfile.mkdtemp(prefix="wgs-b-", dir="/tmp"))
    nats = EmbeddedNats(work / "nats")
    pg = EmbeddedPostgres(work / "pg")
    services: list[Service] = []
    engines: list[DockerEngine] = []
    try:
        await asyncio.gather(nats.start(), pg.start())
        env = {"DATABASE_URL": pg.dsn, "NATS_URL": nats.url, "WGS_LOG_LEVEL": "WARNING", **(settings or {})}
        await run_command(
            [sys.executable, "-m", "wgs_db.migrate"], env={**os.environ, **env}, log_path=work / "migrate.log"
        )
        api = ApiService(env, work / "logs", free_port())
        services.append(api)
        await api.ready()
        async with httpx.AsyncClient(base_url=api.url, timeout=60) as client:
            created = await client.post("/admin/tenants", json={"name": "bench", **(tenant or {})}, headers=ADMIN)
            headers = {"Authorization": f"Bearer {created.json()['apiKey']}"}
            yield Stack(work, env, nats, pg, api, client, headers, services, engines)
    finally:
        for service in reversed(services):
            await service.stop()
        for engine in engines:
            await engine.stop()
        await pg.stop()
        await nats.stop()
        shutil.rmtree(work, ignore_errors=True)


@asynccontextmanager
async def gateway_stack(
    tenant: dict[str, Any] | None = None, settings: dict[str, str] | None = None
) -> AsyncIterator[Stack]:
    """The control plane, the scheduler and state service, and one node (Docker engine with the
    sandbox image built offline, and its agent)."""
    async with control_plane(tenant, settings) as stack:
        engine = await stack.start_engine("bench")
        await build_all(engine.host, ROOT, ["sandbox"])
        stack.start_service("scheduler", "wgs_scheduler")
        stack.start_service("state", "wgs_state")
        await stack.register_node(NODE, engine)
        yield stack


def summary(samples: list[float]) -> dict[str, float]:
    """p50/p95/max in milliseconds."""
    return {
        "p50_ms": round(statistics.median(samples) * 1000, 1),
        "p95_ms": round(percentile(samples, 0.95) * 1000, 1),
        "max_ms": round(max(samples) * 1000, 1),
    }


def percentile(samples: list[float], fraction: float) -> float:
    """The `fraction` quantile of `samples` (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def cancel_on_sigterm(work: Coroutine[Any, Any, T]) -> T:
    """Run `work`, cancelling it on SIGTERM so its cleanup (stop by PID) still runs."""
    task = asyncio.ensure_future(work)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await task
