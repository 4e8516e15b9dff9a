"""Scheduler settings, read once from the environment."""

import os
import socket
from dataclasses import dataclass

from wgs_kit.env import env_float, env_str


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything a scheduler process is configured with."""

    database_url: str
    nats_url: str
    holder: str
    node_timeout_seconds: float
    retry_pending_seconds: float
    leader_poll_seconds: float
    handoff_timeout_seconds: float
    migrate_timeout_seconds: float
    retention_sweep_seconds: float

    @classmethod
    def from_env(cls) -> "Settings":
        """Settings from `DATABASE_URL`, `NATS_URL` and `WGS_*`."""
        return cls(
            database_url=env_str("DATABASE_URL"),
            nats_url=env_str("NATS_URL", "nats://127.0.0.1:4222"),
            holder=env_str("WGS_SCHEDULER_ID", f"{socket.gethostname()}:{os.getpid()}"),
            node_timeout_seconds=env_float("WGS_NODE_TIMEOUT_SECONDS", 15.0),
            retry_pending_seconds=env_float("WGS_RETRY_PENDING_SECONDS", 5.0),
            leader_poll_seconds=env_float("WGS_LEADER_POLL_SECONDS", 1.0),
            handoff_timeout_seconds=env_float("WGS_HANDOFF_TIMEOUT_SECONDS", 120.0),
            migrate_timeout_seconds=env_float("WGS_MIGRATE_TIMEOUT_SECONDS", 60.0),
            retention_sweep_seconds=env_float("WGS_RETENTION_SWEEP_SECONDS", 3600.0),
        )
