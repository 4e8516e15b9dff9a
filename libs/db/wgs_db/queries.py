"""Queries shared by several services."""

from typing import Any

from wgs_db.tables import Node


async def node_loads() -> dict[int, dict[str, Any]]:
    """What is reserved on each node (view `node_load`): nano_cpus, memory_bytes, instances."""
    return {row["node_id"]: row for row in await Node.raw("SELECT * FROM node_load")}
