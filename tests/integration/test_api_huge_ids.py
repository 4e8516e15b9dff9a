"""Ids beyond PostgreSQL's integer range are not found (404 JSON), never a server error."""

import httpx
import pytest

from tests.support.api import ADMIN, create_tenant

HUGE = 2**31  # one past the largest `integer` (serial) id

TENANT_CALLS = [
    ("GET", f"/api/instances/{HUGE}", None),
    ("POST", f"/api/instances/{HUGE}/send", {"to": "491701234567", "text": "x"}),
    ("GET", f"/api/instances/{HUGE}/messages/abc", None),
    ("GET", f"/api/instances/{-HUGE - 1}", None),
    ("DELETE", f"/api/instances/{HUGE}", None),
    ("GET", f"/api/instances/{HUGE}/webhooks", None),
    ("GET", f"/api/webhooks/{HUGE}/deliveries/{HUGE}", None),
]
ADMIN_CALLS = [
    ("GET", f"/admin/tenants/{HUGE}", None),
    ("DELETE", f"/admin/tenants/1/keys/{HUGE}", None),
    ("GET", f"/admin/nodes/{HUGE}", None),
    ("GET", f"/admin/instances/1/snapshots/{HUGE}/download", None),
]


@pytest.mark.parametrize(("method", "path", "body"), TENANT_CALLS)
async def test_a_tenant_id_beyond_the_integer_range_is_404(
    client: httpx.AsyncClient, method: str, path: str, body: dict | None
) -> None:
    tenant = await create_tenant(client)
    response = await client.request(method, path, json=body, headers=tenant.headers)
    assert response.status_code == 404, response.text
    assert "Not found" in response.json()["error"]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
async def test_an_admin_id_beyond_the_integer_range_is_404(
    client: httpx.AsyncClient, method: str, path: str, body: dict | None
) -> None:
    response = await client.request(method, path, json=body, headers=ADMIN)
    assert response.status_code == 404, response.text
