"""Session-state snapshots: request-reply bodies of the state service and its fallback event.

Upload: `state.upload.begin` → `state.upload.accepted`; then each chunk as the raw request body
on `wgs.rpc.state.upload.chunk` (headers `Wgs-Snapshot-Id`, `Wgs-Chunk-Index`) → `state.chunk.stored`;
then `state.upload.commit` → `state.snapshot`. Restore: `state.restore.begin` → `state.snapshot`
(or `state.none`); then `state.restore.chunk` → the chunk's raw bytes (empty when it is gone).
Any request may be answered `state.refused`.
"""

from datetime import datetime
from typing import Final

import msgspec

from wgs_contracts.messages import Base, new_event_id, utcnow

DEFAULT_CHUNK_BYTES: Final = 512 * 1024
PAYLOAD_HEADROOM_BYTES: Final = 4096  # room left for headers and protocol under the server's max payload


def chunk_size(max_payload: int, wanted: int = DEFAULT_CHUNK_BYTES) -> int:
    """The chunk size to send: `wanted`, but never more than the server's max payload minus headroom."""
    return max(1, min(wanted, max_payload - PAYLOAD_HEADROOM_BYTES))


class UploadBegin(Base, frozen=True, tag="state.upload.begin"):
    """Start storing a snapshot of `instance_id` taken at `generation` (`size_bytes`: uncompressed tar)."""

    instance_id: int
    generation: int
    size_bytes: int


class UploadAccepted(Base, frozen=True, tag="state.upload.accepted"):
    """The upload may proceed: send chunks of at most `chunk_bytes` to `snapshot_id`."""

    snapshot_id: int
    version: int
    chunk_bytes: int


class ChunkStored(Base, frozen=True, tag="state.chunk.stored"):
    """Chunk `index` of the upload is stored (also for a repeated chunk)."""

    index: int


class UploadCommit(Base, frozen=True, tag="state.upload.commit"):
    """All chunks are sent: check their count and sha256 and make the snapshot the newest one."""

    snapshot_id: int
    chunk_count: int
    sha256: str


class RestoreBegin(Base, frozen=True, tag="state.restore.begin"):
    """Which verified snapshot of `instance_id` to restore (the newest good one)."""

    instance_id: int


class RestoreChunk(Base, frozen=True, tag="state.restore.chunk"):
    """Chunk `index` of a snapshot; answered with the raw bytes."""

    snapshot_id: int
    index: int


class SnapshotInfo(Base, frozen=True, tag="state.snapshot"):
    """A complete snapshot: its stored (compressed) bytes hash to `sha256`."""

    snapshot_id: int
    instance_id: int
    version: int
    generation: int
    sha256: str
    size_bytes: int
    stored_bytes: int
    chunk_count: int
    taken_at: datetime


class NoSnapshot(Base, frozen=True, tag="state.none"):
    """The instance has no good snapshot."""

    instance_id: int


class StateRefused(Base, frozen=True, tag="state.refused"):
    """The request was refused (stale generation, unknown upload, checksum mismatch, ...)."""

    reason: str


class SnapshotFallback(Base, frozen=True, tag="snapshot.fallback"):
    """The newest snapshot was corrupt: it is marked so and an older one (or none) is served.

    Published on `wgs.evt.instance.{id}.snapshot`; `restored_version` is None when no good one is left.
    """

    instance_id: int
    tenant_id: int | None
    corrupt_version: int
    restored_version: int | None
    reason: str
    event_id: str = msgspec.field(default_factory=new_event_id)
    at: datetime = msgspec.field(default_factory=utcnow)


RestoreReply = SnapshotInfo | NoSnapshot

STATE_TYPES: Final = (
    UploadBegin,
    UploadAccepted,
    ChunkStored,
    UploadCommit,
    RestoreBegin,
    RestoreChunk,
    SnapshotInfo,
    NoSnapshot,
    StateRefused,
    SnapshotFallback,
)
