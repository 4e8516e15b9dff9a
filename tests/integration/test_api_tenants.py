"""Tenants and API keys: created by operators, shown once, stored hashed, rotated and revoked."""

import hashlib
import uuid

import httpx
import pytest
from wgs_devstack.services import ApiService
from wgs_kit.waiting import wait_until

from tests.support.api import ADMIN, create_tenant

BROADCAST_DEADLINE = 3.0  # below the 5 s a process remembers a key: the revocation must be what it heard


async def test_tenant_key_authenticates_and_is_stored_hashed(client: httpx.AsyncClient, db) -> None:
    tenant = await create_tenant(client)
    assert tenant.api_key.startswith("wgs_")
    assert (await client.get("/api/instances", headers=tenant.headers)).json() == []
    stored = await db.fetch("SELECT key_hash, prefix FROM api_keys WHERE tenant_id = $1", tenant.id)
    assert [r["key_hash"] for r in stored] == [hashlib.sha256(tenant.api_key.encode()).hexdigest()]
    assert tenant.api_key not in {r["prefix"] for r in stored}
    listed = await client.get(f"/admin/tenants/{tenant.id}/keys", headers=ADMIN)
    assert tenant.api_key not in listed.text
    assert [t["name"] for t in (await client.get("/admin/tenants", headers=ADMIN)).json()].count(tenant.name) == 1


async def test_missing_or_wrong_key_is_401(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/instances")).status_code == 401
    wrong = await client.get("/api/instances", headers={"Authorization": "Bearer wgs_nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "Unauthorized"
    basic = await client.get("/api/instances", headers={"Authorization": "Basic abc"})
    assert basic.status_code == 401


async def test_rotation_revokes_old_keys_and_revocation_is_immediate(client: httpx.AsyncClient) -> None:
    tenant = await create_tenant(client)
    rotated = await client.post(f"/admin/tenants/{tenant.id}/keys", json={"revokeOthers": True}, headers=ADMIN)
    assert rotated.status_code == 201
    new_key = rotated.json()["key"]
    assert (await client.get("/api/instances", headers=tenant.headers)).status_code == 401
    new_headers = {"Authorization": f"Bearer {new_key}"}
    assert (await client.get("/api/instances", headers=new_headers)).status_code == 200

    revoked = await client.delete(f"/admin/tenants/{tenant.id}/keys/{rotated.json()['id']}", headers=ADMIN)
    assert revoked.status_code == 204
    assert (await client.get("/api/instances", headers=new_headers)).status_code == 401
    keys = (await client.get(f"/admin/tenants/{tenant.id}/keys", headers=ADMIN)).json()
    assert all(k["revokedAt"] is not None for k in keys)


async def test_bad_tenant_requests(client: httpx.AsyncClient, db) -> None:
    tenant = await create_tenant(client)
    before = await db.fetchval("SELECT count(*) FROM tenants")
    duplicate = await client.post("/admin/tenants", json={"name": tenant.name}, headers=ADMIN)
    assert duplicate.status_code == 409
    bad = await client.post("/admin/tenants", json={"name": ""}, headers=ADMIN)
    assert bad.status_code == 422
    assert bad.json()["field"] == "name"
    malformed = await client.post(
        "/admin/tenants", content=b"{not json", headers={**ADMIN, "content-type": "application/json"}
    )
    assert malformed.status_code == 400
    assert "error" in malformed.json()
    assert (await client.post("/admin/tenants", json={"name": "x"})).status_code == 401
    assert await db.fetchval("SELECT count(*) FROM tenants") == before
    assert (await client.get("/admin/tenants/999999", headers=ADMIN)).status_code == 404
    assert (await client.delete(f"/admin/tenants/{tenant.id}/keys/999999", headers=ADMIN)).status_code == 404


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("maxInstances", -1),
        ("maxInstances", 99_999_999_999),  # beyond PostgreSQL's integer: was a 500
        ("sendRatePerSecond", 0),
        ("sendRatePerSecond", 1e-300),
        ("sendRatePerSecond", 1e308),  # was taken, then its sends were 500s (the refill overflowed a double)
        ("sendBurst", 0),
        ("sendBurst", 99_999_999_999),
    ],
)
async def test_tenant_limits_out_of_range_are_422_and_change_nothing(
    client: httpx.AsyncClient, db, field: str, value: float
) -> None:
    tenant = await create_tenant(client)
    before = await db.fetchrow("SELECT * FROM tenants WHERE id = $1", tenant.id)
    count = await db.fetchval("SELECT count(*) FROM tenants")

    created = await client.post(
        "/admin/tenants", json={"name": f"bad-{uuid.uuid4().hex[:8]}", field: value}, headers=ADMIN
    )
    patched = await client.patch(f"/admin/tenants/{tenant.id}", json={field: value}, headers=ADMIN)

    for response in (created, patched):
        assert response.status_code == 422, response.text
        assert response.json()["field"] == field
    assert await db.fetchval("SELECT count(*) FROM tenants") == count
    assert await db.fetchrow("SELECT * FROM tenants WHERE id = $1", tenant.id) == before


async def test_the_largest_tenant_limits_are_taken(client: httpx.AsyncClient) -> None:
    tenant = await create_tenant(client)
    largest = {"maxInstances": 1_000_000, "sendRatePerSecond": 1_000_000, "sendBurst": 1_000_000}
    patched = await client.patch(f"/admin/tenants/{tenant.id}", json=largest, headers=ADMIN)
    assert patched.status_code == 200, patched.text
    assert {k: patched.json()[k] for k in largest} == largest


async def test_a_tenants_retention_is_30_days_unless_set_and_bad_values_are_422(client: httpx.AsyncClient, db) -> None:
    default = await client.get(f"/admin/tenants/{(await create_tenant(client)).id}", headers=ADMIN)
    assert default.json()["retentionDays"] == 30
    tenant = await create_tenant(client, retentionDays=7)
    assert (await client.get(f"/admin/tenants/{tenant.id}", headers=ADMIN)).json()["retentionDays"] == 7
    changed = await client.patch(f"/admin/tenants/{tenant.id}", json={"retentionDays": 3650}, headers=ADMIN)
    assert changed.status_code == 200, changed.text
    assert changed.json()["retentionDays"] == 3650

    tenants_before = await db.fetchval("SELECT count(*) FROM tenants")
    for bad in (0, -1, 3651):
        created = await client.post("/admin/tenants", json={"name": "r-bad", "retentionDays": bad}, headers=ADMIN)
        assert created.status_code == 422, created.text
        assert created.json()["field"] == "retentionDays"
        patched = await client.patch(f"/admin/tenants/{tenant.id}", json={"retentionDays": bad}, headers=ADMIN)
        assert patched.status_code == 422, patched.text
        assert patched.json()["field"] == "retentionDays"
    not_a_number = await client.patch(f"/admin/tenants/{tenant.id}", json={"retentionDays": "thirty"}, headers=ADMIN)
    assert not_a_number.status_code == 422, not_a_number.text
    assert not_a_number.json()["field"] == "retentionDays"
    assert await db.fetchval("SELECT count(*) FROM tenants") == tenants_before
    assert await db.fetchval("SELECT retention_days FROM tenants WHERE id = $1", tenant.id) == 3650


async def test_openapi_document_and_docs_page(client: httpx.AsyncClient) -> None:
    assert (await client.get("/")).json() == {"status": "ok"}
    document = (await client.get("/docs/openapi.json")).json()
    for path in ("/api/instances", "/api/instances/{instance_id}", "/admin/nodes", "/admin/tenants"):
        assert path in document["paths"]
    send = document["paths"]["/api/instances/{instance_id}/send"]["post"]
    assert {"name": "Idempotency-Key", "in": "header", "required": False} in [
        {k: p[k] for k in ("name", "in", "required")} for p in send["parameters"]
    ]
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "html" in page.headers["content-type"]


async def refused_by(api: httpx.AsyncClient, headers: dict[str, str]) -> None:
    """Wait (up to BROADCAST_DEADLINE) until `api` answers 401 to the key."""

    async def refused() -> bool:
        return (await api.get("/api/instances", headers=headers)).status_code == 401

    await wait_until(refused, timeout=BROADCAST_DEADLINE, interval=0.05, what="the revoked key refused")


async def test_a_revoked_key_is_refused_at_once_by_every_api_process(
    client: httpx.AsyncClient, second_api: ApiService
) -> None:
    tenant = await create_tenant(client)
    keys = (await client.get(f"/admin/tenants/{tenant.id}/keys", headers=ADMIN)).json()
    async with httpx.AsyncClient(base_url=second_api.url, timeout=30) as other:
        for api in (client, other):  # both processes now remember the key
            assert (await api.get("/api/instances", headers=tenant.headers)).status_code == 200

        assert (
            await client.delete(f"/admin/tenants/{tenant.id}/keys/{keys[0]['id']}", headers=ADMIN)
        ).status_code == 204

        assert (await client.get("/api/instances", headers=tenant.headers)).status_code == 401  # here: at once
        await refused_by(other, tenant.headers)


async def test_a_rotation_is_refused_at_once_by_every_api_process(
    client: httpx.AsyncClient, second_api: ApiService
) -> None:
    tenant = await create_tenant(client)
    async with httpx.AsyncClient(base_url=second_api.url, timeout=30) as other:
        for api in (client, other):
            assert (await api.get("/api/instances", headers=tenant.headers)).status_code == 200

        rotated = await other.post(f"/admin/tenants/{tenant.id}/keys", json={"revokeOthers": True}, headers=ADMIN)
        assert rotated.status_code == 201

        assert (await other.get("/api/instances", headers=tenant.headers)).status_code == 401
        await refused_by(client, tenant.headers)
        new_headers = {"Authorization": f"Bearer {rotated.json()['key']}"}
        for api in (client, other):
            assert (await api.get("/api/instances", headers=new_headers)).status_code == 200


async def test_another_tenants_revocation_leaves_a_key_working(
    client: httpx.AsyncClient, second_api: ApiService
) -> None:
    kept, revoked = await create_tenant(client), await create_tenant(client)
    async with httpx.AsyncClient(base_url=second_api.url, timeout=30) as other:
        assert (await other.get("/api/instances", headers=kept.headers)).status_code == 200
        rotated = await client.post(f"/admin/tenants/{revoked.id}/keys", json={"revokeOthers": True}, headers=ADMIN)
        assert rotated.status_code == 201
        await refused_by(other, revoked.headers)

        assert (await other.get("/api/instances", headers=kept.headers)).status_code == 200


async def test_a_key_of_the_original_gateway_is_taken_over_and_keeps_working(client: httpx.AsyncClient, db) -> None:
    """Its users keep their `Bearer` tokens: the operator imports each one (stored hashed, like any key)."""
    tenant = await create_tenant(client)
    original = f"legacy-{uuid.uuid4().hex}"  # the original gateway's keys were any text
    imported = await client.post(
        f"/admin/tenants/{tenant.id}/keys", json={"key": original, "revokeOthers": True}, headers=ADMIN
    )
    assert imported.status_code == 201, imported.text
    assert imported.json()["key"] == original
    assert imported.json()["prefix"] == original[:4]
    headers = {"Authorization": f"Bearer {original}"}
    assert (await client.get("/api/instances", headers=headers)).status_code == 200
    assert (await client.get("/api/instances", headers=tenant.headers)).status_code == 401  # rotated out
    stored = await db.fetch("SELECT key_hash FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL", tenant.id)
    assert [r["key_hash"] for r in stored] == [hashlib.sha256(original.encode()).hexdigest()]

    other = await create_tenant(client)
    taken = await client.post(f"/admin/tenants/{other.id}/keys", json={"key": original}, headers=ADMIN)
    assert taken.status_code == 409, taken.text
    assert taken.json()["field"] == "key"
    for bad in ("short", "has a space in it!", "x" * 513, "ключ-ключ-ключ-ключ"):
        refused = await client.post(f"/admin/tenants/{other.id}/keys", json={"key": bad}, headers=ADMIN)
        assert (refused.status_code, refused.json()["field"]) == (422, "key"), (bad, refused.text)
    assert await db.fetchval("SELECT count(*) FROM api_keys WHERE tenant_id = $1", other.id) == 1  # its first only
