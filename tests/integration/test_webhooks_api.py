"""Webhook endpoints through the real API and PostgreSQL: CRUD, secrets, tenant isolation, 422s."""

import asyncio
import base64
from datetime import datetime, timedelta

import httpx
import pytest

from tests.support.api import Tenant, create_tenant, unique_phone

RECEIVER = "http://127.0.0.1:9/hook"  # never called here


async def create_instance(client: httpx.AsyncClient, tenant: Tenant, **fields) -> int:
    """A pending instance (no scheduler needed: `?wait=0`)."""
    body = {"phone": unique_phone(), "provider": "sandbox", **fields}
    response = await client.post("/api/instances?wait=0", json=body, headers=tenant.headers)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def assert_secret(secret: str) -> None:
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) >= 24


async def test_tenant_endpoint_create_list_get_update_rotate_delete(client: httpx.AsyncClient) -> None:
    tenant = await create_tenant(client)
    body = {"url": RECEIVER, "events": ["message", "qr"], "description": "crm"}
    created = await client.post("/api/webhooks", json=body, headers=tenant.headers)
    assert created.status_code == 201, created.text
    endpoint = created.json()
    assert endpoint["instanceId"] is None
    assert endpoint["url"] == RECEIVER
    assert endpoint["events"] == ["message", "qr"]
    assert endpoint["enabled"] is True
    assert endpoint["ordered"] is True
    assert endpoint["legacy"] is False
    assert endpoint["description"] == "crm"
    assert_secret(endpoint["secret"])
    path = f"/api/webhooks/{endpoint['id']}"

    listed = (await client.get("/api/webhooks", headers=tenant.headers)).json()
    assert [e["id"] for e in listed] == [endpoint["id"]]
    assert "secret" not in listed[0]

    fetched = (await client.get(path, headers=tenant.headers)).json()
    assert fetched == endpoint

    patched = await client.patch(
        path, json={"events": ["*"], "enabled": False, "ordered": False, "description": None}, headers=tenant.headers
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["ordered"] is False
    assert patched.json()["events"] == ["*"]
    assert patched.json()["enabled"] is False
    assert patched.json()["description"] is None
    assert patched.json()["url"] == RECEIVER

    assert endpoint["previousSecretExpiresAt"] is None
    rotated = await client.post(f"{path}/rotate-secret", headers=tenant.headers)
    assert rotated.status_code == 200
    assert_secret(rotated.json()["secret"])
    assert rotated.json()["secret"] != endpoint["secret"]
    grace_ends = datetime.fromisoformat(rotated.json()["previousSecretExpiresAt"])
    assert abs(grace_ends - (datetime.now(grace_ends.tzinfo) + timedelta(days=1))) < timedelta(minutes=1)  # the default
    assert (await client.get(path, headers=tenant.headers)).json()["secret"] == rotated.json()["secret"]

    assert (await client.delete(path, headers=tenant.headers)).status_code == 204
    assert (await client.get(path, headers=tenant.headers)).status_code == 404
    assert (await client.get("/api/webhooks", headers=tenant.headers)).json() == []


async def test_instance_endpoints_are_listed_per_instance(client: httpx.AsyncClient, db) -> None:
    tenant = await create_tenant(client)
    first, second = await create_instance(client, tenant), await create_instance(client, tenant)
    created = await client.post(f"/api/instances/{first}/webhooks", json={"url": RECEIVER}, headers=tenant.headers)
    assert created.status_code == 201, created.text
    assert created.json()["instanceId"] == first
    assert created.json()["events"] == ["*"]
    listed = (await client.get(f"/api/instances/{first}/webhooks", headers=tenant.headers)).json()
    assert [e["id"] for e in listed] == [created.json()["id"]]
    assert (await client.get(f"/api/instances/{second}/webhooks", headers=tenant.headers)).json() == []
    assert (await client.get("/api/webhooks", headers=tenant.headers)).json() == []
    await db.execute("DELETE FROM instances WHERE tenant_id = $1", tenant.id)
    assert await db.fetchval("SELECT count(*) FROM webhook_endpoints WHERE tenant_id = $1", tenant.id) == 0


async def test_other_tenants_endpoints_and_instances_are_404(client: httpx.AsyncClient, db) -> None:
    owner, stranger = await create_tenant(client), await create_tenant(client)
    instance_id = await create_instance(client, owner)
    endpoint = (
        await client.post(f"/api/instances/{instance_id}/webhooks", json={"url": RECEIVER}, headers=owner.headers)
    ).json()
    path = f"/api/webhooks/{endpoint['id']}"
    other = stranger.headers
    assert (await client.get(path, headers=other)).status_code == 404
    assert (await client.patch(path, json={"enabled": False}, headers=other)).status_code == 404
    assert (await client.delete(path, headers=other)).status_code == 404
    assert (await client.post(f"{path}/rotate-secret", headers=other)).status_code == 404
    assert (await client.get(f"{path}/deliveries", headers=other)).status_code == 404
    assert (await client.get(f"{path}/deliveries/1", headers=other)).status_code == 404
    assert (await client.post(f"{path}/deliveries/1/redeliver", headers=other)).status_code == 404
    assert (await client.get(f"/api/instances/{instance_id}/webhooks", headers=other)).status_code == 404
    response = await client.post(f"/api/instances/{instance_id}/webhooks", json={"url": RECEIVER}, headers=other)
    assert response.status_code == 404
    assert (await client.get("/api/webhooks", headers=other)).json() == []
    assert (await client.get(path)).status_code == 401
    assert (await client.get(path, headers=owner.headers)).json()["enabled"] is True
    await db.execute("DELETE FROM instances WHERE tenant_id = $1", owner.id)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/hook"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "https://"}, "url"),
        ({"url": "https://example.com:99999/"}, "url"),
        ({"url": "https://example.com/" + "x" * 2100}, "url"),
        ({}, "url"),
        ({"url": RECEIVER, "events": []}, "events"),
        ({"url": RECEIVER, "events": ["message", "typing"]}, "events"),
        ({"url": RECEIVER, "events": "message"}, "events"),
        ({"url": RECEIVER, "description": "d" * 513}, "description"),
        ({"url": RECEIVER, "ordered": "sometimes"}, "ordered"),
    ],
)
async def test_bad_endpoint_bodies_are_422_naming_the_field_and_write_nothing(
    client: httpx.AsyncClient, db, body: dict, field: str
) -> None:
    tenant = await create_tenant(client)
    response = await client.post("/api/webhooks", json=body, headers=tenant.headers)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert await db.fetchval("SELECT count(*) FROM webhook_endpoints WHERE tenant_id = $1", tenant.id) == 0


async def test_bad_update_is_422_and_changes_nothing(client: httpx.AsyncClient) -> None:
    tenant = await create_tenant(client)
    endpoint = (await client.post("/api/webhooks", json={"url": RECEIVER}, headers=tenant.headers)).json()
    path = f"/api/webhooks/{endpoint['id']}"
    for body, field in (({"url": "gopher://x", "enabled": False}, "url"), ({"events": ["nope"]}, "events")):
        response = await client.patch(path, json=body, headers=tenant.headers)
        assert response.status_code == 422, response.text
        assert response.json()["field"] == field
    assert (await client.get(path, headers=tenant.headers)).json() == endpoint
    bad_status = await client.get(f"{path}/deliveries?status=lost", headers=tenant.headers)
    assert bad_status.status_code == 422
    assert bad_status.json()["field"] == "status"


async def test_the_delivery_log_pages_newest_first_with_before_and_finds_an_event(
    client: httpx.AsyncClient, db
) -> None:
    tenant = await create_tenant(client)
    endpoint = await client.post("/api/webhooks", json={"url": RECEIVER, "enabled": False}, headers=tenant.headers)
    endpoint_id = endpoint.json()["id"]
    ids = [
        await db.fetchval(
            "INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, payload, status)"
            " VALUES ($1, $2, 'message', '{}', $3) RETURNING id",
            endpoint_id,
            f"event-{n}",
            "dead" if n % 2 else "delivered",
        )
        for n in range(5)
    ]
    path = f"/api/webhooks/{endpoint_id}/deliveries"

    async def page(**params) -> list[int]:
        response = await client.get(path, params=params, headers=tenant.headers)
        assert response.status_code == 200, response.text
        return [d["id"] for d in response.json()]

    first = await page(limit=2)
    second = await page(limit=2, before=first[-1])
    third = await page(limit=2, before=second[-1])
    assert first + second + third == ids[::-1]
    assert await page(limit=2, before=ids[0]) == []
    assert await page(status="dead", before=ids[3]) == [ids[1]]
    assert await page(eventId="event-3") == [ids[3]]  # the delivery of one event
    assert await page(eventId="event-3", status="delivered") == []
    assert await page(eventId="no such event") == []
    for name, bad in (
        ("before", "0"),
        ("before", "-1"),
        ("before", "abc"),
        ("before", str(2**63)),
        ("eventId", ""),
        ("eventId", "e" * 201),
    ):
        response = await client.get(path, params={name: bad}, headers=tenant.headers)
        assert response.status_code in (400, 422), response.text
        assert response.json()["field"] == name
    await client.delete(f"/api/webhooks/{endpoint_id}", headers=tenant.headers)  # its deliveries go with it


async def test_a_scope_holds_at_most_25_endpoints_even_when_created_at_once(client: httpx.AsyncClient) -> None:
    tenant = await create_tenant(client)
    instance_id = await create_instance(client, tenant)
    for path in ("/api/webhooks", f"/api/instances/{instance_id}/webhooks"):
        answers = await asyncio.gather(
            *(client.post(path, json={"url": RECEIVER, "enabled": False}, headers=tenant.headers) for _ in range(30))
        )
        assert sorted(a.status_code for a in answers) == [201] * 25 + [409] * 5
        refused = next(a for a in answers if a.status_code == 409).json()
        assert refused["code"] == "conflict"
        assert "At most 25 webhook endpoints" in refused["error"]
        assert len((await client.get(path, headers=tenant.headers)).json()) == 25
    other_instance = await create_instance(client, tenant)  # each scope counts on its own
    created = await client.post(
        f"/api/instances/{other_instance}/webhooks", json={"url": RECEIVER}, headers=tenant.headers
    )
    assert created.status_code == 201, created.text
    for instance in (instance_id, other_instance):
        await client.delete(f"/api/instances/{instance}", headers=tenant.headers)
    for endpoint in (await client.get("/api/webhooks", headers=tenant.headers)).json():
        await client.delete(f"/api/webhooks/{endpoint['id']}", headers=tenant.headers)


async def test_a_rotated_out_secret_keeps_signing_for_the_grace_asked_for(client: httpx.AsyncClient, db) -> None:
    tenant = await create_tenant(client)
    endpoint = (await client.post("/api/webhooks", json={"url": RECEIVER}, headers=tenant.headers)).json()
    path = f"/api/webhooks/{endpoint['id']}/rotate-secret"

    async def stored() -> tuple[str, str | None, datetime | None]:
        row = await db.fetchrow(
            "SELECT secret, previous_secret, previous_secret_expires_at FROM webhook_endpoints WHERE id = $1",
            endpoint["id"],
        )
        return row["secret"], row["previous_secret"], row["previous_secret_expires_at"]

    graced = await client.post(path, json={"graceSeconds": 60}, headers=tenant.headers)
    assert graced.status_code == 200, graced.text
    secret, previous, expires_at = await stored()
    assert (secret, previous) == (graced.json()["secret"], endpoint["secret"])
    assert datetime.fromisoformat(graced.json()["previousSecretExpiresAt"]) == expires_at
    assert timedelta(seconds=50) < expires_at - datetime.now(expires_at.tzinfo) <= timedelta(seconds=60)

    at_once = await client.post(path, json={"graceSeconds": 0}, headers=tenant.headers)  # e.g. the secret leaked
    assert at_once.status_code == 200, at_once.text
    assert at_once.json()["previousSecretExpiresAt"] is None
    assert await stored() == (at_once.json()["secret"], None, None)  # the earlier one's grace ends too

    for body, field in (
        ({"graceSeconds": -1}, "graceSeconds"),
        ({"graceSeconds": 7 * 86_400 + 1}, "graceSeconds"),
        ({"graceSeconds": "a minute"}, "graceSeconds"),
        ({"graceSeconds": 1.5}, "graceSeconds"),
        ({"graceSeconds": None}, "graceSeconds"),
        ({"grace": 60}, "grace"),
    ):
        refused = await client.post(path, json=body, headers=tenant.headers)
        assert refused.status_code == 422, (body, refused.text)
        assert refused.json()["field"] == field, body
    assert await stored() == (at_once.json()["secret"], None, None)  # nothing changed
    assert (await client.get(f"/api/webhooks/{endpoint['id']}", headers=tenant.headers)).json() == at_once.json()
    await db.execute("DELETE FROM webhook_endpoints WHERE id = $1", endpoint["id"])


async def test_bad_recoveries_are_4xx_and_recover_nothing(client: httpx.AsyncClient, db) -> None:
    tenant, other = await create_tenant(client), await create_tenant(client)
    endpoint = (await client.post("/api/webhooks", json={"url": RECEIVER}, headers=tenant.headers)).json()
    path = f"/api/webhooks/{endpoint['id']}/recover"
    dead = await db.fetchval(
        "INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, payload, status, attempts)"
        " VALUES ($1, 'recover-me', 'message', '{}', 'dead', 8) RETURNING id",
        endpoint["id"],
    )
    an_hour_ago = (datetime.now().astimezone() - timedelta(hours=1)).isoformat()
    for body, field in (
        ({}, "since"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-11-27T00:00:00"}, "since"),  # no time zone
        ({"since": "2999-01-01T00:00:00Z"}, "since"),  # not before now
        ({"since": an_hour_ago, "until": an_hour_ago}, "since"),
        ({"since": an_hour_ago, "limit": 0}, "limit"),
        ({"since": an_hour_ago, "limit": 10_001}, "limit"),
        ({"since": an_hour_ago, "status": "dead"}, "status"),
    ):
        refused = await client.post(path, json=body, headers=tenant.headers)
        assert refused.status_code == 422, (body, refused.text)
        assert refused.json()["field"] == field, body
    assert (await client.post(path, json={"since": an_hour_ago}, headers=other.headers)).status_code == 404
    missing = f"/api/webhooks/{endpoint['id'] + 1_000_000}/recover"
    assert (await client.post(missing, json={"since": an_hour_ago}, headers=tenant.headers)).status_code == 404
    assert await db.fetchval("SELECT status FROM webhook_deliveries WHERE id = $1", dead) == "dead"
    await db.execute("DELETE FROM webhook_endpoints WHERE id = $1", endpoint["id"])


async def test_an_endpoint_carries_the_headers_of_the_tenants_choosing(client: httpx.AsyncClient, db) -> None:
    tenant = await create_tenant(client)
    body = {"url": RECEIVER, "headers": {"X-Api-Key": "k3y with spaces", "Authorization": "Bearer abc"}}
    created = await client.post("/api/webhooks", json=body, headers=tenant.headers)
    assert created.status_code == 201, created.text
    assert created.json()["headers"] == body["headers"]
    path = f"/api/webhooks/{created.json()['id']}"
    assert (await client.get(path, headers=tenant.headers)).json()["headers"] == body["headers"]
    listed = (await client.get("/api/webhooks", headers=tenant.headers)).json()
    assert "headers" not in listed[0]  # listings show no secrets, and a header may hold one

    replaced = await client.patch(path, json={"headers": {"X-Tenant": "acme"}}, headers=tenant.headers)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["headers"] == {"X-Tenant": "acme"}

    for headers in (
        {f"X-H{n}": "v" for n in range(11)},
        {"X Bad": "v"},
        {"": "v"},
        {"Webhook-Signature": "v1,forged"},
        {"content-type": "text/plain"},
        {"Host": "elsewhere"},
        {"X-A": "1", "x-a": "2"},
        {"X-A": "line\r\nX-Injected: 1"},
        {"X-A": "caf\u00e9"},
        {"X-A": "v" * 1025},
        {"X-A": 5},
    ):
        refused = await client.patch(path, json={"headers": headers}, headers=tenant.headers)
        assert refused.status_code == 422, (headers, refused.text)
        assert refused.json()["field"] == "headers", headers
        created_too = await client.post(
            "/api/webhooks", json={"url": RECEIVER, "headers": headers}, headers=tenant.headers
        )
        assert created_too.status_code == 422, (headers, created_too.text)
    assert (await client.get(path, headers=tenant.headers)).json()["headers"] == {"X-Tenant": "acme"}
    assert await db.fetchval("SELECT count(*) FROM webhook_endpoints WHERE tenant_id = $1", tenant.id) == 1
    await db.execute("DELETE FROM webhook_endpoints WHERE tenant_id = $1", tenant.id)
