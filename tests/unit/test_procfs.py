"""`wgs_kit.procfs` on real processes: alive, stopped, a zombie, gone; and a command name holding
`) ` (the name is free text inside the parentheses of `/proc/<pid>/stat`)."""

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from wgs_kit.procfs import pid_alive, pid_start_time, pid_stopped, stat_fields
from wgs_kit.waiting import wait_until

DEADLINE = 10.0


@pytest.fixture
def sleeper_named(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A `sleep` whose command name is `a) b`; killed by its pid and reaped after the test."""
    program = tmp_path / "a) b"
    sleep = shutil.which("sleep")
    assert sleep is not None
    shutil.copy(sleep, program)
    child = subprocess.Popen([str(program), "60"])
    try:
        yield child
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=DEADLINE)


async def state_is(pid: int, state: str) -> None:
    async def reached() -> bool:
        fields = stat_fields(pid)
        return fields is not None and fields[0] == state

    await wait_until(reached, DEADLINE, what=f"process {pid} in state {state}")


async def test_a_running_process_is_alive_not_stopped_with_a_start_time(
    sleeper_named: subprocess.Popen[bytes],
) -> None:
    pid = sleeper_named.pid
    assert pid_alive(pid)
    assert not pid_stopped(pid)
    started = pid_start_time(pid)
    assert isinstance(started, int)
    assert started == pid_start_time(pid)
    assert started >= (pid_start_time(os.getpid()) or 0)


async def test_a_process_stopped_by_a_signal_is_stopped_and_alive(sleeper_named: subprocess.Popen[bytes]) -> None:
    pid = sleeper_named.pid
    os.kill(pid, signal.SIGSTOP)
    await state_is(pid, "T")
    assert pid_stopped(pid)
    assert pid_alive(pid)
    os.kill(pid, signal.SIGCONT)
    await state_is(pid, "S")
    assert not pid_stopped(pid)


async def test_a_zombie_is_not_alive_and_a_reaped_process_is_gone(sleeper_named: subprocess.Popen[bytes]) -> None:
    pid = sleeper_named.pid
    os.kill(pid, signal.SIGKILL)
    await state_is(pid, "Z")  # dead, not reaped yet: `a) b` does not hide its state
    assert not pid_alive(pid)
    assert not pid_stopped(pid)
    sleeper_named.wait(timeout=DEADLINE)
    assert stat_fields(pid) is None
    assert not pid_alive(pid)
    assert pid_start_time(pid) is None
