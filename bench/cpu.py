"""CPU time per component of the machine, to see where a benchmark's time goes.

Reads utime + stime of every process in /proc, plus cutime + cstime (the CPU of its children
that have exited and been waited for: a load generator that ran one phase in a child process,
a PostgreSQL backend whose connection closed), and groups them by what they run (a gateway
service, the sandbox provider, PostgreSQL, NATS, Docker, the load generator); a reading taken
before and after a phase gives CPU seconds per component.

`MachineSampler` watches the whole machine during a phase: how busy it was, and how much of
its time the hypervisor gave to other guests while this one wanted a core ("steal"). A latency
run's slowest answers cluster where steal is high (a probe found 21-31% steal in the 100 ms
windows of such clusters), so each run reports it beside its percentiles.
"""

import asyncio
import contextlib
import os
from collections import defaultdict
from pathlib import Path
from types import TracebackType

from bench.open_loop import BINARY_PREFIX

COMPONENTS = (
    ("wgs_api", "api"),
    ("wgs_node_agent", "node agent"),
    ("wgs_scheduler", "scheduler"),
    ("wgs_webhooks", "webhooks"),
    ("wgs_state", "state"),
    ("wgs_sandbox", "sandbox provider"),
    ("echo_baseline", "baseline server"),
    ("postgres", "postgresql"),
    ("nats-server", "nats"),
    ("dockerd", "docker"),
    ("containerd", "docker"),
    ("wrk", "load generator"),
    (BINARY_PREFIX, "load generator"),
    ("bench.", "load generator"),
)
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def component_of(cmdline: str) -> str | None:
    """The component a process belongs to, from its command line (None: not ours)."""
    return next((name for marker, name in COMPONENTS if marker in cmdline), None)


def cpu_reading() -> dict[str, float]:
    """CPU seconds used so far per component, summed over its live processes and their exited children."""
    totals: dict[str, float] = defaultdict(float)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        component = component_of(cmdline)
        if component is not None:
            totals[component] += sum(int(ticks) for ticks in fields[11:15]) / TICKS_PER_SECOND
    return dict(totals)


def cpu_ms_per_unit(before: dict[str, float], after: dict[str, float], units: int) -> dict[str, float]:
    """CPU milliseconds per unit of work (e.g. per send) of each component between two readings."""
    if units <= 0:
        return {}
    spent = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}
    return {name: round(seconds * 1000 / units, 3) for name, seconds in sorted(spent.items()) if seconds > 0}


IDLE, IOWAIT, STEAL = 3, 4, 7  # fields of /proc/stat's `cpu` line (after the label)
MACHINE_SAMPLE_SECONDS = 0.25
WORST_WINDOW_SAMPLES = 4  # the worst steal is reported over 1 s windows


def machine_reading() -> list[int]:
    """The machine's CPU time so far by kind, in ticks (`/proc/stat`: user, nice, system, idle,
    iowait, irq, softirq, steal; the guest times that follow are already counted in user and nice)."""
    with open("/proc/stat", encoding="ascii") as fh:
        return [int(field) for field in fh.readline().split()[1:9]]


def machine_shares(before: list[int], after: list[int]) -> dict[str, float]:
    """Percent of the machine's time between two readings that it was busy, and that was stolen."""
    spent = [later - earlier for earlier, later in zip(before, after, strict=True)]
    total = sum(spent)
    if total <= 0:
        return {"busy_percent": 0.0, "steal_percent": 0.0}
    busy = total - spent[IDLE] - spent[IOWAIT] - spent[STEAL]
    return {"busy_percent": round(100 * busy / total, 1), "steal_percent": round(100 * spent[STEAL] / total, 1)}


class MachineSampler:
    """`async with MachineSampler() as sampler:` reads the machine's CPU time every
    MACHINE_SAMPLE_SECONDS while the block runs; `summary()` afterwards."""

    def __init__(self) -> None:
        self.readings: list[list[int]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "MachineSampler":
        self.readings = [machine_reading()]
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.readings.append(machine_reading())

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(MACHINE_SAMPLE_SECONDS)
            self.readings.append(machine_reading())

    def summary(self) -> dict[str, float]:
        """Busy and steal percent over the whole block, and the worst steal of any 1 s in it."""
        shares = machine_shares(self.readings[0], self.readings[-1])
        windows = [
            machine_shares(self.readings[start], self.readings[start + WORST_WINDOW_SAMPLES])["steal_percent"]
            for start in range(len(self.readings) - WORST_WINDOW_SAMPLES)
        ]
        shares["worst_second_steal_percent"] = max(windows, default=shares["steal_percent"])
        return shares
