"""What the state service does with each request: fencing, chunk storage, commit, verified restore."""

import logging
import time
from typing import Any

from faststream.nats import NatsBroker
from wgs_contracts import streams, subjects
from wgs_contracts.state import (
    ChunkStored,
    NoSnapshot,
    SnapshotFallback,
    SnapshotInfo,
    StateRefused,
    UploadAccepted,
    UploadBegin,
    UploadCommit,
)
from wgs_db import snapshots
from wgs_db.engine import DB
from wgs_db.tables import Snapshot
from wgs_kit.messaging import publish_durable

from wgs_state.config import Settings

log = logging.getLogger(__name__)

RAISE_FENCE = """
INSERT INTO snapshot_fences (instance_id, generation) VALUES ({}, {})
ON CONFLICT (instance_id) DO UPDATE SET generation = greatest(snapshot_fences.generation, excluded.generation)
RETURNING generation
"""
LOCK_FENCE = "SELECT generation FROM snapshot_fences WHERE instance_id = {} FOR UPDATE"
NEW_VERSION = """
INSERT INTO snapshots (instance_id, generation, version, size_bytes)
SELECT {}, {}, coalesce(max(version), 0) + 1, {} FROM snapshots WHERE instance_id = {}
RETURNING id, version
"""
COUNT_CHUNK = """
UPDATE snapshots SET chunk_count = chunk_count + 1, stored_bytes = stored_bytes + {}
WHERE id = {} AND status = 'uploading' AND chunk_count = {}
RETURNING id
"""
COMPLETE = f"""
UPDATE snapshots SET status = 'complete', sha256 = {{}}, completed_at = now()
WHERE id = {{}} AND status = 'uploading'
RETURNING {snapshots.COLUMNS}
"""
PRUNE = """
DELETE FROM snapshots WHERE instance_id = {} AND status <> 'uploading' AND id NOT IN (
    SELECT id FROM snapshots WHERE instance_id = {} AND status = 'complete' ORDER BY version DESC LIMIT {})
"""
UPLOADS = """
SELECT id, chunk_count, created_at < now() - make_interval(secs => {}) AS old FROM snapshots WHERE status = 'uploading'
"""
DELETE_STALLED = "DELETE FROM snapshots WHERE id = {} AND status = 'uploading' AND chunk_count = {} RETURNING id"


def snapshot_info(row: dict[str, Any]) -> SnapshotInfo:
    """The reply describing a complete snapshot row."""
    return SnapshotInfo(
        snapshot_id=row["id"],
        instance_id=row["instance_id"],
        version=row["version"],
        generation=row["generation"],
        sha256=row["sha256"],
        size_bytes=row["size_bytes"],
        stored_bytes=row["stored_bytes"],
        chunk_count=row["chunk_count"],
        taken_at=row["completed_at"],
    )


async def fence_of(instance_id: int) -> int | None:
    """The generation uploads of an instance must reach: its placement's and the newest uploader's."""
    rows = await Snapshot.raw(
        "SELECT greatest(i.generation, f.generation) AS generation FROM instances i"
        " LEFT JOIN snapshot_fences f ON f.instance_id = i.id WHERE i.id = {}",
        instance_id,
    )
    return rows[0]["generation"] if rows else None


async def discard(snapshot_id: int, reason: str) -> StateRefused:
    """Delete a failed upload (never a complete snapshot) and refuse it."""
    await Snapshot.raw("DELETE FROM snapshots WHERE id = {} AND status = 'uploading'", snapshot_id)
    log.warning("upload %d discarded: %s", snapshot_id, reason)
    return StateRefused(reason=reason)


class StateService:
    """Handlers of the state service's requests (any number of processes may run them)."""

    def __init__(self, broker: NatsBroker, settings: Settings) -> None:
        self.broker = broker
        self.settings = settings
        self.progress: dict[int, tuple[int, float]] = {}  # upload id: chunk count, since when (seen by sweeps)

    async def begin(self, request: UploadBegin) -> UploadAccepted | StateRefused:
        """Open an upload unless a newer generation of the instance exists (then refuse it: fencing)."""
        async with DB.transaction():
            if await fence_of(request.instance_id) is None:
                return StateRefused(reason=f"instance {request.instance_id} does not exist")
            await Snapshot.raw(RAISE_FENCE, request.instance_id, request.generation)  # concurrent begins wait here
            fence = await fence_of(request.instance_id)
            if fence is None or request.generation < fence:
                return StateRefused(reason=f"generation {request.generation} is older than {fence}")
            row = (
                await Snapshot.raw(
                    NEW_VERSION, request.instance_id, request.generation, request.size_bytes, request.instance_id
                )
            )[0]
        log.info("upload %d: instance %d version %d begun", row["id"], request.instance_id, row["version"])
        return UploadAccepted(snapshot_id=row["id"], version=row["version"], chunk_bytes=self.settings.chunk_bytes)

    async def store_chunk(self, snapshot_id: int, index: int, data: bytes) -> ChunkStored | StateRefused:
        """Store chunk `index` if it is the next one; a repeat of a stored one is acknowledged again."""
        if not data:
            return StateRefused(reason="empty chunk")
        async with DB.transaction():
            if await Snapshot.raw(COUNT_CHUNK, len(data), snapshot_id, index):
                await Snapshot.raw(
                    "INSERT INTO snapshot_chunks (snapshot_id, index, data) VALUES ({}, {}, {})",
                    snapshot_id,
                    index,
                    data,
                )
                return ChunkStored(index=index)
        rows = await Snapshot.raw("SELECT status, chunk_count FROM snapshots WHERE id = {}", snapshot_id)
        if rows and rows[0]["status"] == "uploading" and index < rows[0]["chunk_count"]:
            return ChunkStored(index=index)
        return StateRefused(reason=f"chunk {index} of upload {snapshot_id} is unexpected")

    async def commit(self, request: UploadCommit) -> SnapshotInfo | StateRefused:
        """Complete an upload whose stored chunks match the count and sha256, then prune old versions."""
        rows = await Snapshot.raw(
            f"SELECT {snapshots.COLUMNS} FROM snapshots WHERE id = {{}} AND status = 'uploading'", request.snapshot_id
        )
        if not rows:
            return StateRefused(reason=f"no upload {request.snapshot_id} in progress")
        row = rows[0]
        if request.chunk_count == 0 or row["chunk_count"] == 0:
            return await discard(row["id"], "empty upload")
        if row["chunk_count"] != request.chunk_count:
            return await discard(row["id"], f"{row['chunk_count']} chunks stored, {request.chunk_count} sent")
        if await snapshots.stored_sha256(row["id"], row["chunk_count"]) != request.sha256:
            return await discard(row["id"], "sha256 mismatch")
        async with DB.transaction():
            await Snapshot.raw(LOCK_FENCE, row["instance_id"])
            fence = await fence_of(row["instance_id"])
            if fence is None or row["generation"] < fence:
                return await discard(row["id"], f"generation {row['generation']} was fenced off by {fence}")
            done = await Snapshot.raw(COMPLETE, request.sha256, row["id"])
            if not done:
                return StateRefused(reason=f"upload {row['id']} was discarded meanwhile")
            await Snapshot.raw(PRUNE, row["instance_id"], row["instance_id"], self.settings.keep)
        log.info("snapshot of instance %d version %d complete", row["instance_id"], row["version"])
        return snapshot_info(done[0])

    async def restore(self, instance_id: int) -> SnapshotInfo | NoSnapshot:
        """The newest snapshot whose stored bytes re-hash to its sha256; bad ones are marked corrupt."""
        corrupt: list[dict[str, Any]] = []
        below: int | None = None
        while (row := await snapshots.newest_complete(instance_id, below)) is not None:
            if await snapshots.stored_sha256(row["id"], row["chunk_count"]) == row["sha256"]:
                break
            await Snapshot.raw("UPDATE snapshots SET status = 'corrupt' WHERE id = {}", row["id"])
            log.error("snapshot of instance %d version %d is corrupt", instance_id, row["version"])
            corrupt.append(row)
            below = row["version"]
        for bad in corrupt:
            await self.report_fallback(bad, None if row is None else row["version"])
        return NoSnapshot(instance_id=instance_id) if row is None else snapshot_info(row)

    async def report_fallback(self, bad: dict[str, Any], restored_version: int | None) -> None:
        """Publish that a corrupt version was skipped (on the instance's snapshot subject)."""
        tenants = await Snapshot.raw("SELECT tenant_id FROM instances WHERE id = {}", bad["instance_id"])
        event = SnapshotFallback(
            instance_id=bad["instance_id"],
            tenant_id=tenants[0]["tenant_id"] if tenants else None,
            corrupt_version=bad["version"],
            restored_version=restored_version,
            reason="stored bytes do not match the snapshot's sha256",
        )
        await publish_durable(
            self.broker,
            subjects.instance_snapshot_events(bad["instance_id"]),
            event,
            msg_id=event.event_id,
            stream=streams.EVENTS,
        )

    async def sweep(self) -> int:
        """Delete abandoned uploads: begun longer than the upload timeout ago and without a new chunk for as
        long (as this process's sweeps saw them; a long upload still sending is kept); the number deleted."""
        timeout = self.settings.upload_timeout_seconds
        now = time.monotonic()
        progress: dict[int, tuple[int, float]] = {}
        stalled: list[tuple[int, int]] = []
        for row in await Snapshot.raw(UPLOADS, timeout):
            count, since = self.progress.get(row["id"], (row["chunk_count"], now))
            if count != row["chunk_count"]:
                count, since = row["chunk_count"], now
            progress[row["id"]] = (count, since)
            if row["old"] and now - since >= timeout:
                stalled.append((row["id"], count))
        self.progress = progress
        deleted = 0
        for snapshot_id, count in stalled:
            if await Snapshot.raw(DELETE_STALLED, snapshot_id, count):
                deleted += 1
        if deleted:
            log.warning("deleted %d abandoned uploads", deleted)
        return deleted
