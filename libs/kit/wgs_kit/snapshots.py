"""Client of the state service (used by node agents): snapshot a folder, restore the newest good one.

A folder travels as a zstd-compressed tar, staged in a temporary file beside it, so memory holds
a chunk or two whatever the folder's size; packing, unpacking and file reads run in threads.
"""

import asyncio
import hashlib
import shutil
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import BinaryIO, Final, TypeVar, Union, cast

import zstandard
from nats.aio.client import Client as NatsClient
from wgs_contracts import headers, subjects
from wgs_contracts.state import (
    ChunkStored,
    NoSnapshot,
    RestoreBegin,
    RestoreChunk,
    RestoreReply,
    SnapshotInfo,
    StateRefused,
    UploadAccepted,
    UploadBegin,
    UploadCommit,
    chunk_size,
)

from wgs_kit.messaging import decode, encode

R = TypeVar("R")
CHUNK_TIMEOUT_SECONDS: Final = 15.0
VERIFY_TIMEOUT_SECONDS: Final = 120.0  # commit and restore-begin re-hash the stored snapshot


class SnapshotError(RuntimeError):
    """The state service refused a request, or a download does not match its checksum."""


class CountingWriter:
    """A write-only file counting the bytes that pass through to `target`."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.count = 0

    def write(self, data: bytes) -> int:
        """Pass `data` on and count it."""
        self.count += len(data)
        return self.target.write(data)


def pack(folder: Path, target: Path) -> int:
    """Write `folder` as a zstd-compressed tar to `target`; the size of the uncompressed tar."""
    with target.open("wb") as raw, zstandard.ZstdCompressor().stream_writer(raw, closefd=False) as compressed:
        counter = CountingWriter(compressed)
        with tarfile.open(fileobj=counter, mode="w|") as tar:  # type: ignore[call-overload]
            tar.add(folder, arcname=".")
    return counter.count


def keep_permissions(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
    """Extraction filter: tarfile's path checks, with the member's permission bits kept as they were."""
    checked = tarfile.tar_filter(member, path)
    return checked.replace(mode=member.mode & 0o777, deep=False)


def unpack(source: Path, folder: Path) -> None:
    """Extract the zstd-compressed tar `source` into the existing, empty `folder`."""
    with (
        source.open("rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        tar.extractall(folder, filter=keep_permissions)


def swap_in(fresh: Path, folder: Path) -> None:
    """Put `fresh` in the place of `folder` (renames on one file system), then delete the old one."""
    old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
    if folder.exists():
        folder.rename(old)
    fresh.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def file_digest(path: Path) -> str:
    """The sha256 of a file, read in blocks."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def accepted(data: bytes, expected: object) -> object:
    """A reply of the state service decoded as `expected` (a type or union); a refusal raises SnapshotError."""
    reply: object = decode(data, Union[expected, StateRefused])  # type: ignore[arg-type]  # noqa: UP007
    if isinstance(reply, StateRefused):
        raise SnapshotError(reply.reason)
    return reply


async def ask(nc: NatsClient, subject: str, payload: bytes, expected: type[R], *, timeout: float, **kw: str) -> R:
    """One request to the state service and its reply; a refusal raises SnapshotError."""
    response = await nc.request(subject, payload, timeout=timeout, headers=kw or None)
    return cast(R, accepted(response.data, expected))


def staging_file(folder: Path, purpose: str) -> Path:
    """A fresh temporary file name beside `folder` (same file system)."""
    return folder.with_name(f".{folder.name}.{purpose}-{uuid.uuid4().hex[:8]}")


async def upload_folder(nc: NatsClient, instance_id: int, generation: int, folder: Path) -> int:
    """Store `folder` as the newest snapshot of the instance at `generation`; its version number."""
    staged = staging_file(folder, "upload")
    try:
        size_bytes = await asyncio.to_thread(pack, folder, staged)
        begin = UploadBegin(instance_id=instance_id, generation=generation, size_bytes=size_bytes)
        accepted = await ask(
            nc, subjects.STATE_UPLOAD_BEGIN, encode(begin), UploadAccepted, timeout=CHUNK_TIMEOUT_SECONDS
        )
        size = chunk_size(nc.max_payload, accepted.chunk_bytes)
        snapshot_id = accepted.snapshot_id
        digest = hashlib.sha256()
        index = 0
        with staged.open("rb") as file:
            while data := await asyncio.to_thread(file.read, size):
                digest.update(data)
                await send_chunk(nc, snapshot_id, index, data)
                index += 1
        commit = UploadCommit(snapshot_id=snapshot_id, chunk_count=index, sha256=digest.hexdigest())
        info = await ask(nc, subjects.STATE_UPLOAD_COMMIT, encode(commit), SnapshotInfo, timeout=VERIFY_TIMEOUT_SECONDS)
        return info.version
    finally:
        staged.unlink(missing_ok=True)


async def send_chunk(nc: NatsClient, snapshot_id: int, index: int, data: bytes) -> None:
    """Send one chunk of an upload and wait until it is stored."""
    extra = {headers.SNAPSHOT_ID: str(snapshot_id), headers.CHUNK_INDEX: str(index)}
    await ask(nc, subjects.STATE_UPLOAD_CHUNK, data, ChunkStored, timeout=CHUNK_TIMEOUT_SECONDS, **extra)


async def restore_folder(
    nc: NatsClient, instance_id: int, folder: Path, *, newer_than: int | None = None
) -> int | None:
    """Replace `folder` by the newest good snapshot of the instance; its version.

    None (and `folder` untouched) when there is no snapshot, or none newer than version `newer_than`.
    """
    begin = encode(RestoreBegin(instance_id=instance_id))
    response = await nc.request(subjects.STATE_RESTORE_BEGIN, begin, timeout=VERIFY_TIMEOUT_SECONDS)
    info = cast(SnapshotInfo | NoSnapshot, accepted(response.data, RestoreReply))
    if isinstance(info, NoSnapshot) or (newer_than is not None and info.version <= newer_than):
        return None
    staged = staging_file(folder, "restore")
    fresh = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.fresh-"))
    try:
        with staged.open("wb") as file:
            for index in range(info.chunk_count):
                request = encode(RestoreChunk(snapshot_id=info.snapshot_id, index=index))
                response = await nc.request(subjects.STATE_RESTORE_CHUNK, request, timeout=CHUNK_TIMEOUT_SECONDS)
                if not response.data:
                    raise SnapshotError(f"chunk {index} of snapshot version {info.version} is gone")
                await asyncio.to_thread(file.write, response.data)
        if await asyncio.to_thread(file_digest, staged) != info.sha256:
            raise SnapshotError(f"snapshot version {info.version} does not match its sha256")
        await asyncio.to_thread(unpack, staged, fresh)
        await asyncio.to_thread(swap_in, fresh, folder)
        return info.version
    finally:
        staged.unlink(missing_ok=True)
        await asyncio.to_thread(shutil.rmtree, fresh, True)
