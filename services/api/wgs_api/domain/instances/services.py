"""Instance lifecycle as the API drives it: write desired state, publish, wait for the outcome."""

import asyncio
import logging
from typing import Any

import asyncpg
from wgs_contracts import subjects
from wgs_contracts.messages import CreateInstance, DeleteInstance, InstanceStatus, MigrateReply, MigrateRequest
from wgs_db.engine import DB
from wgs_db.tables import Instance, Node, Tenant

from wgs_api.config import Settings
from wgs_api.domain.instances import schemas
from wgs_api.domain.instances.status import apply_status, next_status
from wgs_api.domain.instances.validation import (
    ValidInstance,
    check_fits_largest_node,
    validate_create,
)
from wgs_api.domain.messaging.leases import LEASES
from wgs_api.domain.webhooks.urls import validate_url
from wgs_api.errors import Conflict, Invalid, NoCapacity, NotFound, StartFailed, Unavailable, error_for_status
from wgs_api.messaging import ApiMessaging

log = logging.getLogger(__name__)
SETTLED = {InstanceStatus.RUNNING, InstanceStatus.FAILED, InstanceStatus.UNSCHEDULABLE}


def instance_view(row: dict[str, Any]) -> schemas.Instance:
    """The tenant's view of an instance row."""
    return schemas.Instance(
        id=row["id"],
        tenant_id=row["tenant_id"],
        user_id=row["tenant_id"],
        node_id=row["node_id"],
        name=row["name"],
        phone_number=row["phone_number"],
        provider=row["provider"],
        webhook_url=row["webhook_url"],
        status=row["status"],
        status_reason=row["status_reason"],
        connection_state=row["connection_state"],
        phone_id=row["phone_id"],
        generation=row["generation"],
        cpu_limit=row["cpu_limit"],
        memory_limit=row["memory_limit"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def fetch_own(tenant_id: int, instance_id: int) -> dict[str, Any]:
    """The tenant's instance row; another tenant's instance is as missing as a deleted one."""
    row = await Instance.select().where((Instance.id == instance_id) & (Instance.tenant == tenant_id)).first()
    if row is None:
        raise NotFound("Instance not found")
    return row


async def list_own(tenant_id: int, *, limit: int | None = None, after: int | None = None) -> list[schemas.Instance]:
    """The tenant's instances, oldest first: all of them, or `limit` with ids above `after`."""
    query = Instance.select().where(Instance.tenant == tenant_id)
    if after is not None:
        query = query.where(Instance.id > after)
    query = query.order_by(Instance.id)
    rows = await (query if limit is None else query.limit(limit))
    return [instance_view(r) for r in rows]


async def largest_node() -> tuple[int | None, int | None]:
    """CPU and memory of the largest nodes that ever reported capacity."""
    rows = await Node.raw(
        "SELECT max(nano_cpus) AS cpu, max(memory_bytes) AS memory FROM nodes WHERE last_heartbeat_at IS NOT NULL"
    )
    return (rows[0]["cpu"], rows[0]["memory"]) if rows else (None, None)


async def insert_instance(tenant_id: int, valid: ValidInstance, pids_limit: int) -> dict[str, Any]:
    """Write the instance row (status `pending`); 409 on a duplicate phone or a full quota."""
    try:
        async with DB.transaction():
            tenant = (
                await Tenant.select(Tenant.max_instances)
                .where(Tenant.id == tenant_id)
                .first()
                .lock_rows("NO KEY UPDATE")
            )
            if await Instance.exists().where((Instance.tenant == tenant_id) & (Instance.phone_number == valid.phone)):
                raise asyncpg.UniqueViolationError("duplicate phone")
            count = await Instance.count().where(Instance.tenant == tenant_id)
            if tenant is None or count >= tenant["max_instances"]:
                limit = tenant["max_instances"] if tenant else 0
                raise Conflict(f"Instance limit reached ({limit} per tenant).")
            rows = await Instance.insert(
                Instance(
                    tenant=tenant_id,
                    name=valid.name,
                    phone_number=valid.phone,
                    provider=valid.provider.value,
                    webhook_url=valid.webhook,
                    cpu_limit=valid.cpu_limit,
                    memory_limit=valid.memory_limit,
                    nano_cpus=valid.nano_cpus,
                    memory_bytes=valid.memory_bytes,
                    pids_limit=pids_limit,
                )
            ).returning(*Instance.all_columns())
    except asyncpg.UniqueViolationError:
        raise Conflict(f"An instance with phone {valid.phone} already exists.", field="phone") from None
    return rows[0]


async def discard_unplaced(instance_id: int) -> bool:
    """Delete an instance that no node took; False when it got placed meanwhile."""
    rows = await Instance.raw("DELETE FROM instances WHERE id = {} AND node_id IS NULL RETURNING id", instance_id)
    return bool(rows)


async def create_instance(
    tenant_id: int,
    data: schemas.InstanceCreate,
    *,
    wait_seconds: float,
    settings: Settings,
    messaging: ApiMessaging,
) -> tuple[schemas.Instance, bool]:
    """Create an instance and wait up to `wait_seconds` for it to run; (view, settled)."""
    valid = validate_create(
        data,
        default_cpu=settings.default_cpu,
        default_memory=settings.default_memory,
        min_memory_bytes=settings.min_memory_bytes,
    )
    if valid.webhook is not None:
        await validate_url(valid.webhook, field="webhook")
    check_fits_largest_node(valid, *await largest_node())
    row = await insert_instance(tenant_id, valid, settings.pids_limit)
    instance_id = row["id"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    with messaging.board.watch(instance_id) as events:
        try:
            await messaging.send_command(
                CreateInstance(instance_id=instance_id, tenant_id=tenant_id),
                msg_id=f"instance.create:{instance_id}",
            )
        except Exception as exc:
            await Instance.delete().where(Instance.id == instance_id)
            log.warning("create of instance %d rolled back: %r", instance_id, exc)
            raise Unavailable("The control plane is unavailable; nothing was created.") from None
        while wait_seconds > 0:
            event = await next_status(events, SETTLED, deadline)
            if event is None:
                break
            if event.status is InstanceStatus.UNSCHEDULABLE:
                if await discard_unplaced(instance_id):
                    raise NoCapacity(event.reason or "No node can run this instance.")
                continue
            await apply_status(event)  # the durable consumer may not have recorded it yet
            if event.status is InstanceStatus.FAILED:
                raise StartFailed(f"Instance failed to start: {event.reason}")
            break
    current = await Instance.select().where(Instance.id == instance_id).first()
    if current is None:
        raise NotFound("Instance not found")
    return instance_view(current), current["status"] == InstanceStatus.RUNNING.value


async def delete_instance(tenant_id: int, instance_id: int, *, settings: Settings, messaging: ApiMessaging) -> bool:
    """Delete an instance; True once its container is gone (and the row with it)."""
    await fetch_own(tenant_id, instance_id)
    LEASES.end(instance_id)
    unplaced = await Instance.raw("DELETE FROM instances WHERE id = {} AND node_id IS NULL RETURNING id", instance_id)
    if unplaced:
        return True
    await Instance.raw(
        "UPDATE instances SET desired_state = 'deleted', status = 'deleting', updated_at = now() WHERE id = {}",
        instance_id,
    )
    deadline = asyncio.get_running_loop().time() + settings.delete_wait_seconds
    with messaging.board.watch(instance_id) as events:
        await messaging.send_command(
            DeleteInstance(instance_id=instance_id, tenant_id=tenant_id),
            msg_id=f"instance.delete:{instance_id}",
        )
        removed = await next_status(events, {InstanceStatus.REMOVED}, deadline)
    if removed is None:
        return False
    await Instance.delete().where(Instance.id == instance_id)
    return True


async def migrate_instance(
    tenant_id: int, instance_id: int, body: schemas.MigrateBody, *, settings: Settings, messaging: ApiMessaging
) -> schemas.Migrated:
    """Move the instance to another node (the scheduler orchestrates); its view once it runs there."""
    await fetch_own(tenant_id, instance_id)
    target = body.target_node.strip()
    if not target or len(target) > 63:
        raise Invalid('target_node: a node name or "any"', field="target_node")
    reply = await messaging.ask_scheduler(
        subjects.SCHEDULER_MIGRATE,
        MigrateRequest(instance_id=instance_id, target_node=target),
        MigrateReply,
        timeout=settings.migrate_timeout_seconds,
    )
    if reply.status != 200:
        raise error_for_status(reply.status, reply.error or "Migration failed")
    if reply.running is not None:
        await apply_status(reply.running)  # the durable consumer may not have recorded it yet
    return schemas.Migrated(status="ok", instance=instance_view(await fetch_own(tenant_id, instance_id)))
