"""A node agent on a real Docker engine, registered as node `e2e-n1`."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from wgs_devstack.docker_engine import DockerEngine
from wgs_devstack.services import ApiService, Service
from wgs_kit.waiting import wait_until

from tests.support.api import ADMIN

NODE = "e2e-n1"


async def node_ready(api: ApiService, name: str) -> dict:
    """Wait until the node reports heartbeats (status `ready`); return its view."""
    async with httpx.AsyncClient(base_url=api.url) as client:

        async def ready() -> dict | None:
            nodes = (await client.get("/admin/nodes", headers=ADMIN)).json()
            return next((n for n in nodes if n["name"] == name and n["status"] == "ready"), None)

        return await wait_until(ready, timeout=30, what=f"node {name} ready")


@pytest.fixture(scope="session")
async def node_agent(
    api: ApiService,
    scheduler: Service,
    engines: list[DockerEngine],
    migrated: dict[str, str],
    work_dir: Path,
) -> AsyncIterator[Service]:
    """The agent of node `e2e-n1` (2 CPUs, 4g) on the first Docker engine."""
    async with httpx.AsyncClient(base_url=api.url) as client:
        response = await client.post(
            "/admin/nodes",
            json={"name": NODE, "dockerHost": engines[0].host, "publicHost": "127.0.0.1"},
            headers=ADMIN,
        )
        assert response.status_code == 200, response.text
    agent = Service(
        "agent-n1",
        "wgs_node_agent",
        {
            **migrated,
            "WGS_NODE_NAME": NODE,
            "DOCKER_HOST": engines[0].host,
            "WGS_RUNTIME": "docker",
            "WGS_NODE_DATA_DIR": str(work_dir / "node-n1"),
            "WGS_NODE_CPU": "2",
            "WGS_NODE_MEMORY": "4g",
        },
        work_dir / "logs",
    )
    agent.start()
    try:
        await node_ready(api, NODE)
        yield agent
    finally:
        await agent.stop()
