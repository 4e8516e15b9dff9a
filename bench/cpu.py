"""CPU time per component of the machine, to see where a benchmark's time goes.

Reads utime + stime of every process in /proc and groups them by what they run
(a gateway service, the sandbox provider, PostgreSQL, NATS, Docker, the load
generator); a reading taken before and after a phase gives CPU seconds per component.
"""

import os
from collections import defaultdict
from pathlib import Path

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
    ("bench.", "load generator"),
)
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def component_of(cmdline: str) -> str | None:
    """The component a process belongs to, from its command line (None: not ours)."""
    return next((name for marker, name in COMPONENTS if marker in cmdline), None)


def cpu_reading() -> dict[str, float]:
    """CPU seconds used so far per component, summed over its live processes."""
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
            totals[component] += (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND
    return dict(totals)


def cpu_ms_per_unit(before: dict[str, float], after: dict[str, float], units: int) -> dict[str, float]:
    """CPU milliseconds per unit of work (e.g. per send) of each component between two readings."""
    if units <= 0:
        return {}
    spent = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}
    return {name: round(seconds * 1000 / units, 3) for name, seconds in sorted(spent.items()) if seconds > 0}
