"""Tenants and API keys in PostgreSQL."""

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
from wgs_contracts import subjects
from wgs_contracts.messages import ApiKeysRevoked
from wgs_db.engine import DB, fetch
from wgs_db.tables import ApiKey, Tenant
from wgs_kit.coalescing import Coalescer

from wgs_api.domain.accounts import keys, schemas
from wgs_api.domain.accounts.key_cache import KEYS
from wgs_api.domain.messaging.leases import LEASES
from wgs_api.errors import Conflict, Invalid, NotFound
from wgs_api.messaging import ApiMessaging
from wgs_api.patching import unset_to_none

KEY_USE_RESOLUTION = timedelta(seconds=60)
MIN_RETENTION_DAYS, MAX_RETENTION_DAYS = 1, 3650  # as the `tenants` table checks
# Upper bounds that keep the rate-limit arithmetic finite (a bucket refills `rate x seconds idle`
# tokens in a double) and the counts inside PostgreSQL's `integer`; the lowest rate waits
# 1,000 s for a token.
MAX_INSTANCES_LIMIT = 1_000_000
MIN_SEND_RATE, MAX_SEND_RATE = 0.001, 1_000_000.0
MAX_SEND_BURST = 1_000_000
TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,127}$")


def tenant_view(row: dict[str, Any]) -> schemas.Tenant:
    """The admin view of a tenant row."""
    return schemas.Tenant(
        id=row["id"],
        name=row["name"],
        email=row["email"],
        max_instances=row["max_instances"],
        send_rate_per_second=row["send_rate_per_second"],
        send_burst=row["send_burst"],
        retention_days=row["retention_days"],
        created_at=row["created_at"],
    )


def key_view(row: dict[str, Any]) -> schemas.ApiKeyInfo:
    """The listing view of an API key row."""
    return schemas.ApiKeyInfo(
        id=row["id"],
        prefix=row["prefix"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )


def validate_tenant(data: schemas.TenantCreate) -> None:
    """Reject a bad tenant body with a 422 naming the field."""
    if not TENANT_NAME.match(data.name):
        raise Invalid("name: 1-128 letters, digits, spaces, dots, dashes", field="name")
    if data.email is not None and ("@" not in data.email or len(data.email) > 256):
        raise Invalid("email: not an e-mail address", field="email")
    check_limits(data.max_instances, data.send_rate_per_second, data.send_burst, data.retention_days)


def check_limits(max_instances: int | None, rate: float | None, burst: int | None, retention_days: int | None) -> None:
    """Reject quotas, send rates, bursts and retention out of their ranges with a 422 naming the field."""
    if max_instances is not None and not 0 <= max_instances <= MAX_INSTANCES_LIMIT:
        raise Invalid(f"maxInstances: must be 0-{MAX_INSTANCES_LIMIT}", field="maxInstances")
    if rate is not None and not MIN_SEND_RATE <= rate <= MAX_SEND_RATE:
        raise Invalid(f"sendRatePerSecond: must be {MIN_SEND_RATE:g}-{MAX_SEND_RATE:.0f}", field="sendRatePerSecond")
    if burst is not None and not 1 <= burst <= MAX_SEND_BURST:
        raise Invalid(f"sendBurst: must be 1-{MAX_SEND_BURST}", field="sendBurst")
    if retention_days is not None and not MIN_RETENTION_DAYS <= retention_days <= MAX_RETENTION_DAYS:
        raise Invalid(f"retentionDays: must be {MIN_RETENTION_DAYS}-{MAX_RETENTION_DAYS} days", field="retentionDays")


async def create_tenant(data: schemas.TenantCreate) -> schemas.TenantCreated:
    """Create a tenant and its first API key in one transaction."""
    validate_tenant(data)
    key = keys.generate_key()
    try:
        async with DB.transaction():
            tenant = (
                await Tenant.insert(
                    Tenant(
                        name=data.name,
                        email=data.email,
                        max_instances=data.max_instances,
                        send_rate_per_second=data.send_rate_per_second,
                        send_burst=data.send_burst,
                        retention_days=data.retention_days,
                    )
                ).returning(*Tenant.all_columns())
            )[0]
            api_key = (
                await ApiKey.insert(
                    ApiKey(
                        tenant=tenant["id"],
                        prefix=keys.display_prefix(key),
                        key_hash=keys.hash_key(key),
                    )
                ).returning(ApiKey.id)
            )[0]
    except asyncpg.UniqueViolationError:
        raise Conflict(f"A tenant named {data.name!r} already exists.", field="name") from None
    view = tenant_view(tenant)
    return schemas.TenantCreated(
        **{f: getattr(view, f) for f in view.__struct_fields__},
        api_key=key,
        api_key_id=api_key["id"],
    )


async def list_tenants() -> list[schemas.Tenant]:
    """Every tenant, oldest first."""
    rows = await Tenant.select().order_by(Tenant.id)
    return [tenant_view(r) for r in rows]


async def get_tenant(tenant_id: int) -> schemas.Tenant:
    """One tenant, or 404."""
    row = await Tenant.select().where(Tenant.id == tenant_id).first()
    if row is None:
        raise NotFound("Tenant not found")
    return tenant_view(row)


async def update_tenant(tenant_id: int, data: schemas.TenantUpdate) -> schemas.Tenant:
    """Change the given fields of a tenant (quota, send rate, retention)."""
    await get_tenant(tenant_id)
    changes = {
        column: value
        for column, value in (
            (Tenant.email, data.email),
            (Tenant.max_instances, data.max_instances),
            (Tenant.send_rate_per_second, data.send_rate_per_second),
            (Tenant.send_burst, data.send_burst),
            (Tenant.retention_days, data.retention_days),
        )
        if not isinstance(value, msgspec.UnsetType)
    }
    check_limits(
        unset_to_none(data.max_instances),
        unset_to_none(data.send_rate_per_second),
        unset_to_none(data.send_burst),
        unset_to_none(data.retention_days),
    )
    if changes:
        await Tenant.update(changes).where(Tenant.id == tenant_id)  # type: ignore[arg-type]
        LEASES.end_all()  # a new rate applies to the next send here (other processes: within a lease's time)
    return await get_tenant(tenant_id)


async def create_key(messaging: ApiMessaging, tenant_id: int, data: schemas.ApiKeyCreate) -> schemas.ApiKeyCreated:
    """A new key for the tenant, or the one it already holds (`data.key`, taken over); with
    `revoke_others`, every other key is revoked (rotation). `409` when that key is in use already."""
    if data.key is not None:
        try:
            keys.check_imported_key(data.key)
        except ValueError as exc:
            raise Invalid(str(exc), field="key") from None
    await get_tenant(tenant_id)
    key = data.key if data.key is not None else keys.generate_key()
    revoked: list[dict[str, Any]] = []
    try:
        async with DB.transaction():
            if data.revoke_others:
                revoked = await ApiKey.raw(
                    "UPDATE api_keys SET revoked_at = now() WHERE tenant_id = {} AND revoked_at IS NULL RETURNING id",
                    tenant_id,
                )
            row = (
                await ApiKey.insert(
                    ApiKey(tenant=tenant_id, prefix=keys.display_prefix(key), key_hash=keys.hash_key(key))
                ).returning(*ApiKey.all_columns())
            )[0]
    except asyncpg.UniqueViolationError:
        raise Conflict("key: this key is in use already", field="key") from None
    if revoked:
        await keys_revoked(messaging, tenant_id, [r["id"] for r in revoked])
    info = key_view(row)
    return schemas.ApiKeyCreated(**{f: getattr(info, f) for f in info.__struct_fields__}, key=key)


async def list_keys(tenant_id: int) -> list[schemas.ApiKeyInfo]:
    """The tenant's keys (revoked ones included), without secrets."""
    await get_tenant(tenant_id)
    rows = await ApiKey.select().where(ApiKey.tenant == tenant_id).order_by(ApiKey.id)
    return [key_view(r) for r in rows]


async def revoke_key(messaging: ApiMessaging, tenant_id: int, key_id: int) -> None:
    """Revoke one key; 404 when the tenant has no such key. Every API process refuses it from now on."""
    rows = await ApiKey.raw(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = {} AND tenant_id = {} RETURNING id",
        key_id,
        tenant_id,
    )
    if not rows:
        raise NotFound("API key not found")
    await keys_revoked(messaging, tenant_id, [key_id])


async def keys_revoked(messaging: ApiMessaging, tenant_id: int, key_ids: list[int]) -> None:
    """Forget the tenant's keys here, then tell the other API processes to do the same."""
    KEYS.forget_tenant(tenant_id)
    await messaging.announce(
        subjects.tenant_keys_revoked(tenant_id), ApiKeysRevoked(tenant_id=tenant_id, key_ids=tuple(key_ids))
    )


KEYS_IN_USE = """
SELECT id, tenant_id, key_hash, last_used_at FROM api_keys WHERE key_hash = ANY($1::text[]) AND revoked_at IS NULL
"""


async def tenants_for_key_hashes(key_hashes: list[str]) -> list[int | None]:
    """For each key hash, in order: the tenant id of its unrevoked key, or None.

    One lookup for all the requests waiting meanwhile (`wgs_kit.coalescing`); each key is
    marked used at most once a minute.
    """
    rows = {row["key_hash"]: row for row in await fetch(KEYS_IN_USE, list(set(key_hashes)))}
    stale_before = datetime.now(UTC) - KEY_USE_RESOLUTION
    unmarked = [row["id"] for row in rows.values() if row["last_used_at"] is None or row["last_used_at"] < stale_before]
    if unmarked:
        await fetch("UPDATE api_keys SET last_used_at = now() WHERE id = ANY($1::int[])", unmarked)
    return [int(rows[h]["tenant_id"]) if h in rows else None for h in key_hashes]


_key_lookups: Coalescer[str, int | None] = Coalescer(tenants_for_key_hashes, alone_on_error=True)


async def tenant_for_key(key: str) -> int | None:
    """The tenant id an unrevoked key belongs to (remembered for a few seconds: `key_cache`);
    a key looked up is marked used at most once a minute."""
    key_hash = keys.hash_key(key)
    tenant_id = KEYS.tenant(key_hash)
    if tenant_id is not None:
        return tenant_id
    revocations_before = KEYS.revocations
    tenant_id = await _key_lookups.submit(key_hash)
    if tenant_id is not None:
        KEYS.remember(key_hash, tenant_id, revocations_before=revocations_before)
    return tenant_id
