"""Node agent settings, read once from the environment."""

import os
from dataclasses import dataclass
from pathlib import Path

from wgs_contracts.resources import parse_cpu, parse_memory
from wgs_kit.env import SettingsError, env_float, env_float_between, env_str

from wgs_node_agent.network import ROUTE_RETRY_SECONDS

EVENT_LINGER_SECONDS = 0.02  # after a page that emptied a provider's outbox, how long the next events may gather


def host_memory_bytes() -> int:
    """Total memory of this machine from /proc/meminfo."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise SettingsError("cannot read MemTotal from /proc/meminfo")


def sandbox_retry_seconds() -> float:
    """`WGS_SANDBOX_RETRY_SECONDS`: how long a known sandbox phone nobody answers for is asked again
    before what it is sent waits in its mailbox (0-60 s)."""
    return env_float_between("WGS_SANDBOX_RETRY_SECONDS", ROUTE_RETRY_SECONDS, 0, 60)


def event_linger_seconds() -> float:
    """`WGS_EVENT_LINGER_SECONDS`: how long an event pump lets events gather after emptying an outbox (0-1 s)."""
    return env_float_between("WGS_EVENT_LINGER_SECONDS", EVENT_LINGER_SECONDS, 0, 1)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything a node agent is configured with."""

    node_name: str
    nats_url: str
    docker_host: str
    runtime: str  # docker | process | auto
    data_dir: Path
    nano_cpus: int
    memory_bytes: int
    heartbeat_seconds: float
    reconcile_seconds: float
    network_mode: str
    stop_timeout_seconds: int
    snapshot_seconds: float
    restore_timeout_seconds: float
    event_linger_seconds: float
    sandbox_retry_seconds: float

    @classmethod
    def from_env(cls) -> "Settings":
        """Settings from `WGS_NODE_*`, `NATS_URL`, `DOCKER_HOST` and `WGS_RUNTIME`."""
        runtime = env_str("WGS_RUNTIME", "auto")
        if runtime not in {"docker", "process", "auto"}:
            raise SettingsError(f"WGS_RUNTIME must be docker, process or auto, got {runtime!r}")
        return cls(
            node_name=env_str("WGS_NODE_NAME"),
            nats_url=env_str("NATS_URL", "nats://127.0.0.1:4222"),
            docker_host=env_str("DOCKER_HOST", "unix:///var/run/docker.sock"),
            runtime=runtime,
            data_dir=Path(env_str("WGS_NODE_DATA_DIR", "/var/lib/wgs")),
            nano_cpus=parse_cpu(env_str("WGS_NODE_CPU", str(os.cpu_count() or 1))),
            memory_bytes=parse_memory(env_str("WGS_NODE_MEMORY", str(host_memory_bytes()))),
            heartbeat_seconds=env_float("WGS_HEARTBEAT_SECONDS", 5.0),
            reconcile_seconds=env_float("WGS_RECONCILE_SECONDS", 30.0),
            network_mode=env_str("WGS_PROVIDER_NETWORK", "none"),
            stop_timeout_seconds=int(env_float("WGS_STOP_TIMEOUT_SECONDS", 10.0)),
            snapshot_seconds=env_float("WGS_SNAPSHOT_SECONDS", 300.0),
            restore_timeout_seconds=env_float("WGS_RESTORE_TIMEOUT_SECONDS", 60.0),
            event_linger_seconds=event_linger_seconds(),
            sandbox_retry_seconds=sandbox_retry_seconds(),
        )
