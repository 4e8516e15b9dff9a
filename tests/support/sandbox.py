"""Test helpers around sandbox instances: create, pair, follow messages, find their containers."""

import aiodocker
import httpx
from wgs_contracts import labels
from wgs_devstack.docker_engine import DockerEngine
from wgs_kit.waiting import DeadlineExceeded, wait_until

from tests.support.api import Tenant, unique_phone

SANDBOX_IMAGE = "wgs-provider-sandbox:latest"


async def containers_of(engine: DockerEngine, instance_id: int) -> list[dict]:
    """The engine's containers labelled with the instance id (one removed while listed is left out)."""
    async with aiodocker.Docker(url=engine.host) as docker:
        found = await docker.containers.list(all=True, filters={"label": [f"{labels.INSTANCE_ID}={instance_id}"]})
        shown = []
        for container in found:
            try:
                shown.append(await container.show())
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    raise
        return shown


async def running_sandbox(client: httpx.AsyncClient, tenant: Tenant) -> dict:
    body = {"phone": unique_phone(), "provider": "sandbox", "resources": {"cpu": "0.1", "memory": "64m"}}
    response = await client.post("/api/instances", json=body, headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def connection_is(client: httpx.AsyncClient, tenant: Tenant, instance_id: int, state: str) -> dict:
    async def reached() -> dict | None:
        view = (await client.get(f"/api/instances/{instance_id}", headers=tenant.headers)).json()
        return view if view["connectionState"] == state else None

    return await wait_until(reached, timeout=30, interval=0.2, what=f"instance {instance_id} {state}")


async def connected(client: httpx.AsyncClient, tenant: Tenant, instance_id: int) -> dict:
    return await connection_is(client, tenant, instance_id, "connected")


async def pair_up(client: httpx.AsyncClient, tenant: Tenant, instance_id: int) -> dict:
    """Wait for the QR, scan it, wait until connected."""
    await connection_is(client, tenant, instance_id, "qr")
    scanned = await client.post(f"/api/instances/{instance_id}/sandbox/scan", headers=tenant.headers)
    assert scanned.status_code == 200, scanned.text
    return await connected(client, tenant, instance_id)


async def history(client: httpx.AsyncClient, tenant: Tenant, instance_id: int, message_id: str) -> list[str]:
    response = await client.get(f"/api/instances/{instance_id}/messages/{message_id}", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return [entry["status"] for entry in response.json()["history"]]


async def reaches(client: httpx.AsyncClient, tenant: Tenant, instance_id: int, message_id: str, status: str) -> dict:
    """The message's view once its history holds `status`; after 30 s, an error showing the view it had."""
    seen: list[object] = []

    async def reached() -> dict | None:
        response = await client.get(f"/api/instances/{instance_id}/messages/{message_id}", headers=tenant.headers)
        body = response.json()
        seen[:] = [response.status_code, body]
        return body if status in [h["status"] for h in body.get("history", [])] else None

    try:
        return await wait_until(reached, timeout=30, interval=0.2, what=f"message {message_id} {status}")
    except DeadlineExceeded as exc:
        raise DeadlineExceeded(f"{exc}; last answer: {seen}") from None


async def status_is(client: httpx.AsyncClient, tenant: Tenant, instance_id: int, status: str) -> dict | None:
    """The tenant's view of the instance when its status is `status`, else None (a wait_until probe)."""
    view = (await client.get(f"/api/instances/{instance_id}", headers=tenant.headers)).json()
    return view if view["status"] == status else None
