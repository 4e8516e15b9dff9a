"""Admin endpoints for tenants and their API keys."""

from litestar import Controller, delete, get, patch, post
from litestar.datastructures import State
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from wgs_api.domain.accounts import schemas, services
from wgs_api.domain.accounts.guards import require_admin


class TenantController(Controller):
    """`/admin/tenants`: operators create tenants and manage their keys."""

    path = "/admin/tenants"
    guards = [require_admin]
    tags = ["admin: tenants"]

    @post("/", operation_id="CreateTenant", status_code=HTTP_201_CREATED)
    async def create(self, data: schemas.TenantCreate) -> schemas.TenantCreated:
        """Create a tenant; the response holds its first API key, shown only once."""
        return await services.create_tenant(data)

    @get("/", operation_id="ListTenants")
    async def list_all(self) -> list[schemas.Tenant]:
        """List tenants."""
        return await services.list_tenants()

    @get("/{tenant_id:int}", operation_id="GetTenant")
    async def get_one(self, tenant_id: int) -> schemas.Tenant:
        """Get one tenant."""
        return await services.get_tenant(tenant_id)

    @patch("/{tenant_id:int}", operation_id="UpdateTenant")
    async def update(self, tenant_id: int, data: schemas.TenantUpdate) -> schemas.Tenant:
        """Change a tenant's e-mail, instance quota or send rate limit."""
        return await services.update_tenant(tenant_id, data)

    @post("/{tenant_id:int}/keys", operation_id="CreateApiKey", status_code=HTTP_201_CREATED)
    async def create_key(
        self, tenant_id: int, state: State, data: schemas.ApiKeyCreate | None = None
    ) -> schemas.ApiKeyCreated:
        """Issue a new API key (shown once); `revokeOthers: true` rotates: every other key dies."""
        return await services.create_key(state.messaging, tenant_id, data or schemas.ApiKeyCreate())

    @get("/{tenant_id:int}/keys", operation_id="ListApiKeys")
    async def list_keys(self, tenant_id: int) -> list[schemas.ApiKeyInfo]:
        """List a tenant's keys without their secrets."""
        return await services.list_keys(tenant_id)

    @delete(
        "/{tenant_id:int}/keys/{key_id:int}",
        operation_id="RevokeApiKey",
        status_code=HTTP_204_NO_CONTENT,
    )
    async def revoke_key(self, tenant_id: int, key_id: int, state: State) -> None:
        """Revoke a key: requests with it get 401 from now on, on every API process."""
        await services.revoke_key(state.messaging, tenant_id, key_id)
