"""A small client of the gateway's REST API for tests."""

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from wgs_devstack.services import ADMIN_SECRET


@dataclass
class Tenant:
    """A tenant created for one test, with its API key."""

    id: int
    name: str
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        """The tenant's auth header."""
        return {"Authorization": f"Bearer {self.api_key}"}


ADMIN = {"X-Admin-API-Secret": ADMIN_SECRET}


async def create_tenant(client: httpx.AsyncClient, **fields: Any) -> Tenant:
    """A new tenant with a unique name."""
    body = {"name": f"t-{uuid.uuid4().hex[:10]}", **fields}
    response = await client.post("/admin/tenants", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    data = response.json()
    return Tenant(id=data["id"], name=data["name"], api_key=data["apiKey"])


def unique_phone() -> str:
    """A phone number no other test uses."""
    return "49" + str(uuid.uuid4().int)[:10]


async def pending_instance(client: httpx.AsyncClient, tenant: Tenant) -> int:
    """An instance that no node runs (a `waba` one with wait=0 and no node for it: it stays pending)."""
    response = await client.post(
        "/api/instances?wait=0", json={"phone": unique_phone(), "provider": "waba"}, headers=tenant.headers
    )
    assert response.status_code == 202, response.text
    return int(response.json()["id"])
