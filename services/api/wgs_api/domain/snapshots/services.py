"""Reads of snapshots for the REST API (the state service writes them)."""

from collections.abc import AsyncIterator
from typing import Any

from wgs_db import snapshots
from wgs_db.tables import Instance

from wgs_api.domain.instances.services import fetch_own
from wgs_api.domain.snapshots import schemas
from wgs_api.errors import NotFound


async def require_instance(instance_id: int) -> None:
    """404 unless the instance exists."""
    if not await Instance.exists().where(Instance.id == instance_id):
        raise NotFound("Instance not found")


async def list_snapshots(instance_id: int) -> list[schemas.Snapshot]:
    """Every snapshot of an instance, newest first."""
    await require_instance(instance_id)
    return [snapshot_view(row) for row in await snapshots.list_snapshots(instance_id)]


def snapshot_view(row: dict[str, Any]) -> schemas.Snapshot:
    """The REST view of a snapshot row."""
    return schemas.Snapshot(
        version=row["version"],
        generation=row["generation"],
        status=row["status"],
        sha256=row["sha256"],
        size_bytes=row["size_bytes"],
        stored_bytes=row["stored_bytes"],
        chunk_count=row["chunk_count"],
        created_at=row["created_at"],
        completed_at=row["completed_at"],
    )


async def stored_snapshot(instance_id: int, version: int) -> tuple[dict[str, Any], AsyncIterator[bytes]]:
    """A finished (complete or corrupt) snapshot row and its stored bytes, streamed; 404 if none."""
    await require_instance(instance_id)
    row = next((r for r in await snapshots.list_snapshots(instance_id) if r["version"] == version), None)
    if row is None or row["status"] == "uploading":
        raise NotFound("Snapshot not found")
    return row, snapshots.chunks(row["id"], row["chunk_count"])


async def last_snapshot(tenant_id: int, instance_id: int) -> schemas.LastSnapshot:
    """The tenant's instance's last complete snapshot; 404 when it has none."""
    await fetch_own(tenant_id, instance_id)
    row = await snapshots.newest_complete(instance_id)
    if row is None:
        raise NotFound("No snapshot yet")
    return schemas.LastSnapshot(version=row["version"], taken_at=row["completed_at"], size_bytes=row["size_bytes"])
