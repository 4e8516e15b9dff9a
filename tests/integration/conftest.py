"""Integration fixtures: a second API process; an API with a node whose capacity is known (2 CPUs, 4g)."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from wgs_db.engine import close_database, open_database
from wgs_devstack.processes import free_port
from wgs_devstack.services import ApiService

from tests.support.api import ADMIN

CAPACITY_NODE = "capacity-node"


@pytest.fixture
async def node_capacity_known(client: httpx.AsyncClient, db) -> AsyncIterator[None]:
    """A registered, cordoned node that reported 2 CPUs and 4g, so the API knows the node maximum."""
    response = await client.post(
        "/admin/nodes",
        json={"name": CAPACITY_NODE, "dockerHost": "none", "publicHost": "none", "schedulable": False},
        headers=ADMIN,
    )
    node_id = response.json()["id"]
    await db.execute(
        "UPDATE nodes SET nano_cpus = 2000000000, memory_bytes = 4294967296, last_heartbeat_at = now() WHERE id = $1",
        node_id,
    )
    yield
    await client.delete(f"/admin/nodes/{node_id}", headers=ADMIN)


@pytest.fixture(scope="module")
async def second_api(migrated: dict[str, str], work_dir: Path) -> AsyncIterator[ApiService]:
    """A second API process on the same database and NATS."""
    service = ApiService(migrated, work_dir / "logs", free_port(), name="api-2")
    await service.ready()
    yield service
    await service.stop()


@pytest.fixture
async def api_pool(migrated: dict[str, str]) -> AsyncIterator[None]:
    """The API's database pool in this process, for calling its batch functions directly."""
    await open_database(migrated["DATABASE_URL"], max_size=2)
    yield
    await close_database()
