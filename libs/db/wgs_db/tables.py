"""Piccolo tables mirroring the schema that `migrations/*.sql` creates.

The SQL files are the source of truth for the schema; these classes only
describe it for queries. Foreign keys state nullability and ON DELETE
explicitly (Piccolo's defaults are nullable + cascade).
"""

from piccolo.columns import (
    Array,
    BigInt,
    BigSerial,
    Boolean,
    DoublePrecision,
    ForeignKey,
    Integer,
    OnDelete,
    Serial,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.columns.column_types import JSONB
from piccolo.table import Table

from wgs_db.engine import DB


class Tenant(Table, db=DB, tablename="tenants"):
    """A customer account; owns API keys and instances."""

    id = Serial(primary_key=True)
    name = Varchar(length=128, unique=True)
    email = Varchar(length=256, null=True)
    max_instances = Integer(default=100)
    send_rate_per_second = DoublePrecision(default=20.0)
    send_burst = Integer(default=40)
    retention_days = Integer(default=30)
    created_at = Timestamptz()


class ApiKey(Table, db=DB, tablename="api_keys"):
    """A tenant's API key, stored as a SHA-256 hash; `prefix` identifies it in listings."""

    id = Serial(primary_key=True)
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade, db_column_name="tenant_id")
    prefix = Varchar(length=16)
    key_hash = Varchar(length=64, unique=True)
    created_at = Timestamptz()
    revoked_at = Timestamptz(null=True, default=None)
    last_used_at = Timestamptz(null=True, default=None)


class Node(Table, db=DB, tablename="nodes"):
    """A VPS running one node agent; capacity and liveness come from its heartbeats."""

    id = Serial(primary_key=True)
    name = Varchar(length=63, unique=True)
    docker_host = Text()
    public_host = Text()
    schedulable = Boolean(default=True)
    nano_cpus = BigInt(default=0)
    memory_bytes = BigInt(default=0)
    providers = JSONB(default=[])
    runtime = Varchar(length=16, null=True, default=None)
    last_heartbeat_at = Timestamptz(null=True, default=None)
    lost_at = Timestamptz(null=True, default=None)  # set by the scheduler when heartbeats stopped
    created_at = Timestamptz()


class Instance(Table, db=DB, tablename="instances"):
    """One WhatsApp number: desired state, placement (node + generation) and reported status."""

    id = Serial(primary_key=True)
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.restrict, db_column_name="tenant_id")
    node = ForeignKey(Node, null=True, on_delete=OnDelete.restrict, db_column_name="node_id")
    name = Varchar(length=256, null=True)
    phone_number = Varchar(length=20)
    provider = Varchar(length=16)
    webhook_url = Text(null=True)
    desired_state = Varchar(length=16, default="running")
    status = Varchar(length=16, default="pending")
    status_reason = Text(null=True, default=None)
    status_at = Timestamptz(null=True, default=None)
    generation = Integer(default=0)
    cpu_limit = Varchar(length=16)
    memory_limit = Varchar(length=16)
    nano_cpus = BigInt()
    memory_bytes = BigInt()
    pids_limit = Integer(default=256)
    connection_state = Varchar(length=16, null=True, default=None)
    phone_id = Varchar(length=64, null=True, default=None)
    created_at = Timestamptz()
    updated_at = Timestamptz()


class WebhookEndpoint(Table, db=DB, tablename="webhook_endpoints"):
    """Where a tenant receives events: of one instance, or (`instance` NULL) of all its instances."""

    id = Serial(primary_key=True)
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade, db_column_name="tenant_id")
    instance = ForeignKey(Instance, null=True, on_delete=OnDelete.cascade, db_column_name="instance_id")
    url = Text()
    secret = Text()  # defaults to webhook_secret() in the database
    previous_secret = Text(null=True, default=None)  # still signing, beside `secret`, until it expires
    previous_secret_expires_at = Timestamptz(null=True, default=None)
    events = Array(base_column=Text())
    enabled = Boolean(default=True)
    ordered = Boolean(default=True)  # deliveries one after the other in creation order; else earliest due first
    headers = JSONB(default={})  # sent with every delivery, beside the signature headers
    description = Text(null=True, default=None)
    legacy = Boolean(default=False)
    created_at = Timestamptz()

    @classmethod
    async def adopt_instance_webhook(cls, instance_id: int) -> None:
        """Give an instance's legacy `webhook_url` its endpoint row (filter `*`, generated secret) once."""
        await cls.raw(
            "INSERT INTO webhook_endpoints (tenant_id, instance_id, url, legacy, description, created_at)"
            " SELECT tenant_id, id, webhook_url, true, 'the webhook field of the instance', created_at"
            " FROM instances WHERE id = {} AND webhook_url IS NOT NULL"
            " ON CONFLICT (instance_id) WHERE legacy DO NOTHING",
            instance_id,
        )


class WebhookDelivery(Table, db=DB, tablename="webhook_deliveries"):
    """One event for one endpoint: its frozen payload and where its delivery stands."""

    id = BigSerial(primary_key=True)
    endpoint = ForeignKey(WebhookEndpoint, null=False, on_delete=OnDelete.cascade, db_column_name="endpoint_id")
    event_id = Text()
    event_type = Varchar(length=32)
    payload = Text()
    status = Varchar(length=16, default="pending")
    attempts = Integer(default=0)
    retry_base = Integer(default=0)
    retry_since = Timestamptz(null=True, default=None)  # its retry period's start (0015; `wgs_webhooks.store`)
    next_attempt_at = Timestamptz()
    lease_until = Timestamptz(null=True, default=None)
    last_status_code = Integer(null=True, default=None)
    last_error = Text(null=True, default=None)
    last_latency_ms = Integer(null=True, default=None)
    created_at = Timestamptz()
    delivered_at = Timestamptz(null=True, default=None)


class WebhookAttempt(Table, db=DB, tablename="webhook_attempts"):
    """One HTTP attempt of a delivery (`latency_ms` NULL while it runs)."""

    id = BigSerial(primary_key=True)
    delivery = ForeignKey(WebhookDelivery, null=False, on_delete=OnDelete.cascade, db_column_name="delivery_id")
    attempt = Integer()
    started_at = Timestamptz()
    status_code = Integer(null=True, default=None)
    error = Text(null=True, default=None)
    latency_ms = Integer(null=True, default=None)


class Snapshot(Table, db=DB, tablename="snapshots"):
    """One version of an instance's state folder (zstd tar); its bytes are in `snapshot_chunks`."""

    id = BigSerial(primary_key=True)
    instance = ForeignKey(Instance, null=False, on_delete=OnDelete.cascade, db_column_name="instance_id")
    generation = Integer()
    version = Integer()
    status = Varchar(length=16, default="uploading")
    sha256 = Varchar(length=64, null=True, default=None)
    size_bytes = BigInt()
    stored_bytes = BigInt(default=0)
    chunk_count = Integer(default=0)
    created_at = Timestamptz()
    completed_at = Timestamptz(null=True, default=None)


__all__ = [
    "ApiKey",
    "Instance",
    "Node",
    "Snapshot",
    "Tenant",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
]
