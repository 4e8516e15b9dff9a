"""Integration fixtures: a second API process; an API with a node whose capacity is known (2 CPUs, 4g);
instance rows written straight to PostgreSQL."""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
from wgs_db.engine import close_database, open_database
from wgs_devstack.processes import free_port
from wgs_devstack.services import ApiService

from tests.support.api import ADMIN, unique_phone

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


@dataclass
class InstanceRows:
    """Instance rows for tests that need only the rows (webhooks, events): placed on a node that
    never heartbeats and takes nothing, so a scheduler running in the session never places them
    on a real node (it places every unplaced instance it can) nor counts them lost."""

    db: asyncpg.Pool
    node_id: int
    ids: list[int] = field(default_factory=list)

    async def add(self, tenant_id: int, webhook_url: str | None = None) -> int:
        """A new instance row of the tenant (with the legacy `webhook` field when given)."""
        instance_id: int = await self.db.fetchval(
            "INSERT INTO instances (tenant_id, node_id, phone_number, provider, cpu_limit, memory_limit, nano_cpus,"
            " memory_bytes, webhook_url) VALUES ($1, $2, $3, 'sandbox', '0.5', '512m', 500000000, 536870912, $4)"
            " RETURNING id",
            tenant_id,
            self.node_id,
            unique_phone(),
            webhook_url,
        )
        self.ids.append(instance_id)
        return instance_id


@pytest.fixture
async def instance_rows(db: asyncpg.Pool) -> AsyncIterator[InstanceRows]:
    """Instance rows the test adds; removed after it with their node (endpoints and deliveries go with them)."""
    node_id = await db.fetchval(
        "INSERT INTO nodes (name, docker_host, public_host, schedulable) VALUES ($1, 'none', 'none', false)"
        " RETURNING id",
        f"rows-{uuid.uuid4().hex[:12]}",
    )
    rows = InstanceRows(db, node_id)
    yield rows
    await db.execute("DELETE FROM instances WHERE node_id = $1", node_id)
    await db.execute("DELETE FROM nodes WHERE id = $1", node_id)
