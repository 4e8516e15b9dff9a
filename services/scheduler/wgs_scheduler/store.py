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


async def record_heartbeat(beat: NodeHeartbeat) -> bool | None:
    """Store a node's capacity and liveness (it is no longer lost).

    None when no node of that name is registered; True when the node was marked lost until now.
    """
    rows = await Node.raw(
        "WITH before AS (SELECT id, lost_at FROM nodes WHERE name = {} FOR UPDATE)"
        " UPDATE nodes SET nano_cpus = {}, memory_bytes = {}, providers = {}::jsonb, runtime = {},"
        " last_heartbeat_at = now(), lost_at = NULL FROM before WHERE nodes.id = before.id"
        " RETURNING before.lost_at IS NOT NULL AS was_lost",
        beat.node,
        beat.nano_cpus,
        beat.memory_bytes,
        msgspec.json.encode(list(beat.providers)).decode(),
        beat.runtime,
    )
    return rows[0]["was_lost"] if rows else None


async def mark_lost_nodes(node_timeout_seconds: float) -> list[dict[str, Any]]:
    """Mark lost the nodes whose heartbeats stopped `node_timeout_seconds` ago; those newly marked."""
    return await Node.raw(
        "UPDATE nodes SET lost_at = now() WHERE lost_at IS NULL AND last_heartbeat_at IS NOT NULL"
        " AND last_heartbeat_at < now() - make_interval(secs => {}) RETURNING id, name",
        node_timeout_seconds,
    )


async def lost_nodes() -> list[dict[str, Any]]:
    """Nodes marked lost that still have instances placed on them."""
    return await Node.raw(
        "SELECT n.id, n.name FROM nodes n WHERE n.lost_at IS NOT NULL"
        " AND EXISTS (SELECT 1 FROM instances i WHERE i.node_id = n.id AND i.desired_state = 'running')"
    )


async def node_by_name(name: str) -> dict[str, Any] | None:
    """A node row by name, or None."""
    return await Node.select(Node.id, Node.name).where(Node.name == name).first()


async def set_schedulable(node_id: int, schedulable: bool) -> None:
    """Cordon (False) or uncordon (True) a node."""
    await Node.update({Node.schedulable: schedulable}).where(Node.id == node_id)


async def instances_on(node_id: int) -> list[dict[str, Any]]:
    """The instances placed on a node that should run, oldest first."""
    return await Instance.raw(
        "SELECT * FROM instances WHERE node_id = {} AND desired_state = 'running' ORDER BY id", node_id
    )


async def move(instance_id: int, generation: int, node_id: int, reason: str) -> dict[str, Any] | None:
    """Re-place an instance on `node_id` at the next generation, if it is still at `generation` (else None)."""
    rows = await Instance.raw(
        "UPDATE instances SET node_id = {}, generation = generation + 1, status = 'scheduled',"
        " status_reason = {}, status_at = NULL, updated_at = now()"
        " WHERE id = {} AND generation = {} AND desired_state = 'running' RETURNING *",
        node_id,
        reason,
        instance_id,
        generation,
    )
    return rows[0] if rows else None


async def set_status(instance_id: int, generation: int, status: str, reason: str | None) -> None:
    """Record a status the scheduler decided (e.g. `migrating`) on the instance at `generation`."""
    await Instance.raw(
        "UPDATE instances SET status = {}, status_reason = {}, status_at = now(), updated_at = now()"
        " WHERE id = {} AND generation = {}",
        status,
        reason,
        instance_id,
        generation,
    )


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
