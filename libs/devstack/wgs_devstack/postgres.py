"""An embedded PostgreSQL server on 127.0.0.1, for dev and tests."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import asyncpg

from wgs_devstack.processes import (
    ManagedProcess,
    ProcessBacked,
    ProcessError,
    free_port,
    port_in_use,
    run_command,
)

DB_USER = "wgs"
DB_NAME = "wgs"
_OS_USER = "postgres"


def postgres_bindir() -> Path:
    """Directory holding ``initdb`` and ``postgres``: ``pg_config --bindir``, else the newest
    ``/usr/lib/postgresql/<version>/bin``."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        bindir = Path(out.stdout.strip())
        if out.returncode == 0 and (bindir / "postgres").is_file():
            return bindir
    candidates = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/postgres")]
    if not candidates:
        raise ProcessError("PostgreSQL server binaries not found (apt-get install postgresql)")
    return max(candidates, key=lambda p: float(p.parent.name))


def _grant_search(path: Path) -> None:
    """Make ``path`` and its ancestors traversable (o+x) so the postgres user can reach it."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


class EmbeddedPostgres(ProcessBacked):
    """A private PostgreSQL cluster: ``data_dir`` is PGDATA, initialised once.

    Runs as the ``postgres`` OS user when we are root (PostgreSQL refuses root);
    ``start`` then grants o+x on the data dir's ancestors, which must stay
    traversable (pytest resets its tmp root to 0700 whenever a session starts, so
    use a ``tempfile.mkdtemp`` directory there). The unix socket lives in
    ``<data_dir>-run`` beside the data dir to keep the path short.
    """

    def __init__(self, data_dir: Path, port: int | None = None, *, fsync: bool = True) -> None:
        self.data_dir = data_dir.absolute()
        self.port = port or free_port()
        self.fsync = fsync
        self.socket_dir = self.data_dir.with_name(self.data_dir.name + "-run")
        self.log_path = self.data_dir.with_name(self.data_dir.name + ".log")
        self._bindir = postgres_bindir()
        self._user = _OS_USER if os.geteuid() == 0 else None
        self._proc = ManagedProcess("postgres", self._server_argv(), log_path=self.log_path, user=self._user)

    @property
    def dsn(self) -> str:
        """DSN of the ``wgs`` database: ``postgresql://wgs@127.0.0.1:<port>/wgs``."""
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{DB_NAME}"

    def _server_argv(self) -> list[str]:
        argv = [
            str(self._bindir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-h",
            "127.0.0.1",
            "-k",
            str(self.socket_dir),
        ]
        if not self.fsync:
            # Commits still go through the flush path (synchronous_commit stays on), so that a
            # session's own choice of it shows; the flush itself is a no-op.
            for setting in ("fsync=off", "full_page_writes=off"):
                argv += ["-c", setting]
        return argv

    def _own(self, path: Path) -> None:
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    async def _initdb(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._own(self.data_dir)
        argv = [
            str(self._bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "--auth=trust",
            "-U",
            DB_USER,
            "-E",
            "UTF8",
            "--locale=C",
        ]
        if not self.fsync:
            argv.append("--no-sync")
        await run_command(argv, log_path=self.log_path, user=self._user, timeout=300)

    async def _connect(self, database: str) -> asyncpg.Connection:
        return await asyncpg.connect(host="127.0.0.1", port=self.port, user=DB_USER, database=database, timeout=2)

    async def start(self, timeout: float = 60.0) -> None:
        """Initialise the cluster if needed, start it, and create database ``wgs``."""
        if port_in_use(self.port):  # the readiness probe would reach the other server
            raise ProcessError(f"port {self.port} is already in use")
        if self._user is not None:
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            _grant_search(self.data_dir.parent)
        await self._initdb()
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._own(self.socket_dir)
        self._proc.start()

        async def accepting() -> bool:
            conn = await self._connect("postgres")
            await conn.close()
            return True

        try:
            await self._proc.wait_ready(accepting, timeout, interval=0.2)
            conn = await self._connect("postgres")
            try:
                exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DB_NAME)
                if not exists:
                    await conn.execute(f'CREATE DATABASE "{DB_NAME}"')
            finally:
                await conn.close()
        except BaseException:
            await self.stop()
            raise

    async def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown: SIGINT the postmaster by PID, SIGKILL after ``timeout``."""
        await self._proc.stop(timeout, sig=signal.SIGINT)
