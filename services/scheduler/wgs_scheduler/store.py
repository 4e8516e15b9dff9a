"""The scheduler's reads and writes of nodes and instances."""

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from wgs_contracts.messages import InstanceSpec, NodeHeartbeat, Provider, StartInstance
from wgs_db.queries import node_loads
from wgs_db.tables import Instance, Node

from wgs_scheduler.placement import NodeState


async def node_states(node_timeout_seconds: float) -> list[NodeState]:
    """Every node with liveness (heartbeat age) and what is reserved on it."""
    rows = await Node.select().output(load_json=True)
    loads = await node_loads()
    oldest_alive = datetime.now(UTC) - timedelta(seconds=node_timeout_seconds)
    states = []
    for row in rows:
        load = loads.get(row["id"], {"nano_cpus": 0, "memory_bytes": 0})
        beat = row["last_heartbeat_at"]
        states.append(
            NodeState(
                id=row["id"],
                name=row["name"],
                alive=beat is not None and beat >= oldest_alive,
                schedulable=row["schedulable"],
                providers=frozenset(row["providers"]),
                nano_cpus=row["nano_cpus"],
                memory_bytes=row["memory_bytes"],
                reserved_nano_cpus=load["nano_cpus"],
                reserved_memory_bytes=load["memory_bytes"],
            )
        )
    return states


async def fetch_instance(instance_id: int) -> dict[str, Any] | None:
    """An instance row (raw column names), or None."""
    rows = await Instance.raw("SELECT * FROM instances WHERE id = {}", instance_id)
    return rows[0] if rows else None


async def node_name(node_id: int) -> str | None:
    """A node's name, or None."""
    row = await Node.select(Node.name).where(Node.id == node_id).first()
    return row["name"] if row else None


async def place(instance_id: int, node_id: int) -> dict[str, Any] | None:
    """Bind an unplaced instance to a node at the next generation; None if it changed meanwhile."""
    rows = await Instance.raw(
        "UPDATE instances SET node_id = {}, generation = generation + 1, status = 'scheduled',"
        " status_reason = NULL, status_at = NULL, updated_at = now()"
        " WHERE id = {} AND node_id IS NULL AND desired_state = 'running' RETURNING *",
        node_id,
        instance_id,
    )
    return rows[0] if rows else None


async def pending_instance_ids(min_age_seconds: float) -> list[int]:
    """Instances waiting for a node for at least `min_age_seconds`, oldest first."""
    rows = await Instance.raw(
        "SELECT id FROM instances WHERE node_id IS NULL AND desired_state = 'running'"
        " AND created_at < now() - make_interval(secs => {}) ORDER BY id",
        min_age_seconds,
    )
    return [r["id"] for r in rows]


async def record_heartbeat(beat: NodeHeartbeat) -> bool:
    """Store a node's capacity and liveness; False when no node of that name is registered."""
    rows = await Node.raw(
        "UPDATE nodes SET nano_cpus = {}, memory_bytes = {}, providers = {}::jsonb, runtime = {},"
        " last_heartbeat_at = now() WHERE name = {} RETURNING id",
        beat.nano_cpus,
        beat.memory_bytes,
        msgspec.json.encode(list(beat.providers)).decode(),
        beat.runtime,
        beat.node,
    )
    return bool(rows)


def start_command(row: dict[str, Any]) -> StartInstance:
    """The start command for an instance row at its current generation."""
    return StartInstance(
        spec=InstanceSpec(
            instance_id=row["id"],
            tenant_id=row["tenant_id"],
            provider=Provider(row["provider"]),
            nano_cpus=row["nano_cpus"],
            memory_bytes=row["memory_bytes"],
            pids_limit=row["pids_limit"],
            phone_number=row["phone_number"],
        ),
        generation=row["generation"],
    )


async def assignments(node: str) -> list[StartInstance]:
    """Start commands for every instance the node should run now."""
    rows = await Instance.raw(
        "SELECT i.* FROM instances i JOIN nodes n ON n.id = i.node_id"
        " WHERE n.name = {} AND i.desired_state = 'running' ORDER BY i.id",
        node,
    )
    return [start_command(r) for r in rows]
