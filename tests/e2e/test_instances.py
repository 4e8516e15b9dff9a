"""The seed's instance scenarios on real services and a real Docker engine."""

import aiodocker
import httpx
import pytest
from wgs_contracts import labels
from wgs_devstack.docker_engine import DockerEngine
from wgs_devstack.services import Service

from tests.support.api import create_tenant, unique_phone

pytestmark = pytest.mark.docker


async def containers_of(engine: DockerEngine, instance_id: int) -> list[dict]:
    """The engine's containers labelled with the instance id."""
    async with aiodocker.Docker(url=engine.host) as docker:
        found = await docker.containers.list(all=True, filters={"label": [f"{labels.INSTANCE_ID}={instance_id}"]})
        return [await c.show() for c in found]


async def test_create_runs_container_with_limits_then_delete_removes_it(
    client: httpx.AsyncClient, node_agent: Service, engines: list[DockerEngine], db
) -> None:
    tenant = await create_tenant(client)
    response = await client.post(
        "/api/instances",
        json={
            "name": "e2e-test-instance",
            "phone": unique_phone(),
            "provider": "sandbox",
            "resources": {"cpu": "0.5", "memory": "128m"},
        },
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text
    instance = response.json()
    assert isinstance(instance["id"], int)
    assert instance["status"] == "running"
    assert instance["cpuLimit"] == "0.5"
    assert instance["memoryLimit"] == "128m"
    assert instance["nodeId"] is not None

    [container] = await containers_of(engines[0], instance["id"])
    assert container["State"]["Running"]
    host = container["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 128 * 2**20
    assert host["MemorySwap"] == 128 * 2**20
    assert host["PidsLimit"] == 256
    assert host["RestartPolicy"]["Name"] == "unless-stopped"
    assert host["Init"] is True
    assert container["Config"]["User"] == "10001:10001"
    assert container["Config"]["Labels"][labels.GENERATION] == str(instance["generation"])
    assert container["Config"]["Labels"][labels.TENANT_ID] == str(tenant.id)

    listed = await client.get("/api/instances", headers=tenant.headers)
    assert [i["id"] for i in listed.json()] == [instance["id"]]
    fetched = await client.get(f"/api/instances/{instance['id']}", headers=tenant.headers)
    assert fetched.json()["status"] == "running"

    deleted = await client.delete(f"/api/instances/{instance['id']}", headers=tenant.headers)
    assert deleted.status_code == 204, deleted.text
    assert await containers_of(engines[0], instance["id"]) == []
    assert await db.fetchval("SELECT count(*) FROM instances WHERE id = $1", instance["id"]) == 0
    gone = await client.get(f"/api/instances/{instance['id']}", headers=tenant.headers)
    assert gone.status_code == 404
