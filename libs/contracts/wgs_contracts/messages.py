"""Every message body that crosses a process, as msgspec Structs.

Each family is a tagged union (`type` field) so a consumer decodes any member
of its family in one call. Every message carries `schema_version`; a consumer
accepts versions up to the one it was built with.
"""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Final
from uuid import uuid4

import msgspec

SCHEMA_VERSION: Final = 1


def utcnow() -> datetime:
    """Current time, timezone-aware UTC."""
    return datetime.now(UTC)


def new_event_id() -> str:
    """A fresh id for one event; also its JetStream `Nats-Msg-Id`."""
    return uuid4().hex


class Provider(StrEnum):
    """WhatsApp client libraries an instance can run on."""

    WHATSMEOW = "whatsmeow"
    BAILEYS = "baileys"
    WAWEBJS = "wawebjs"
    WABA = "waba"
    SANDBOX = "sandbox"


class InstanceStatus(StrEnum):
    """Lifecycle states an instance reports (`status` of the REST instance)."""

    PENDING = "pending"  # written, waiting for a node
    UNSCHEDULABLE = "unschedulable"  # no node fits right now (event only; row stays pending)
    SCHEDULED = "scheduled"  # placed; start command sent to the node
    STARTING = "starting"
    MIGRATING = "migrating"  # moving to another node; sends are queued meanwhile
    RUNNING = "running"
    FAILED = "failed"
    STOPPED = "stopped"
    DELETING = "deleting"
    REMOVED = "removed"  # container gone (event only; the row is deleted)


class Base(msgspec.Struct, kw_only=True, frozen=True, tag_field="type"):
    """Common fields of every message."""

    schema_version: int = SCHEMA_VERSION


class InstanceSpec(msgspec.Struct, kw_only=True, frozen=True):
    """What a node needs to run one instance."""

    instance_id: int
    tenant_id: int
    provider: Provider
    nano_cpus: int
    memory_bytes: int
    pids_limit: int
    phone_number: str = ""


# --- commands to the control plane (stream WGS_COMMANDS) -------------------------------------


class CreateInstance(Base, frozen=True, tag="instance.create"):
    """An instance row was written; place it and start it."""

    instance_id: int
    tenant_id: int


class DeleteInstance(Base, frozen=True, tag="instance.delete"):
    """The tenant deleted an instance; stop and remove its container wherever it runs."""

    instance_id: int
    tenant_id: int


ControlCommand = CreateInstance | DeleteInstance


# --- commands to one node agent (stream WGS_NODE_COMMANDS) -----------------------------------


class StartInstance(Base, frozen=True, tag="instance.start"):
    """Run `spec` at `generation` on the addressed node (idempotent)."""

    spec: InstanceSpec
    generation: int


class StopInstance(Base, frozen=True, tag="instance.stop"):
    """Stop (and with `remove`, delete) the instance's container if it runs at `generation` or older."""

    instance_id: int
    tenant_id: int
    generation: int
    remove: bool = True


NodeCommand = StartInstance | StopInstance


# --- events -----------------------------------------------------------------------------------


class InstanceStatusChanged(Base, frozen=True, tag="instance.status"):
    """An instance changed state; published on `wgs.evt.instance.{id}.status`."""

    instance_id: int
    tenant_id: int
    generation: int
    node: str | None
    status: InstanceStatus
    reason: str | None = None
    event_id: str = msgspec.field(default_factory=new_event_id)
    at: datetime = msgspec.field(default_factory=utcnow)


class NodeHeartbeat(Base, frozen=True, tag="node.heartbeat"):
    """A node agent is alive; published every few seconds on `wgs.evt.node.{node}.heartbeat`."""

    node: str
    runtime: str
    nano_cpus: int
    memory_bytes: int
    providers: tuple[str, ...]
    running_instances: tuple[int, ...]
    at: datetime = msgspec.field(default_factory=utcnow)


class SchedulerLeaderElected(Base, frozen=True, tag="scheduler.leader"):
    """A scheduler process took the leader lock; published on `wgs.evt.scheduler.leader`."""

    holder: str
    at: datetime = msgspec.field(default_factory=utcnow)


class ApiKeysRevoked(Base, frozen=True, tag="tenant.keys_revoked"):
    """Keys of a tenant were revoked (one, or every other key on a rotation); published on
    `wgs.evt.tenant.{tenant}.keys_revoked` so that every API process stops accepting them at once."""

    tenant_id: int
    key_ids: tuple[int, ...]
    at: datetime = msgspec.field(default_factory=utcnow)


class NodeStatusChanged(Base, frozen=True, tag="node.status"):
    """The scheduler marked a node `lost` (heartbeats stopped) or `ready` again; `wgs.evt.node.{node}.status`."""

    node: str
    status: str  # "lost" | "ready"
    moved_instances: tuple[int, ...] = ()
    at: datetime = msgspec.field(default_factory=utcnow)


class SnapshotTaken(Base, frozen=True, tag="node.snapshot"):
    """A node agent stored (or skipped, unchanged) a snapshot of an instance; `wgs.evt.node.{node}.snapshot`.

    `pause_ms` is how long the container was paused for the copy (0 when it was not running).
    """

    node: str
    instance_id: int
    generation: int
    reason: str  # periodic | stopped | paired | handoff | died
    version: int | None  # None: skipped because the content did not change
    size_bytes: int
    pause_ms: float
    at: datetime = msgspec.field(default_factory=utcnow)


# --- request-reply ------------------------------------------------------------------------------


class AssignmentsRequest(Base, frozen=True, tag="node.assignments.request"):
    """A node agent asks which instances it should run (sent on start and periodically)."""

    node: str


class AssignmentsReply(Base, frozen=True, tag="node.assignments.reply"):
    """The instances placed on the node with their current generations."""

    node: str
    assignments: tuple[StartInstance, ...]


class HandOffRequest(Base, frozen=True, tag="node.handoff.request"):
    """Scheduler → the node running an instance: stop it, store its final snapshot, remove its container."""

    instance_id: int
    generation: int


class HandOffReply(Base, frozen=True, tag="node.handoff.reply"):
    """The instance stopped and its final snapshot is stored (`ok`), or why not (then it runs on)."""

    ok: bool
    version: int | None = None
    error: str | None = None


class MigrateRequest(Base, frozen=True, tag="scheduler.migrate.request"):
    """API → scheduler leader: move an instance to `target_node` (a node name, or "any")."""

    instance_id: int
    target_node: str


class DrainRequest(Base, frozen=True, tag="scheduler.drain.request"):
    """API → scheduler leader: cordon a node and migrate every instance off it."""

    node: str


class MigrateReply(Base, frozen=True, tag="scheduler.migrate.reply"):
    """Outcome of a migration: `status` is the HTTP status the API answers with, `error` its reason,
    `running` the new node's status event that ended it (the API records it at once, as on create)."""

    status: int
    node: str | None = None
    error: str | None = None
    running: InstanceStatusChanged | None = None


class DrainReply(Base, frozen=True, tag="scheduler.drain.reply"):
    """Outcome of a drain: the instances moved and those that could not be (id → reason)."""

    status: int
    node: str
    moved: tuple[int, ...] = ()
    failed: dict[int, str] = msgspec.field(default_factory=dict)
    error: str | None = None


class SandboxPhoneLookup(Base, frozen=True, tag="sandbox.phone.lookup"):
    """Asks whether a sandbox instance has this phone number (when no agent answers for it)."""

    phone: str


class SandboxPhoneKnown(Base, frozen=True, tag="sandbox.phone.known"):
    """The answer to a `SandboxPhoneLookup`: an instance not being deleted has the number."""

    known: bool


WIRE_TYPES: Final = (
    CreateInstance,
    DeleteInstance,
    StartInstance,
    StopInstance,
    InstanceStatusChanged,
    NodeHeartbeat,
    SchedulerLeaderElected,
    AssignmentsRequest,
    AssignmentsReply,
    NodeStatusChanged,
    ApiKeysRevoked,
    SnapshotTaken,
    HandOffRequest,
    HandOffReply,
    MigrateRequest,
    MigrateReply,
    DrainRequest,
    DrainReply,
    SandboxPhoneLookup,
    SandboxPhoneKnown,
)
