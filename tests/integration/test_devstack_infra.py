"""Embedded NATS, PostgreSQL and private Docker engines: start, use, restart, stop."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiodocker
import asyncpg
import httpx
import nats
import pytest
from wgs_devstack import images
from wgs_devstack.docker_engine import DockerEngine, has_docker_engine, mounts_under
from wgs_devstack.nats import EmbeddedNats
from wgs_devstack.postgres import EmbeddedPostgres
from wgs_devstack.processes import ProcessError
from wgs_kit.procfs import pid_alive

needs_dockerd = pytest.mark.docker  # CI installs dockerd and runs as root: no skip hides these


async def test_nats_restart_keeps_port_and_streams(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    await server.start()
    try:
        nc = await nats.connect(server.url)
        await nc.jetstream().add_stream(name="DEVSTACK", subjects=["devstack.>"])
        await nc.jetstream().publish("devstack.one", b"hello")
        await nc.close()

        first_pid = server.pid
        await server.stop()
        assert first_pid is not None
        assert not pid_alive(first_pid)
        await server.start()
        assert server.url == f"nats://127.0.0.1:{server.port}"
        with pytest.raises(ProcessError, match="already in use"):
            await EmbeddedNats(tmp_path / "other", port=server.port).start()

        nc = await nats.connect(server.url)
        info = await nc.jetstream().stream_info("DEVSTACK")
        assert info.state.messages == 1
        await nc.close()
    finally:
        await server.stop()
    assert not server.running


@pytest.fixture
def pg_base() -> Iterator[Path]:
    """A directory outside pytest's tmp root: another pytest session resets that root
    to mode 0700, which would lock the ``postgres`` OS user out of its data dir."""
    path = Path(tempfile.mkdtemp(prefix="wgs-pg-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_postgres_select_and_restart(pg_base: Path) -> None:
    pg = EmbeddedPostgres(pg_base / "pg", fsync=False)
    await pg.start()
    try:
        assert pg.dsn == f"postgresql://wgs@127.0.0.1:{pg.port}/wgs"
        conn = await asyncpg.connect(pg.dsn)
        assert await conn.fetchval("select 1") == 1
        await conn.execute("create table t (x int)")
        await conn.close()

        await pg.stop()
        assert not pg.running
        await pg.start()  # no second initdb; the database and table survive
        conn = await asyncpg.connect(pg.dsn)
        assert await conn.fetchval("select count(*) from t") == 0
        await conn.close()
    finally:
        await pg.stop()


@pytest.mark.docker
@needs_dockerd
async def test_docker_engine_start_ping_stop(tmp_path: Path) -> None:
    engine = DockerEngine(tmp_path / "engine", "t1")
    await engine.start()
    try:
        assert engine.host == f"unix://{tmp_path / 'engine' / 'docker.sock'}"
        assert await has_docker_engine(engine.host)
    finally:
        await engine.stop()
    assert not await has_docker_engine(engine.host)
    assert not engine.exec_root.exists()


@pytest.mark.docker
@needs_dockerd
async def test_docker_engine_restart_after_kill9(tmp_path: Path) -> None:
    engine = DockerEngine(tmp_path / "engine", "crash")
    await engine.start()
    try:
        with pytest.raises(ProcessError, match="already answers"):
            await DockerEngine(tmp_path / "engine", "twin").start()
        engine.kill9()
        await engine.stop()  # reaps the killed dockerd
        assert not await has_docker_engine(engine.host)
        await engine.start()
        assert await has_docker_engine(engine.host)
    finally:
        await engine.stop()
    assert mounts_under(tmp_path) == []


@pytest.mark.docker
@needs_dockerd
async def test_two_docker_engines_at_once(tmp_path: Path) -> None:
    engines = [DockerEngine(tmp_path / f"node{i}", f"node{i}") for i in (1, 2)]
    try:
        for engine in engines:
            await engine.start()
        roots = []
        for engine in engines:
            transport = httpx.AsyncHTTPTransport(uds=engine.host.removeprefix("unix://"))
            async with httpx.AsyncClient(transport=transport, base_url="http://docker") as client:
                roots.append((await client.get("/info")).json()["DockerRootDir"])
        assert roots == [str(engine.root / "data") for engine in engines]
    finally:
        for engine in engines:
            await engine.stop()


@pytest.mark.docker
@needs_dockerd
async def test_sandbox_image_builds_copies_and_runs(tmp_path: Path) -> None:
    """Offline build on one engine, ``docker save | load`` to another, run it there."""
    project_root = Path(__file__).resolve().parents[2]
    builder, other = DockerEngine(tmp_path / "b", "build"), DockerEngine(tmp_path / "o", "other")
    try:
        await builder.start()
        await other.start()
        tags = await images.build_all(builder.host, project_root)
        await images.copy_image(builder.host, other.host, tags["sandbox"])
        async with aiodocker.Docker(url=other.host) as docker:
            container = await docker.containers.run(
                config={
                    "Image": tags["sandbox"],
                    "User": "10001:10001",
                    "Cmd": ["python3", "-c", "import os, wgs_sandbox; print(os.getuid(), os.getgid())"],
                    "HostConfig": {"NetworkMode": "none"},
                }
            )
            result = await container.wait(timeout=60)
            logs = await container.log(stdout=True, stderr=True)
            await container.delete(force=True)
        assert result["StatusCode"] == 0, logs
        assert logs == ["10001 10001\n"]
    finally:
        await builder.stop()
        await other.stop()
