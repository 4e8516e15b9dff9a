"""Node bodies (camelCase JSON, as the original gateway)."""

from datetime import datetime

import msgspec


class NodeCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """`POST /admin/nodes` body."""

    name: str
    docker_host: str
    public_host: str
    schedulable: bool = True


class NodeUpdate(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """`PUT /admin/nodes/{id}` body: only the given fields change."""

    name: str | msgspec.UnsetType = msgspec.UNSET
    docker_host: str | msgspec.UnsetType = msgspec.UNSET
    public_host: str | msgspec.UnsetType = msgspec.UNSET
    schedulable: bool | msgspec.UnsetType = msgspec.UNSET


class Capacity(msgspec.Struct, rename="camel"):
    """CPU (cores) and memory (bytes), with an instance count for allocations."""

    cpu: float
    memory: int
    instances: int = 0


class Node(msgspec.Struct, rename="camel"):
    """A node: registration, liveness (`status`) and what it has room for."""

    id: int
    name: str
    docker_host: str
    public_host: str
    schedulable: bool
    status: str
    capacity: Capacity
    allocated: Capacity
    providers: list[str]
    runtime: str | None
    last_heartbeat_at: datetime | None
    created_at: datetime


class Drained(msgspec.Struct, rename="camel"):
    """`POST /admin/nodes/{id}/drain` answer: the node (now cordoned), instances moved and those that could not be."""

    node: Node
    moved: list[int]
    failed: dict[str, str]
