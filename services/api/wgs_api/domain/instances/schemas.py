"""Instance bodies: the original gateway's request and camelCase response fields."""

from datetime import datetime

import msgspec


class Resources(msgspec.Struct, forbid_unknown_fields=True):
    """`resources` of a create request: `cpu` cores (`"0.5"` or `0.5`), `memory` like `512m`."""

    cpu: str | float | None = None
    memory: str | None = None


class InstanceCreate(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /api/instances` body (field names as the original gateway)."""

    phone: str
    provider: str
    name: str | None = None
    webhook: str | None = None
    resources: Resources | None = None


class Instance(msgspec.Struct, rename="camel"):
    """An instance as tenants see it."""

    id: int
    tenant_id: int
    user_id: int  # the original gateway's name of `tenant_id`, kept for its clients
    node_id: int | None
    name: str | None
    phone_number: str
    provider: str
    webhook_url: str | None
    status: str
    status_reason: str | None
    connection_state: str | None
    phone_id: str | None
    generation: int
    cpu_limit: str
    memory_limit: str
    created_at: datetime
    updated_at: datetime


class InstanceDeleting(msgspec.Struct, rename="camel"):
    """`202` answer of a delete whose container is not gone yet."""

    id: int
    status: str


class MigrateBody(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /api/instances/{id}/migrate` body: a node name, or `"any"` (field name as the original gateway)."""

    target_node: str = "any"


class Migrated(msgspec.Struct):
    """`{"status": "ok", "instance": {...}}` once the instance runs on its new node."""

    status: str
    instance: Instance
