"""NATS subject names: lowercase, dot-separated, most general first."""

from typing import Final

ROOT: Final = "wgs"

# Commands to the control plane (JetStream stream COMMANDS).
INSTANCE_CREATE: Final = "wgs.cmd.instance.create"
INSTANCE_DELETE: Final = "wgs.cmd.instance.delete"
ALL_COMMANDS: Final = "wgs.cmd.>"

# Commands to one node agent (JetStream stream NODE_COMMANDS).
ALL_NODE_COMMANDS: Final = "wgs.node.*.cmd"

# Public events (instance events are in JetStream stream EVENTS; heartbeats are core NATS).
ALL_INSTANCE_STATUS: Final = "wgs.evt.instance.*.status"
ALL_INSTANCE_EVENTS: Final = "wgs.evt.instance.>"
ALL_INSTANCE_CONNECTION: Final = "wgs.evt.instance.*.connection"
ALL_MESSAGE_STATUS: Final = "wgs.evt.instance.*.message_status"
ALL_NODE_HEARTBEATS: Final = "wgs.evt.node.*.heartbeat"
ALL_NODE_STATUS: Final = "wgs.evt.node.*.status"
ALL_NODE_SNAPSHOTS: Final = "wgs.evt.node.*.snapshot"
SCHEDULER_LEADER: Final = "wgs.evt.scheduler.leader"
ALL_TENANT_KEYS_REVOKED: Final = "wgs.evt.tenant.*.keys_revoked"

# Sends queued while an instance cannot take them (JetStream stream OUTBOUND).
ALL_OUTBOUND: Final = "wgs.out.*"

# The simulated network's traffic for a sandbox phone that was away (JetStream stream SANDBOX_MAIL).
ALL_SANDBOX_MAIL: Final = "wgs.mail.sandbox.*"

# Dead letters (JetStream stream DEAD_LETTERS).
ALL_DEAD_LETTERS: Final = "wgs.dlq.>"

# Request-reply.
ALL_NODE_ASSIGNMENTS: Final = "wgs.rpc.node.*.assignments"
ALL_SANDBOX_PHONES: Final = "wgs.rpc.sandbox.*"
SANDBOX_DIRECTORY: Final = "wgs.rpc.directory.sandbox-phone"  # answered by one API process (queue group)
SCHEDULER_MIGRATE: Final = "wgs.rpc.scheduler.migrate"  # answered by the leader only
SCHEDULER_DRAIN: Final = "wgs.rpc.scheduler.drain"  # answered by the leader only

# Request-reply with the state service (session-state snapshots).
STATE_UPLOAD_BEGIN: Final = "wgs.rpc.state.upload.begin"
STATE_UPLOAD_CHUNK: Final = "wgs.rpc.state.upload.chunk"
STATE_UPLOAD_COMMIT: Final = "wgs.rpc.state.upload.commit"
STATE_RESTORE_BEGIN: Final = "wgs.rpc.state.restore.begin"
STATE_RESTORE_CHUNK: Final = "wgs.rpc.state.restore.chunk"


def node_commands(node: str) -> str:
    """Subject of the commands addressed to one node agent."""
    return f"wgs.node.{node}.cmd"


def tenant_keys_revoked(tenant_id: int) -> str:
    """Subject announcing that keys of one tenant were revoked (core NATS)."""
    return f"wgs.evt.tenant.{tenant_id}.keys_revoked"


def instance_status(instance_id: int) -> str:
    """Subject of one instance's status events."""
    return f"wgs.evt.instance.{instance_id}.status"


def all_instance_events_of(kind: str) -> str:
    """Subject of one kind of every instance's events (`kind` as in `instance_events.EVENT_KINDS`)."""
    return f"wgs.evt.instance.*.{kind}"


def instance_event(instance_id: int, kind: str) -> str:
    """Subject of one kind of an instance's events (`status`, `message`, `message_status`, ...)."""
    return f"wgs.evt.instance.{instance_id}.{kind}"


def outbound(instance_id: int) -> str:
    """Subject of an instance's queue of sends waiting for it."""
    return f"wgs.out.{instance_id}"


def provider_calls(node: str) -> str:
    """Request subject relaying HTTP calls to the providers on one node."""
    return f"wgs.rpc.node.{node}.provider"


def provider_sends(node: str) -> str:
    """Request subject relaying several sends to one provider on the node at once."""
    return f"wgs.rpc.node.{node}.sends"


def sandbox_phone(phone: str) -> str:
    """Request subject of the sandbox instance holding a phone number (the simulated network)."""
    return f"wgs.rpc.sandbox.{phone}"


def sandbox_mail(phone: str) -> str:
    """Subject of the envelopes waiting for a sandbox phone that was away (its mailbox)."""
    return f"wgs.mail.sandbox.{phone}"


def node_heartbeat(node: str) -> str:
    """Subject of one node's heartbeats."""
    return f"wgs.evt.node.{node}.heartbeat"


def node_assignments(node: str) -> str:
    """Request subject a node agent asks for the instances it should run."""
    return f"wgs.rpc.node.{node}.assignments"


def dead_letter(consumer: str) -> str:
    """Subject where a consumer parks messages it gave up on."""
    return f"wgs.dlq.{consumer}"


def instance_snapshot_events(instance_id: int) -> str:
    """Subject of an instance's snapshot events (a restore fell back to an older version)."""
    return instance_event(instance_id, "snapshot")


def node_status(node: str) -> str:
    """Subject of one node's liveness changes (`lost`, `ready`)."""
    return f"wgs.evt.node.{node}.status"


def node_snapshots(node: str) -> str:
    """Subject of the snapshots one node agent took (with the pause each one cost)."""
    return f"wgs.evt.node.{node}.snapshot"


def node_handoff(node: str) -> str:
    """Request subject asking a node agent to hand an instance off (final snapshot, then stop)."""
    return f"wgs.rpc.node.{node}.handoff"
