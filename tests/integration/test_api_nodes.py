"""Admin node endpoints, as the seed's node tests, on the real API, PostgreSQL and NATS."""

import httpx

from tests.support.api import ADMIN, create_tenant


async def test_admin_endpoints_reject_missing_or_wrong_secret(client: httpx.AsyncClient) -> None:
    assert (await client.get("/admin/nodes")).status_code == 401
    body = {"name": "node-x", "dockerHost": "host", "publicHost": "public"}
    response = await client.post("/admin/nodes", json=body)
    assert response.status_code == 401
    assert response.json()["error"] == "Unauthorized"
    wrong = await client.get("/admin/nodes", headers={"X-Admin-API-Secret": "nope"})
    assert wrong.status_code == 401


async def test_create_list_get_update_delete_node(client: httpx.AsyncClient) -> None:
    data = {"name": "test-node-2", "dockerHost": "unix:///var/run/docker.sock", "publicHost": "n2.local"}
    created = await client.post("/admin/nodes", json=data, headers=ADMIN)
    assert created.status_code == 200, created.text
    node = created.json()
    assert isinstance(node["id"], int)
    assert node["name"] == "test-node-2"
    assert node["dockerHost"] == data["dockerHost"]
    assert node["publicHost"] == "n2.local"
    assert node["status"] == "unknown"

    listed = await client.get("/admin/nodes", headers=ADMIN)
    assert listed.status_code == 200
    assert node["id"] in [n["id"] for n in listed.json()]

    fetched = await client.get(f"/admin/nodes/{node['id']}", headers=ADMIN)
    assert fetched.json()["name"] == "test-node-2"

    updated = await client.put(f"/admin/nodes/{node['id']}", json={"name": "test-node-2-updated"}, headers=ADMIN)
    assert updated.status_code == 200, updated.text
    assert updated.json()["name"] == "test-node-2-updated"
    assert updated.json()["publicHost"] == "n2.local"

    deleted = await client.delete(f"/admin/nodes/{node['id']}", headers=ADMIN)
    assert deleted.status_code == 204
    assert (await client.get(f"/admin/nodes/{node['id']}", headers=ADMIN)).status_code == 404


async def test_node_with_instances_cannot_be_deleted(client: httpx.AsyncClient, db) -> None:
    node = (
        await client.post(
            "/admin/nodes", json={"name": "busy-node", "dockerHost": "h", "publicHost": "p"}, headers=ADMIN
        )
    ).json()
    tenant = await create_tenant(client)
    instance_id = await db.fetchval(
        "INSERT INTO instances (tenant_id, node_id, phone_number, provider, cpu_limit, memory_limit,"
        " nano_cpus, memory_bytes, status) VALUES ($1, $2, '9876543210', 'sandbox', '0.5', '512m',"
        " 500000000, 536870912, 'running') RETURNING id",
        tenant.id,
        node["id"],
    )
    try:
        response = await client.delete(f"/admin/nodes/{node['id']}", headers=ADMIN)
        assert response.status_code == 409
        assert response.json()["error"] == "Cannot delete node because it has instances assigned to it."
        assert (await client.get(f"/admin/nodes/{node['id']}", headers=ADMIN)).status_code == 200
    finally:
        await db.execute("DELETE FROM instances WHERE id = $1", instance_id)
        await client.delete(f"/admin/nodes/{node['id']}", headers=ADMIN)


async def test_bad_node_bodies_are_422_and_write_nothing(client: httpx.AsyncClient, db) -> None:
    before = await db.fetchval("SELECT count(*) FROM nodes")
    bad_name = await client.post(
        "/admin/nodes", json={"name": "Bad Name!", "dockerHost": "h", "publicHost": "p"}, headers=ADMIN
    )
    assert bad_name.status_code == 422
    assert bad_name.json()["field"] == "name"
    missing = await client.post("/admin/nodes", json={"name": "ok-name"}, headers=ADMIN)
    assert missing.status_code == 422
    assert missing.json()["field"] == "dockerHost"
    for field in ("dockerHost", "publicHost"):
        too_long = await client.post(
            "/admin/nodes", json={"name": "long-host", "dockerHost": "h", "publicHost": "p", field: "h" * 1025},
            headers=ADMIN,
        )  # fmt: skip
        assert too_long.status_code == 422, too_long.text
        assert too_long.json()["field"] == field
    assert await db.fetchval("SELECT count(*) FROM nodes") == before


async def test_duplicate_node_name_is_409(client: httpx.AsyncClient) -> None:
    body = {"name": "dup-node", "dockerHost": "h", "publicHost": "p"}
    first = await client.post("/admin/nodes", json=body, headers=ADMIN)
    try:
        second = await client.post("/admin/nodes", json=body, headers=ADMIN)
        assert second.status_code == 409
    finally:
        await client.delete(f"/admin/nodes/{first.json()['id']}", headers=ADMIN)
