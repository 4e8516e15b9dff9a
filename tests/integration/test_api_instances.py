"""Instance requests the API refuses before anything reaches a node: each is a clear 4xx, nothing written."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from wgs_devstack.processes import free_port
from wgs_devstack.services import ApiService

from tests.support.api import create_tenant, pending_instance, unique_phone


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"phone": "12ab", "provider": "sandbox"}, "phone"),
        ({"phone": "mig-test-123", "provider": "sandbox"}, "phone"),
        ({"provider": "sandbox"}, "phone"),
        ({"phone": "491701234567", "provider": "telegram"}, "provider"),
        ({"phone": "491701234567", "provider": "sandbox", "resources": {"cpu": "0"}}, "resources.cpu"),
        ({"phone": "491701234567", "provider": "sandbox", "resources": {"cpu": "fast"}}, "resources.cpu"),
        (
            {"phone": "491701234567", "provider": "sandbox", "resources": {"memory": "lots"}},
            "resources.memory",
        ),
        (
            {"phone": "491701234567", "provider": "sandbox", "resources": {"memory": "512x"}},
            "resources.memory",
        ),
        (
            {"phone": "491701234567", "provider": "sandbox", "resources": {"memory": "4096g"}},
            "resources.memory",
        ),
        ({"phone": "491701234567", "provider": "sandbox", "resources": {"cpu": 512}}, "resources.cpu"),
        ({"phone": "491701234567", "provider": "sandbox", "webhook": "ftp://x"}, "webhook"),
        ({"phone": "491701234567", "provider": "sandbox", "webhook": "https://example.com/" + "a" * 2048}, "webhook"),
        ({"phone": 491701234567, "provider": "sandbox"}, "phone"),
    ],
)
async def test_invalid_create_is_422_naming_the_field(
    client: httpx.AsyncClient, db, body: dict, field: str, node_capacity_known: None
) -> None:
    tenant = await create_tenant(client)
    response = await client.post("/api/instances", json=body, headers=tenant.headers)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert response.json()["code"] == "validation_error"
    assert await db.fetchval("SELECT count(*) FROM instances WHERE tenant_id = $1", tenant.id) == 0


async def test_duplicate_phone_is_409_and_quota_is_enforced(client: httpx.AsyncClient, db) -> None:
    tenant = await create_tenant(client, maxInstances=1)
    phone = unique_phone()
    first = await client.post(
        "/api/instances?wait=0", json={"phone": phone, "provider": "sandbox"}, headers=tenant.headers
    )
    assert first.status_code == 202, first.text
    assert first.json()["userId"] == first.json()["tenantId"] == tenant.id  # `userId`: the original's name
    again = await client.post(
        "/api/instances?wait=0", json={"phone": phone, "provider": "sandbox"}, headers=tenant.headers
    )
    assert again.status_code == 409
    assert again.json()["field"] == "phone"
    other = await client.post(
        "/api/instances?wait=0", json={"phone": unique_phone(), "provider": "sandbox"}, headers=tenant.headers
    )
    assert other.status_code == 409
    assert "limit" in other.json()["error"]
    assert await db.fetchval("SELECT count(*) FROM instances WHERE tenant_id = $1", tenant.id) == 1
    await db.execute("DELETE FROM instances WHERE tenant_id = $1", tenant.id)


async def test_other_tenants_instances_are_404_and_auth_is_required(client: httpx.AsyncClient, db) -> None:
    owner = await create_tenant(client)
    stranger = await create_tenant(client)
    created = await client.post(
        "/api/instances?wait=0", json={"phone": unique_phone(), "provider": "sandbox"}, headers=owner.headers
    )
    instance_id = created.json()["id"]
    try:
        assert (await client.get(f"/api/instances/{instance_id}", headers=stranger.headers)).status_code == 404
        assert (await client.delete(f"/api/instances/{instance_id}", headers=stranger.headers)).status_code == 404
        assert (await client.get("/api/instances", headers=stranger.headers)).json() == []
        assert (await client.get(f"/api/instances/{instance_id}")).status_code == 401
        assert (await client.delete(f"/api/instances/{instance_id}")).status_code == 401
        assert (await client.get("/api/instances/999999", headers=owner.headers)).status_code == 404
        assert await db.fetchval("SELECT count(*) FROM instances WHERE id = $1", instance_id) == 1
    finally:
        await db.execute("DELETE FROM instances WHERE id = $1", instance_id)


async def test_bad_wait_parameter_is_rejected(client: httpx.AsyncClient, db) -> None:
    tenant = await create_tenant(client)
    body = {"phone": unique_phone(), "provider": "sandbox"}
    response = await client.post("/api/instances?wait=soon", json=body, headers=tenant.headers)
    assert response.status_code in (400, 422)
    assert "error" in response.json()
    assert await db.fetchval("SELECT count(*) FROM instances WHERE tenant_id = $1", tenant.id) == 0


async def test_the_instance_list_pages_oldest_first_with_limit_and_after(client: httpx.AsyncClient) -> None:
    tenant = await create_tenant(client)
    ids = [await pending_instance(client, tenant) for _ in range(3)]

    async def page(**params) -> list[int]:
        response = await client.get("/api/instances", params=params, headers=tenant.headers)
        assert response.status_code == 200, response.text
        return [instance["id"] for instance in response.json()]

    try:
        assert await page() == ids  # all of them without paging (the original contract)
        first = await page(limit=2)
        assert first + await page(limit=2, after=first[-1]) == ids
        assert await page(after=ids[-1]) == []
        for name, bad in (("limit", "0"), ("limit", "1001"), ("limit", "x"), ("after", "-1"), ("after", str(2**31))):
            response = await client.get("/api/instances", params={name: bad}, headers=tenant.headers)
            assert response.status_code in (400, 422), response.text
            assert response.json()["field"] == name
    finally:
        for instance_id in ids:
            await client.delete(f"/api/instances/{instance_id}", headers=tenant.headers)


@pytest.fixture(scope="module")
async def api_refusing_private(migrated: dict[str, str], work_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An API process as deployed by default: webhook URLs on private addresses are refused."""
    service = ApiService(
        {**migrated, "WGS_WEBHOOKS_ALLOW_PRIVATE": "0"}, work_dir / "logs", free_port(), name="api-public-hooks"
    )
    await service.ready()
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        yield client
    await service.stop()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]/hook",
        "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/hook",  # fullwidth digits: 127.0.0.1 once normalised (IDNA)
    ],
)
async def test_the_instance_webhook_field_refuses_private_addresses_as_endpoints_do(
    api_refusing_private: httpx.AsyncClient, db, url: str
) -> None:
    """The seed's `webhook` field becomes a webhook endpoint, so it passes the same SSRF check."""
    tenant = await create_tenant(api_refusing_private)
    created = await api_refusing_private.post(
        "/api/instances?wait=0",
        json={"phone": unique_phone(), "provider": "sandbox", "webhook": url},
        headers=tenant.headers,
    )
    assert created.status_code == 422, created.text
    assert created.json()["field"] == "webhook"
    endpoint = await api_refusing_private.post("/api/webhooks", json={"url": url}, headers=tenant.headers)
    assert endpoint.status_code == 422, endpoint.text
    assert endpoint.json()["field"] == "url"
    assert await db.fetchval("SELECT count(*) FROM instances WHERE tenant_id = $1", tenant.id) == 0
    assert await db.fetchval("SELECT count(*) FROM webhook_endpoints WHERE tenant_id = $1", tenant.id) == 0
