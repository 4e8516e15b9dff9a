"""Node registration and its view with liveness and allocations."""

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
from wgs_contracts import subjects
from wgs_contracts.messages import DrainReply, DrainRequest
from wgs_contracts.resources import NANO
from wgs_db.queries import node_loads
from wgs_db.tables import Node

from wgs_api.config import get_settings
from wgs_api.domain.nodes import schemas
from wgs_api.errors import Conflict, Invalid, NotFound, error_for_status
from wgs_api.messaging import ApiMessaging
from wgs_api.patching import unset_to_none

NODE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MAX_HOST_LENGTH = 1024  # a Docker URL or host name; longer is a mistake, not an address
NODE_IN_USE = "Cannot delete node because it has instances assigned to it."


def node_status(last_heartbeat_at: datetime | None) -> str:
    """`ready` while heartbeats arrive, `lost` when they stopped, `unknown` before the first."""
    if last_heartbeat_at is None:
        return "unknown"
    timeout = timedelta(seconds=get_settings().node_timeout_seconds)
    return "ready" if datetime.now(UTC) - last_heartbeat_at <= timeout else "lost"


def node_view(row: dict[str, Any], load: dict[str, Any] | None) -> schemas.Node:
    """The admin view of a node row and its load."""
    load = load or {"nano_cpus": 0, "memory_bytes": 0, "instances": 0}
    return schemas.Node(
        id=row["id"],
        name=row["name"],
        docker_host=row["docker_host"],
        public_host=row["public_host"],
        schedulable=row["schedulable"],
        status=node_status(row["last_heartbeat_at"]),
        capacity=schemas.Capacity(cpu=row["nano_cpus"] / NANO, memory=row["memory_bytes"]),
        allocated=schemas.Capacity(
            cpu=load["nano_cpus"] / NANO, memory=load["memory_bytes"], instances=load["instances"]
        ),
        providers=list(row["providers"]),
        runtime=row["runtime"],
        last_heartbeat_at=row["last_heartbeat_at"],
        created_at=row["created_at"],
    )


def validate_fields(name: str | None, docker_host: str | None, public_host: str | None) -> None:
    """Reject bad node fields with a 422 naming the field."""
    if name is not None and not NODE_NAME.match(name):
        raise Invalid(
            "name: 1-63 lowercase letters, digits and dashes, starting and ending alphanumeric",
            field="name",
        )
    for field, value in (("dockerHost", docker_host), ("publicHost", public_host)):
        if value is not None and not value.strip():
            raise Invalid(f"{field}: must not be empty", field=field)
        if value is not None and len(value) > MAX_HOST_LENGTH:
            raise Invalid(f"{field}: at most {MAX_HOST_LENGTH} characters", field=field)


async def fetch_node(node_id: int) -> dict[str, Any]:
    """A node row, or 404."""
    row = await Node.select().where(Node.id == node_id).output(load_json=True).first()
    if row is None:
        raise NotFound("Node not found")
    return row


async def create_node(data: schemas.NodeCreate) -> schemas.Node:
    """Register a node; its agent must use the same name."""
    validate_fields(data.name, data.docker_host, data.public_host)
    try:
        inserted = (
            await Node.insert(
                Node(
                    name=data.name,
                    docker_host=data.docker_host,
                    public_host=data.public_host,
                    schedulable=data.schedulable,
                )
            ).returning(Node.id)
        )[0]
    except asyncpg.UniqueViolationError:
        raise Conflict(f"A node named {data.name!r} already exists.", field="name") from None
    return node_view(await fetch_node(inserted["id"]), None)


async def list_nodes() -> list[schemas.Node]:
    """Every node with its liveness and allocations."""
    rows = await Node.select().order_by(Node.id).output(load_json=True)
    by_node = await node_loads()
    return [node_view(r, by_node.get(r["id"])) for r in rows]


async def get_node(node_id: int) -> schemas.Node:
    """One node, or 404."""
    row = await fetch_node(node_id)
    return node_view(row, (await node_loads()).get(node_id))


async def update_node(node_id: int, data: schemas.NodeUpdate) -> schemas.Node:
    """Change the given fields of a node."""
    changes = {
        column: value
        for column, value in (
            (Node.name, data.name),
            (Node.docker_host, data.docker_host),
            (Node.public_host, data.public_host),
            (Node.schedulable, data.schedulable),
        )
        if value is not msgspec.UNSET
    }
    validate_fields(unset_to_none(data.name), unset_to_none(data.docker_host), unset_to_none(data.public_host))
    await fetch_node(node_id)
    if changes:
        try:
            await Node.update(changes).where(Node.id == node_id)  # type: ignore[arg-type]
        except asyncpg.UniqueViolationError:
            raise Conflict("A node with that name already exists.", field="name") from None
    return await get_node(node_id)


async def delete_node(node_id: int) -> None:
    """Delete a node; 409 while instances are placed on it."""
    await fetch_node(node_id)
    try:
        await Node.delete().where(Node.id == node_id)
    except asyncpg.ForeignKeyViolationError:
        raise Conflict(NODE_IN_USE) from None


async def set_schedulable(node_id: int, schedulable: bool) -> schemas.Node:
    """Cordon (no new instances) or uncordon a node; its view."""
    await fetch_node(node_id)
    await Node.update({Node.schedulable: schedulable}).where(Node.id == node_id)
    return await get_node(node_id)


async def drain_node(node_id: int, *, messaging: ApiMessaging, timeout: float) -> schemas.Drained:
    """Cordon the node and migrate every instance off it (the scheduler does the moves)."""
    row = await fetch_node(node_id)
    reply = await messaging.ask_scheduler(
        subjects.SCHEDULER_DRAIN, DrainRequest(node=row["name"]), DrainReply, timeout=timeout
    )
    if reply.status != 200:
        raise error_for_status(reply.status, reply.error or "Drain failed")
    return schemas.Drained(
        node=await get_node(node_id),
        moved=list(reply.moved),
        failed={str(k): v for k, v in reply.failed.items()},
    )
