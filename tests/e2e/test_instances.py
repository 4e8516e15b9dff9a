"""The seed's instance scenarios on real services and a real Docker engine."""

import os
import signal
from pathlib import Path

import httpx
import msgspec
import nats
import pytest
from wgs_contracts import labels, subjects
from wgs_contracts.messages import InstanceStatus, InstanceStatusChanged
from wgs_devstack.docker_engine import DockerEngine
from wgs_devstack.services import Service
from wgs_kit.waiting import wait_until

from tests.support.api import create_tenant, unique_phone
from tests.support.sandbox import containers_of, status_is
from tests.support.services import frozen_objects

pytestmark = pytest.mark.docker


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
    assert host["RestartPolicy"]["Name"] == "no"
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


async def test_provider_answers_health_over_its_unix_socket(
    client: httpx.AsyncClient, node_agent: Service, work_dir: Path
) -> None:
    tenant = await create_tenant(client)
    body = {"phone": unique_phone(), "provider": "sandbox", "resources": {"cpu": "0.1", "memory": "64m"}}
    instance = (await client.post("/api/instances", json=body, headers=tenant.headers)).json()
    socket = work_dir / "node-n1" / "instances" / str(instance["id"]) / "run" / "provider.sock"
    transport = httpx.AsyncHTTPTransport(uds=str(socket))
    async with httpx.AsyncClient(transport=transport, base_url="http://provider") as provider:

        async def healthy() -> dict | None:
            try:
                response = await provider.get("/health")
            except httpx.TransportError:
                return None
            return response.json() if response.status_code == 200 else None

        health = await wait_until(healthy, timeout=20, what="provider health over its socket")
    assert health["state"] in {"starting", "qr", "connected"}
    assert set(health) >= {"state", "reason", "phone_id"}
    assert (await client.delete(f"/api/instances/{instance['id']}", headers=tenant.headers)).status_code == 204


async def test_crashed_provider_is_reported_failed_then_running_after_the_agent_restarts_it(
    client: httpx.AsyncClient, node_agent: Service, engines: list[DockerEngine], migrated: dict[str, str]
) -> None:
    tenant = await create_tenant(client)
    body = {"phone": unique_phone(), "provider": "sandbox", "resources": {"cpu": "0.1", "memory": "64m"}}
    instance = (await client.post("/api/instances", json=body, headers=tenant.headers)).json()
    [before] = await containers_of(engines[0], instance["id"])
    nc = await nats.connect(migrated["NATS_URL"])
    events = await nc.subscribe(subjects.instance_status(instance["id"]))
    try:
        os.kill(before["State"]["Pid"], signal.SIGKILL)  # the container's init: the whole container dies
        seen: list[InstanceStatusChanged] = []
        while not seen or seen[-1].status is not InstanceStatus.RUNNING:
            message = await events.next_msg(timeout=30)
            seen.append(msgspec.json.decode(message.data, type=InstanceStatusChanged))
    finally:
        await nc.close()
    failed = next(e for e in seen if e.status is InstanceStatus.FAILED)
    assert "137" in (failed.reason or "")
    assert seen[-1].reason == "restarted"
    [after] = await containers_of(engines[0], instance["id"])
    assert after["Id"] == before["Id"]
    assert after["State"]["Running"]
    view = await wait_until(
        lambda: status_is(client, tenant, instance["id"], "running"), timeout=20, what="row running"
    )
    assert view["statusReason"] == "restarted"
    assert (await client.delete(f"/api/instances/{instance['id']}", headers=tenant.headers)).status_code == 204


async def test_the_node_agent_freezes_its_start_up_heap(node_agent: Service) -> None:
    """Full collections skip what start-up made: the agent relays every send (decision 36)."""
    assert await frozen_objects(node_agent) > 10_000
