"""Session-state snapshots of the instances on this node: take them, skip unchanged ones, restore before start.

A snapshot is a copy of the instance's state folder, uploaded to the state service
(`wgs_kit.snapshots`). A running container is paused only while its folder is
copied (crash-consistent copy, short pause), never during the upload. Each
instance's marker file remembers the last version this node uploaded or restored
and the content digest it had, so an unchanged folder is not uploaded again and a
start restores only when the state service holds a newer version than the node.
"""

import asyncio
import hashlib
import logging
import os
import shutil
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import msgspec
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from wgs_kit.snapshots import restore_folder, upload_folder

from wgs_node_agent.runtime.base import InstancePaths

log = logging.getLogger(__name__)
MARKER_NAME: Final = "snapshot.json"
READ_BLOCK: Final = 1 << 20


class Marker(msgspec.Struct, frozen=True):
    """What this node last stored or restored of an instance's state."""

    version: int
    digest: str


class Outcome(msgspec.Struct, frozen=True):
    """One snapshot attempt: the version stored (None: unchanged, skipped), its size and the pause it cost."""

    version: int | None
    size_bytes: int
    pause_ms: float


def tree_digest(folder: Path) -> tuple[str, int]:
    """sha256 over every entry's relative path, type, permission bits and content; and the total file size."""
    digest = hashlib.sha256()
    total = 0
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files) + [f"{d}/" for d in dirs]:
            path = Path(root) / name.rstrip("/")
            info = path.lstat()
            relative = path.relative_to(folder).as_posix()
            digest.update(f"{relative}\0{stat.S_IFMT(info.st_mode)}\0{stat.S_IMODE(info.st_mode)}\0".encode())
            if stat.S_ISLNK(info.st_mode):
                digest.update(os.readlink(path).encode())
            elif stat.S_ISREG(info.st_mode):
                total += info.st_size
                with path.open("rb") as file:
                    while block := file.read(READ_BLOCK):
                        digest.update(block)
    return digest.hexdigest(), total


def marker_path(paths: InstancePaths) -> Path:
    """Where an instance's marker lives (beside its state folder, not inside it)."""
    return paths.state_dir.parent / MARKER_NAME


def read_marker(paths: InstancePaths) -> Marker | None:
    """The instance's marker, or None when this node never stored or restored its state."""
    try:
        return msgspec.json.decode(marker_path(paths).read_bytes(), type=Marker)
    except (FileNotFoundError, msgspec.DecodeError):
        return None


def write_marker(paths: InstancePaths, marker: Marker) -> None:
    """Replace the marker atomically."""
    target = marker_path(paths)
    staged = target.with_suffix(".tmp")
    staged.write_bytes(msgspec.json.encode(marker))
    os.replace(staged, target)


class Snapshotter:
    """Takes and restores the snapshots of this node's instances (callers serialize per instance)."""

    def __init__(self, connection: Callable[[], NatsClient], *, restore_timeout_seconds: float) -> None:
        self._connection = connection
        self.restore_timeout_seconds = restore_timeout_seconds

    async def take(
        self,
        instance_id: int,
        generation: int,
        paths: InstancePaths,
        *,
        pause: Callable[[], Awaitable[None]] | None = None,
        unpause: Callable[[], Awaitable[None]] | None = None,
    ) -> Outcome:
        """Copy the state folder (paused between `pause` and `unpause` if given) and upload it if it changed."""
        if not paths.state_dir.is_dir():
            return Outcome(version=None, size_bytes=0, pause_ms=0.0)
        copy = paths.state_dir.with_name(f".snapshot-{time.monotonic_ns()}")
        try:
            pause_ms = await self._copy(paths.state_dir, copy, pause, unpause)
            digest, size = await asyncio.to_thread(tree_digest, copy)
            marker = read_marker(paths)
            if marker is not None and marker.digest == digest:
                return Outcome(version=None, size_bytes=size, pause_ms=pause_ms)
            version = await upload_folder(self._connection(), instance_id, generation, copy)
            write_marker(paths, Marker(version=version, digest=digest))
            log.info("instance %d: snapshot version %d stored (%d bytes)", instance_id, version, size)
            return Outcome(version=version, size_bytes=size, pause_ms=pause_ms)
        finally:
            await asyncio.to_thread(shutil.rmtree, copy, True)

    @staticmethod
    async def _copy(
        source: Path,
        target: Path,
        pause: Callable[[], Awaitable[None]] | None,
        unpause: Callable[[], Awaitable[None]] | None,
    ) -> float:
        """Copy `source` to `target`; the milliseconds between pause and unpause (0 without a pause)."""
        if pause is None or unpause is None:
            await asyncio.to_thread(shutil.copytree, source, target, symlinks=True)
            return 0.0
        await pause()
        started = time.perf_counter()
        try:
            await asyncio.to_thread(shutil.copytree, source, target, symlinks=True)
        finally:
            await unpause()
        return (time.perf_counter() - started) * 1000

    async def restore_if_newer(self, instance_id: int, paths: InstancePaths) -> int | None:
        """Restore the newest good snapshot unless this node already has it; the version restored, or None.

        The state service may be restarting: it is asked again until `restore_timeout_seconds`
        have passed, then the error is raised (the instance must not start on stale state).
        """
        marker = read_marker(paths)
        paths.state_dir.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.restore_timeout_seconds
        while True:
            try:
                version = await restore_folder(
                    self._connection(),
                    instance_id,
                    paths.state_dir,
                    newer_than=marker.version if marker is not None else None,
                )
                break
            except (TimeoutError, NoRespondersError, OSError) as exc:
                if loop.time() >= deadline:
                    raise
                log.warning("instance %d: state service not answering (%r); asking again", instance_id, exc)
                await asyncio.sleep(1.0)
        if version is not None:
            digest, _ = await asyncio.to_thread(tree_digest, paths.state_dir)
            write_marker(paths, Marker(version=version, digest=digest))
            log.info("instance %d: state restored from snapshot version %d", instance_id, version)
        return version
