"""Child processes started, probed and stopped by PID."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from wgs_kit.procfs import pid_alive

Probe = Callable[[], Awaitable[bool]]

_POLL_INTERVAL = 0.05


START_LINE = "--- start: "  # written to a process's log before each start, then its command line


class ProcessError(RuntimeError):
    """A managed process failed to start, become ready or finish."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(port: int) -> bool:
    """True if something already accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def tail(path: Path, lines: int = 30) -> str:
    """Return the last ``lines`` lines of a text file ("" if it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            data = fh.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


async def wait_pid_gone(pid: int, timeout: float) -> bool:
    """Poll until a process that is not our child disappears; return False on timeout."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_POLL_INTERVAL)
    return True


async def run_command(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600.0,
    user: str | None = None,
    stdin: int | None = subprocess.DEVNULL,
) -> None:
    """Run a command to completion, appending its output to ``log_path``.

    Raises ProcessError with the log tail if it fails or exceeds ``timeout``.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=stdin,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            user=user,
            group=_group_of(user),
            extra_groups=[] if user else None,
            start_new_session=True,
        )
        try:
            code = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            await kill_and_reap(proc)
            raise ProcessError(f"{argv[0]} timed out after {timeout:.0f}s; log {log_path}:\n{tail(log_path)}") from None
        except BaseException:  # cancelled: do not leave the command running
            await kill_and_reap(proc)
            raise
    if code != 0:
        raise ProcessError(f"{argv[0]} exited with {code}; log {log_path}:\n{tail(log_path)}")


async def kill_and_reap(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL a command started by ``run_command`` and its process group, and reap it."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the group id is its PID
        await proc.wait()


def _group_of(user: str | None) -> int | None:
    return pwd.getpwnam(user).pw_gid if user is not None else None


async def _probe_ok(probe: Probe) -> bool:
    """Run a readiness probe; an exception counts as "not ready yet"."""
    try:
        return await probe()
    except Exception:
        return False


class ManagedProcess:
    """A long-running child process with its output in a log file.

    The child runs in its own session, so a Ctrl-C at the terminal reaches only
    the parent, which then stops children in the order it chooses.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.user = user
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """PID of the child, or None if it was never started."""
        return self._popen.pid if self._popen else None

    @property
    def returncode(self) -> int | None:
        """Exit code once the child has exited (and been reaped), else None."""
        return self._popen.poll() if self._popen else None

    @property
    def running(self) -> bool:
        """True while the child is started and has not exited."""
        return self._popen is not None and self._popen.poll() is None

    def start(self) -> None:
        """Start the child; its stdout and stderr are appended to the log file."""
        if self.running:
            raise ProcessError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"{START_LINE}{' '.join(self.argv)}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                user=self.user,
                group=_group_of(self.user),
                extra_groups=[] if self.user else None,
                start_new_session=True,
            )

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines of the log file."""
        return tail(self.log_path, lines)

    async def wait_ready(self, probe: Probe, timeout: float, interval: float = 0.1) -> None:
        """Poll ``probe`` until it returns True.

        Raises ProcessError (with the log tail) if the child exits first or the
        deadline passes. Exceptions raised by the probe count as "not ready".
        """
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise ProcessError(
                    f"{self.name} exited with {self.returncode} before becoming ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if await _probe_ok(probe):
                return
            if time.monotonic() >= deadline:
                raise ProcessError(
                    f"{self.name} not ready after {timeout:.1f}s; log {self.log_path}:\n{self.log_tail()}"
                )
            await asyncio.sleep(interval)

    def send_signal(self, sig: int) -> None:
        """Send a signal to the child's PID if it is still running."""
        if self._popen is not None and self._popen.poll() is None:
            os.kill(self._popen.pid, sig)

    async def wait_exit(self, timeout: float) -> int | None:
        """Poll until the child exits (reaping it); return its code, or None on timeout."""
        deadline = time.monotonic() + timeout
        while self._popen is not None:
            code = self._popen.poll()
            if code is not None:
                return code
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(_POLL_INTERVAL)
        return None

    async def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
        """Send ``sig`` (SIGTERM), then SIGKILL after ``timeout``; reap and return the code."""
        if self._popen is None:
            return None
        self.send_signal(sig)
        code = await self.wait_exit(timeout)
        if code is None:
            self.kill9()
            code = await self.wait_exit(timeout)
        return code

    def kill9(self) -> None:
        """Send SIGKILL to the child's PID (it is reaped by the next poll or stop)."""
        self.send_signal(signal.SIGKILL)


class ProcessBacked:
    """Mixin for a server run as one ManagedProcess (`self._proc`): its PID, liveness and kill -9."""

    _proc: ManagedProcess

    @property
    def pid(self) -> int | None:
        """PID of the server process, if started."""
        return self._proc.pid

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc.running

    def kill9(self) -> None:
        """SIGKILL the server (simulates a crash); call `stop` afterwards to reap it."""
        self._proc.kill9()


async def stop_recorded_providers(node_dir: Path, timeout: float = 10.0) -> list[int]:
    """Stop, by PID, the sandbox processes a node agent's process runtime recorded under `node_dir`
    (`instances/<id>/process.json`) that still run; their PIDs.

    The agent stops them when it exits; one that was killed, or did not finish in time, leaves
    them running. A recorded PID is stopped only while its command line is still a `wgs_sandbox`.
    """
    stopped = []
    for record in sorted(node_dir.glob("instances/*/process.json")):
        pid = json.loads(record.read_text())["pid"]
        cmdline = Path(f"/proc/{pid}/cmdline")
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            if pid_alive(pid) and b"wgs_sandbox" in cmdline.read_bytes():
                os.kill(pid, signal.SIGTERM)
                if not await wait_pid_gone(pid, timeout=timeout):
                    os.kill(pid, signal.SIGKILL)
                stopped.append(pid)
    return stopped
