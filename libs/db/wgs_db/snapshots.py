"""Reads of stored snapshots shared by the state service and the API (one chunk in memory at a time)."""

import hashlib
from collections.abc import AsyncIterator
from typing import Any

from wgs_db.tables import Snapshot

COLUMNS = (
    "id, instance_id, generation, version, status, sha256, size_bytes, stored_bytes, chunk_count,"
    " created_at, completed_at"
)


async def list_snapshots(instance_id: int) -> list[dict[str, Any]]:
    """Every snapshot row of an instance, newest version first."""
    return await Snapshot.raw(
        f"SELECT {COLUMNS} FROM snapshots WHERE instance_id = {{}} ORDER BY version DESC", instance_id
    )


async def newest_complete(instance_id: int, below_version: int | None = None) -> dict[str, Any] | None:
    """The newest complete snapshot row of an instance (older than `below_version` when given), or None."""
    rows = await Snapshot.raw(
        f"SELECT {COLUMNS} FROM snapshots WHERE instance_id = {{}} AND status = 'complete'"
        " AND version < coalesce({}, 2147483647) ORDER BY version DESC LIMIT 1",
        instance_id,
        below_version,
    )
    return rows[0] if rows else None


async def chunk(snapshot_id: int, index: int) -> bytes | None:
    """One stored chunk, or None when it is missing."""
    rows = await Snapshot.raw(
        "SELECT data FROM snapshot_chunks WHERE snapshot_id = {} AND index = {}", snapshot_id, index
    )
    return bytes(rows[0]["data"]) if rows else None


async def chunks(snapshot_id: int, chunk_count: int) -> AsyncIterator[bytes]:
    """The stored chunks in order, read one at a time; stops early at a missing one."""
    for index in range(chunk_count):
        data = await chunk(snapshot_id, index)
        if data is None:
            return
        yield data


async def stored_sha256(snapshot_id: int, chunk_count: int) -> str | None:
    """The sha256 of the stored bytes, streamed from PostgreSQL; None when a chunk is missing."""
    digest = hashlib.sha256()
    seen = 0
    async for data in chunks(snapshot_id, chunk_count):
        digest.update(data)
        seen += 1
    return digest.hexdigest() if seen == chunk_count else None
