"""Snapshot bodies (camelCase JSON)."""

from datetime import datetime

import msgspec


class Snapshot(msgspec.Struct, rename="camel"):
    """One stored version of an instance's state (`sizeBytes` uncompressed, `storedBytes` as stored)."""

    version: int
    generation: int
    status: str
    sha256: str | None
    size_bytes: int
    stored_bytes: int
    chunk_count: int
    created_at: datetime
    completed_at: datetime | None


class LastSnapshot(msgspec.Struct, rename="camel"):
    """When the last complete snapshot of an instance was taken and its uncompressed size."""

    version: int
    taken_at: datetime
    size_bytes: int
