"""The state service as a process on real NATS and PostgreSQL: chunked upload and verified restore,
a 256 MB snapshot with bounded memory, versions, corrupt and truncated snapshots, abandoned and empty
uploads, generation fencing, kill -9 during an upload, and the admin and tenant REST endpoints."""

import asyncio
import hashlib
import os
import random
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import msgspec
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from wgs_contracts import headers, subjects
from wgs_contracts.state import (
    ChunkStored,
    SnapshotFallback,
    StateRefused,
    UploadAccepted,
    UploadBegin,
    UploadCommit,
)
from wgs_devstack.services import ApiService, Service
from wgs_kit.messaging import decode, encode
from wgs_kit.snapshots import SnapshotError, restore_folder, upload_folder
from wgs_kit.waiting import wait_until
from wgs_node_agent.runtime.base import InstancePaths
from wgs_node_agent.snapshots import Snapshotter

from tests.support.api import ADMIN, Tenant, create_tenant, unique_phone
from tests.support.files import tree
from tests.support.services import frozen_objects

UPLOAD_TIMEOUT_SECONDS = 4
MIB = 1024 * 1024
BIG_SNAPSHOT_BYTES = 256 * MIB
BIG_SNAPSHOT_FILES = 4
STATE_PEAK_RSS_LIMIT = 128 * MIB  # half the snapshot (measured: about 68 MiB, of which 64 before the upload)
RSS_GROWTH_LIMIT = 32 * MIB  # what the state service and the client may add while the snapshot passes


@pytest.fixture(scope="module")
async def nc(migrated: dict[str, str]) -> AsyncIterator[NatsClient]:
    client = await nats.connect(migrated["NATS_URL"])
    yield client
    await client.close()


async def answering(nc: NatsClient) -> bool:
    try:
        await nc.request(subjects.STATE_RESTORE_BEGIN, b'{"type":"state.restore.begin","instance_id":0}', timeout=1)
    except (NoRespondersError, NatsTimeout):
        return False
    return True


@pytest.fixture(scope="module")
async def state(migrated: dict[str, str], work_dir: Path, nc: NatsClient) -> AsyncIterator[Service]:
    """The state service with a short abandoned-upload timeout."""
    env = {**migrated, "WGS_STATE_UPLOAD_TIMEOUT_SECONDS": str(UPLOAD_TIMEOUT_SECONDS)}
    service = Service("state", "wgs_state", env, work_dir / "logs")
    service.start()
    await wait_until(lambda: answering(nc), 30, what="the state service")
    yield service
    await service.stop()


@pytest.fixture(scope="module")
async def tenant(api: ApiService) -> Tenant:
    async with httpx.AsyncClient(base_url=api.url) as http:
        return await create_tenant(http)


@pytest.fixture
async def instance(db: asyncpg.Pool, tenant: Tenant, state: Service) -> AsyncIterator[int]:
    """A stopped instance row at generation 1 (the scheduler leaves it alone), removed after with its snapshots."""
    instance_id = await new_instance(db, tenant.id, 1)
    yield instance_id
    await db.execute("DELETE FROM instances WHERE id = $1", instance_id)


async def new_instance(db: asyncpg.Pool, tenant_id: int, generation: int) -> int:
    return await db.fetchval(
        "INSERT INTO instances (tenant_id, phone_number, provider, cpu_limit, memory_limit, nano_cpus, memory_bytes,"
        " generation, desired_state) VALUES ($1, $2, 'sandbox', '0.5', '256m', 500000000, 268435456, $3, 'stopped')"
        " RETURNING id",
        tenant_id,
        unique_phone(),
        generation,
    )


def write_folder(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "content.txt").write_text(text)
    return folder


async def versions(db: asyncpg.Pool, instance_id: int) -> list[tuple[int, str]]:
    rows = await db.fetch(
        "SELECT version, status FROM snapshots WHERE instance_id = $1 ORDER BY version DESC", instance_id
    )
    return [(r["version"], r["status"]) for r in rows]


async def begin(nc: NatsClient, instance_id: int, generation: int = 1) -> int:
    body = encode(UploadBegin(instance_id=instance_id, generation=generation, size_bytes=10))
    reply = decode((await nc.request(subjects.STATE_UPLOAD_BEGIN, body, timeout=5)).data, UploadAccepted)
    return reply.snapshot_id


async def send(nc: NatsClient, snapshot_id: int, index: int, data: bytes) -> ChunkStored | StateRefused:
    extra = {headers.SNAPSHOT_ID: str(snapshot_id), headers.CHUNK_INDEX: str(index)}
    response = await nc.request(subjects.STATE_UPLOAD_CHUNK, data, timeout=5, headers=extra)
    return decode(response.data, ChunkStored | StateRefused)  # type: ignore[arg-type]


async def commit(nc: NatsClient, snapshot_id: int, chunk_count: int, sha256: str) -> bytes:
    body = encode(UploadCommit(snapshot_id=snapshot_id, chunk_count=chunk_count, sha256=sha256))
    return (await nc.request(subjects.STATE_UPLOAD_COMMIT, body, timeout=5)).data


def random_tree(root: Path, total_bytes: int) -> None:
    """Nested folders of random files (modes vary), plus an empty file and an empty folder."""
    rng = random.Random(7)
    (root / "empty-dir").mkdir(parents=True)
    (root / "empty-file").write_bytes(b"")
    written = 0
    index = 0
    while written < total_bytes:
        folder = root.joinpath(*(f"d{rng.randrange(4)}" for _ in range(rng.randrange(1, 4))))
        folder.mkdir(parents=True, exist_ok=True)
        size = min(rng.randrange(1, 1_500_000), total_bytes - written)
        path = folder / f"f{index}.bin"
        path.write_bytes(os.urandom(size))
        path.chmod(rng.choice([0o600, 0o644, 0o755, 0o640, 0o700]))
        written += size
        index += 1


async def test_round_trip_of_10_mb_is_byte_identical(nc, instance, tmp_path, db):
    source = tmp_path / "source"
    random_tree(source, 10 * 1024 * 1024)
    assert await upload_folder(nc, instance, 1, source) == 1
    target = write_folder(tmp_path / "target", "to be replaced")
    assert await restore_folder(nc, instance, target) == 1
    assert tree(target) == tree(source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source", "target"]  # no staging left
    row = await db.fetchrow(
        "SELECT chunk_count, stored_bytes, size_bytes FROM snapshots WHERE instance_id = $1", instance
    )
    assert row["chunk_count"] > 1
    assert row["size_bytes"] > 10 * 1024 * 1024


def status_bytes(pid: int | str, field: str) -> int:
    """A `kB` field of /proc/<pid>/status (`VmHWM`: peak resident set, `VmRSS`: current one) in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def reset_peak_rss(pid: int | str) -> None:
    """Restart the VmHWM of a process from its current resident set (writing 5 to clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as clear_refs:
        clear_refs.write("5")


def random_files(root: Path, total_bytes: int, count: int) -> dict[str, str]:
    """`count` files of incompressible bytes written in 1 MiB blocks; the sha256 of each by name."""
    root.mkdir(parents=True)
    digests: dict[str, str] = {}
    for number in range(count):
        digest = hashlib.sha256()
        with (root / f"part{number}.bin").open("wb") as file:
            for _ in range(total_bytes // count // MIB):
                block = os.urandom(MIB)
                digest.update(block)
                file.write(block)
        digests[f"part{number}.bin"] = digest.hexdigest()
    return digests


def file_digests(root: Path) -> dict[str, str]:
    """The sha256 of every file in `root`, read in blocks."""
    digests: dict[str, str] = {}
    for path in sorted(root.iterdir()):
        with path.open("rb") as file:
            digests[path.name] = hashlib.file_digest(file, "sha256").hexdigest()
    return digests


async def test_256_mb_snapshot_round_trips_with_bounded_memory(nc, instance, state, tmp_path, db):
    """Issue 4: a 256 MB snapshot goes up and comes back byte-identical, and neither the state
    service nor the client ever holds it in memory (their peak RSS stays far below its size)."""
    source, target = tmp_path / "big-source", tmp_path / "big-target"
    try:
        expected = await asyncio.to_thread(random_files, source, BIG_SNAPSHOT_BYTES, BIG_SNAPSHOT_FILES)
        reset_peak_rss(state.pid)
        reset_peak_rss("self")
        state_rss, client_rss = status_bytes(state.pid, "VmRSS"), status_bytes("self", "VmRSS")
        started = time.monotonic()
        assert await upload_folder(nc, instance, 1, source) == 1
        uploaded = time.monotonic()
        assert await restore_folder(nc, instance, target) == 1
        restored = time.monotonic()
        state_peak = status_bytes(state.pid, "VmHWM")
        client_growth = status_bytes("self", "VmHWM") - client_rss
        print(
            f"256 MB snapshot: upload {uploaded - started:.1f}s, restore {restored - uploaded:.1f}s;"
            f" peak RSS of the state service {state_peak / MIB:.0f} MiB ({state_rss / MIB:.0f} before),"
            f" client +{client_growth / MIB:.0f} MiB"
        )
        assert await asyncio.to_thread(file_digests, target) == expected
        assert sorted(p.name for p in tmp_path.iterdir()) == ["big-source", "big-target"]  # no staging left
        row = await db.fetchrow("SELECT size_bytes, stored_bytes FROM snapshots WHERE instance_id = $1", instance)
        assert row["size_bytes"] > BIG_SNAPSHOT_BYTES
        assert row["stored_bytes"] > BIG_SNAPSHOT_BYTES  # random bytes do not compress
        assert state_peak < STATE_PEAK_RSS_LIMIT
        assert state_peak - state_rss < RSS_GROWTH_LIMIT
        assert client_growth < RSS_GROWTH_LIMIT
    finally:
        shutil.rmtree(source, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        await db.execute("DELETE FROM snapshots WHERE instance_id = $1", instance)


async def test_no_snapshot_restores_nothing(nc, instance, tmp_path):
    folder = write_folder(tmp_path / "state", "untouched")
    assert await restore_folder(nc, instance, folder) is None
    assert (folder / "content.txt").read_text() == "untouched"


async def test_only_the_newest_five_versions_are_kept(nc, instance, tmp_path, db):
    for number in range(1, 8):
        assert await upload_folder(nc, instance, 1, write_folder(tmp_path / "state", f"v{number}")) == number
    assert await versions(db, instance) == [(v, "complete") for v in (7, 6, 5, 4, 3)]
    target = tmp_path / "target"
    assert await restore_folder(nc, instance, target) == 7
    assert (target / "content.txt").read_text() == "v7"


@pytest.mark.parametrize(
    "damage",
    [
        "UPDATE snapshot_chunks SET data = 'garbage' WHERE snapshot_id = $1 AND index = 0",
        "DELETE FROM snapshot_chunks WHERE snapshot_id = $1",
    ],
    ids=["corrupt", "truncated"],
)
async def test_a_damaged_latest_version_falls_back_to_the_previous(nc, instance, tmp_path, db, damage):
    await upload_folder(nc, instance, 1, write_folder(tmp_path / "v1", "good"))
    await upload_folder(nc, instance, 1, write_folder(tmp_path / "v2", "newer"))
    latest = await db.fetchval("SELECT id FROM snapshots WHERE instance_id = $1 AND version = 2", instance)
    await db.execute(damage, latest)
    events: list[SnapshotFallback] = []

    async def record(msg) -> None:
        events.append(msgspec.json.decode(msg.data, type=SnapshotFallback))

    async def received() -> bool:
        return bool(events)

    subscription = await nc.subscribe(subjects.instance_snapshot_events(instance), cb=record)
    try:
        target = tmp_path / "target"
        assert await restore_folder(nc, instance, target) == 1
        assert (target / "content.txt").read_text() == "good"
        await wait_until(received, 10, what="the fallback event")
    finally:
        await subscription.unsubscribe()
    assert (events[0].corrupt_version, events[0].restored_version) == (2, 1)
    assert await versions(db, instance) == [(2, "corrupt"), (1, "complete")]


async def test_an_abandoned_upload_never_replaces_the_good_snapshot(nc, instance, tmp_path, db):
    await upload_folder(nc, instance, 1, write_folder(tmp_path / "v1", "good"))
    snapshot_id = await begin(nc, instance)
    assert isinstance(await send(nc, snapshot_id, 0, b"partial"), ChunkStored)
    assert isinstance(await send(nc, snapshot_id, 0, b"partial"), ChunkStored)  # a repeat is harmless
    assert isinstance(await send(nc, snapshot_id, 5, b"gap"), StateRefused)  # chunks arrive in order
    assert isinstance(await send(nc, snapshot_id, 1, b""), StateRefused)
    target = tmp_path / "target"
    assert await restore_folder(nc, instance, target) == 1
    assert (target / "content.txt").read_text() == "good"

    async def swept() -> bool:
        return await versions(db, instance) == [(1, "complete")]

    await wait_until(swept, UPLOAD_TIMEOUT_SECONDS * 4, what="the abandoned upload deleted")


async def test_empty_and_mismatching_uploads_are_refused(nc, instance, tmp_path, db):
    await upload_folder(nc, instance, 1, write_folder(tmp_path / "v1", "good"))
    empty = await begin(nc, instance)
    assert b"state.refused" in await commit(nc, empty, 0, hashlib.sha256(b"").hexdigest())
    wrong = await begin(nc, instance)
    await send(nc, wrong, 0, b"some bytes")
    assert b"state.refused" in await commit(nc, wrong, 1, hashlib.sha256(b"other bytes").hexdigest())
    short = await begin(nc, instance)
    await send(nc, short, 0, b"some bytes")
    assert b"state.refused" in await commit(nc, short, 2, hashlib.sha256(b"some bytes").hexdigest())
    assert await versions(db, instance) == [(1, "complete")]
    assert await restore_folder(nc, instance, tmp_path / "target") == 1


async def test_uploads_of_an_older_generation_are_refused(nc, db, tenant, state, tmp_path):
    instance = await new_instance(db, tenant.id, 3)
    try:
        folder = write_folder(tmp_path / "state", "x")
        with pytest.raises(SnapshotError, match="older"):
            await upload_folder(nc, instance, 2, folder)
        assert await upload_folder(nc, instance, 3, folder) == 1
        assert await upload_folder(nc, instance, 5, folder) == 2
        with pytest.raises(SnapshotError, match="older"):
            await upload_folder(nc, instance, 4, folder)
        stale = await begin(nc, instance, 5)  # begun at 5, then generation 6 uploads: 5 can no longer commit
        await send(nc, stale, 0, b"late")
        assert await upload_folder(nc, instance, 6, folder) == 4
        assert b"fenced" in await commit(nc, stale, 1, hashlib.sha256(b"late").hexdigest())
        assert await versions(db, instance) == [(4, "complete"), (2, "complete"), (1, "complete")]
    finally:
        await db.execute("DELETE FROM instances WHERE id = $1", instance)


async def test_kill_9_during_an_upload_keeps_the_previous_snapshot(nc, instance, state, tmp_path):
    await upload_folder(nc, instance, 1, write_folder(tmp_path / "v1", "good"))
    snapshot_id = await begin(nc, instance)
    await send(nc, snapshot_id, 0, os.urandom(100_000))
    await state.kill9()
    state.start()
    await wait_until(lambda: answering(nc), 30, what="the state service back")
    target = tmp_path / "target"
    assert await restore_folder(nc, instance, target) == 1
    assert (target / "content.txt").read_text() == "good"
    assert await upload_folder(nc, instance, 1, write_folder(tmp_path / "v2", "next")) >= 2


async def test_admin_and_tenant_endpoints(nc, instance, tenant, client, db, tmp_path):
    base = f"/admin/instances/{instance}/snapshots"
    assert (await client.get(base)).status_code == 401
    assert (await client.get(base, headers=ADMIN)).json() == []
    last = f"/api/instances/{instance}/snapshot"
    assert (await client.get(last)).status_code == 401
    assert (await client.get(last, headers=tenant.headers)).status_code == 404
    random_tree(tmp_path / "state", 2 * 1024 * 1024)
    await upload_folder(nc, instance, 1, tmp_path / "state")
    await upload_folder(nc, instance, 1, tmp_path / "state")

    listed = (await client.get(base, headers=ADMIN)).json()
    assert [s["version"] for s in listed] == [2, 1]
    assert {s["status"] for s in listed} == {"complete"}
    async with client.stream("GET", f"{base}/2/download", headers=ADMIN) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/zstd"
        digest = hashlib.sha256()
        async for data in response.aiter_bytes():
            digest.update(data)
    assert digest.hexdigest() == listed[0]["sha256"] == response.headers["x-checksum-sha256"]
    assert (await client.get(f"{base}/9/download", headers=ADMIN)).status_code == 404
    assert (await client.get(f"{base}/2/download")).status_code == 401
    assert (await client.get("/admin/instances/999999/snapshots", headers=ADMIN)).status_code == 404

    body = (await client.get(last, headers=tenant.headers)).json()
    assert body["version"] == 2
    assert body["sizeBytes"] == listed[0]["sizeBytes"] > 2 * 1024 * 1024
    assert body["takenAt"]
    other = await create_tenant(client)
    assert (await client.get(last, headers=other.headers)).status_code == 404


async def test_agent_snapshotter_uploads_only_changes_and_restores_only_newer_versions(
    nc: NatsClient, instance: int, tmp_path: Path, db: asyncpg.Pool
) -> None:
    node_a = InstancePaths.under(tmp_path / "a", instance)
    node_b = InstancePaths.under(tmp_path / "b", instance)
    write_folder(node_a.state_dir, "paired")
    snapshotter = Snapshotter(lambda: nc, restore_timeout_seconds=5)
    paused: list[str] = []

    async def pause() -> None:
        paused.append("pause")

    async def unpause() -> None:
        paused.append("unpause")

    first = await snapshotter.take(instance, 1, node_a, pause=pause, unpause=unpause)
    assert first.version is not None
    assert paused == ["pause", "unpause"]
    assert first.pause_ms > 0
    unchanged = await snapshotter.take(instance, 1, node_a)
    assert unchanged.version is None  # same content: nothing uploaded
    write_folder(node_a.state_dir, "paired, one message later")
    second = await snapshotter.take(instance, 1, node_a)
    assert second.version == first.version + 1
    assert [v for v, _ in await versions(db, instance)] == [second.version, first.version]

    # Another node restores the newest version once; a node that has it already restores nothing.
    assert await snapshotter.restore_if_newer(instance, node_b) == second.version
    assert tree(node_b.state_dir) == tree(node_a.state_dir)
    assert await snapshotter.restore_if_newer(instance, node_b) is None
    assert await snapshotter.restore_if_newer(instance, node_a) is None


async def test_the_state_service_freezes_its_start_up_heap(state: Service) -> None:
    """Full collections skip what start-up made (decision 36)."""
    assert await frozen_objects(state) > 10_000
