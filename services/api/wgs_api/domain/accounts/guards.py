"""Authentication: tenants by `Authorization: Bearer <key>`, operators by `X-Admin-API-Secret`."""

import hmac

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from wgs_api.config import get_settings
from wgs_api.domain.accounts.services import tenant_for_key
from wgs_api.errors import Unauthorized, Unavailable


async def current_tenant_id(request: ASGIConnection) -> int:
    """Dependency: the authenticated tenant's id, or 401."""
    auth = request.headers.get("authorization", "")
    scheme, _, key = auth.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("Unauthorized")
    tenant_id = await tenant_for_key(key.strip())
    if tenant_id is None:
        raise Unauthorized("Unauthorized")
    return tenant_id


def require_admin(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Guard: the request carries the operators' secret (503 when none is configured)."""
    secret = get_settings().admin_secret
    if not secret:
        raise Unavailable("Admin API is disabled: ADMIN_API_SECRET is not set.")
    given = connection.headers.get("x-admin-api-secret", "")
    if not hmac.compare_digest(given.encode(), secret.encode()):
        raise Unauthorized("Unauthorized")
