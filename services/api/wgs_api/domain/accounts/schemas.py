"""Tenant and API key bodies (camelCase JSON)."""

from datetime import datetime

import msgspec


class TenantCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """`POST /admin/tenants` body."""

    name: str
    email: str | None = None
    max_instances: int = 100
    send_rate_per_second: float = 20.0
    send_burst: int = 40
    retention_days: int = 30


class TenantUpdate(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """`PATCH /admin/tenants/{id}`: only the given fields change."""

    email: str | msgspec.UnsetType = msgspec.UNSET
    max_instances: int | msgspec.UnsetType = msgspec.UNSET
    send_rate_per_second: float | msgspec.UnsetType = msgspec.UNSET
    send_burst: int | msgspec.UnsetType = msgspec.UNSET
    retention_days: int | msgspec.UnsetType = msgspec.UNSET


class Tenant(msgspec.Struct, rename="camel"):
    """A tenant as the admin API shows it."""

    id: int
    name: str
    email: str | None
    max_instances: int
    send_rate_per_second: float
    send_burst: int
    retention_days: int
    created_at: datetime


class TenantCreated(Tenant, rename="camel"):
    """A new tenant with its first API key, shown only in this response."""

    api_key: str
    api_key_id: int


class ApiKeyCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """`POST /admin/tenants/{id}/keys` body: with `revokeOthers`, a rotation; with `key`, a key the
    tenant already holds (from the original gateway, which stored its keys in plain text) is taken
    over instead of a new one made."""

    revoke_others: bool = False
    key: str | None = None


class ApiKeyInfo(msgspec.Struct, rename="camel"):
    """An API key without its secret."""

    id: int
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyInfo, rename="camel"):
    """A new API key, its secret shown only in this response."""

    key: str
