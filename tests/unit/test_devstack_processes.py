"""ManagedProcess: start, readiness probes, stop/escalation, and run_command."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

import pytest
from wgs_devstack.processes import (
    ManagedProcess,
    Probe,
    ProcessError,
    free_port,
    pid_alive,
    run_command,
)
from wgs_kit.waiting import wait_until

# Listens on the port given as argv[1] after a short delay; exits 0 on SIGTERM.
SERVER = """
import signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("child starting", flush=True)
time.sleep(0.3)
sock = socket.create_server(("127.0.0.1", int(sys.argv[1])))
print("child listening", flush=True)
while True:
    time.sleep(1)
"""


def _python(tmp_path: Path, name: str, code: str, *args: str) -> ManagedProcess:
    return ManagedProcess(name, [sys.executable, "-c", code, *args], log_path=tmp_path / f"{name}.log")


def _port_probe(port: int) -> Probe:
    async def probe() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    return probe


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        pass


async def test_start_ready_stop(tmp_path: Path) -> None:
    port = free_port()
    proc = _python(tmp_path, "server", SERVER, str(port))
    proc.start()
    assert proc.pid is not None
    assert proc.running
    await proc.wait_ready(_port_probe(port), timeout=10)
    assert "child listening" in proc.log_tail()
    assert await proc.stop() == 0
    assert not proc.running
    assert not pid_alive(proc.pid)


async def test_wait_ready_timeout_raises_with_log_tail(tmp_path: Path) -> None:
    proc = _python(tmp_path, "silent", "print('never ready', flush=True)\nimport time; time.sleep(60)")
    proc.start()
    try:
        with pytest.raises(ProcessError, match="not ready after") as err:
            await proc.wait_ready(_port_probe(free_port()), timeout=0.5)
        assert "never ready" in str(err.value)
    finally:
        await proc.stop()


async def test_wait_ready_raises_when_child_exits(tmp_path: Path) -> None:
    proc = _python(tmp_path, "crasher", "import sys; print('boom', flush=True); sys.exit(3)")
    proc.start()
    with pytest.raises(ProcessError, match="exited with 3") as err:
        await proc.wait_ready(_port_probe(free_port()), timeout=10)
    assert "boom" in str(err.value)


async def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(60)"
    proc = _python(tmp_path, "stubborn", code)
    proc.start()
    await proc.wait_ready(lambda: _logged(proc, "up"), timeout=10)
    assert await proc.stop(timeout=0.5) == -signal.SIGKILL


async def test_kill9(tmp_path: Path) -> None:
    proc = _python(tmp_path, "victim", "import time; time.sleep(60)")
    proc.start()
    proc.kill9()
    assert await proc.wait_exit(timeout=10) == -signal.SIGKILL


async def test_restart_after_stop(tmp_path: Path) -> None:
    proc = _python(tmp_path, "again", "import time; time.sleep(60)")
    proc.start()
    first = proc.pid
    await proc.stop()
    proc.start()
    assert proc.running
    assert proc.pid != first
    await proc.stop()
    assert proc.log_path.read_text().count("--- start:") == 2


async def test_run_command_success_and_failure(tmp_path: Path) -> None:
    log = tmp_path / "cmd.log"
    await run_command([sys.executable, "-c", "print('fine')"], log_path=log)
    assert "fine" in log.read_text()
    with pytest.raises(ProcessError, match="exited with 2") as err:
        await run_command([sys.executable, "-c", "import sys; print('bad input'); sys.exit(2)"], log_path=log)
    assert "bad input" in str(err.value)
    with pytest.raises(ProcessError, match="timed out"):
        await run_command([sys.executable, "-c", "import time; time.sleep(60)"], log_path=log, timeout=0.3)


async def _logged(proc: ManagedProcess, text: str) -> bool:
    await asyncio.sleep(0)
    return text in proc.log_tail().splitlines()


async def test_cancelled_run_command_kills_the_command(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    task = asyncio.create_task(run_command([sys.executable, "-c", code], log_path=tmp_path / "c.log"))

    async def pid_written() -> bool:
        return pid_file.is_file() and bool(pid_file.read_text())

    await wait_until(pid_written, timeout=10, what="the command wrote its pid")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not pid_alive(int(pid_file.read_text()))
