"""API settings, read once from the environment."""

from dataclasses import dataclass
from functools import lru_cache

from wgs_kit.env import env_float, env_int, env_str

from wgs_api.domain.messaging.leases import LEASE_SECONDS

# How long an idle keep-alive connection stays open. Longer than the idle timeout of what sits in
# front (a load balancer's, a client's pool): the side that closes an idle connection must be the
# one that would send on it, or a request sent just as the API closes the connection is lost
# (uvicorn's default of 5 s lost 1 send of 5,000 that way in a benchmark run).
KEEP_ALIVE_SECONDS = 75


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the API process is configured with."""

    host: str
    port: int
    keep_alive_seconds: int
    database_url: str
    nats_url: str
    admin_secret: str | None
    default_wait_seconds: float
    max_wait_seconds: float
    delete_wait_seconds: float
    node_timeout_seconds: float
    default_cpu: str
    default_memory: str
    min_memory_bytes: int
    pids_limit: int
    migrate_timeout_seconds: float
    drain_timeout_seconds: float
    events_max_deliver: int
    send_lease_seconds: float

    @classmethod
    def from_env(cls) -> "Settings":
        """Settings from `WGS_*`, `DATABASE_URL`, `NATS_URL` and `ADMIN_API_SECRET`."""
        return cls(
            host=env_str("WGS_API_HOST", "127.0.0.1"),
            port=env_int("WGS_API_PORT", 8080),
            keep_alive_seconds=env_int("WGS_API_KEEP_ALIVE_SECONDS", KEEP_ALIVE_SECONDS),
            database_url=env_str("DATABASE_URL"),
            nats_url=env_str("NATS_URL", "nats://127.0.0.1:4222"),
            admin_secret=env_str("ADMIN_API_SECRET", "") or None,
            default_wait_seconds=env_float("WGS_CREATE_WAIT_SECONDS", 30.0),
            max_wait_seconds=env_float("WGS_MAX_WAIT_SECONDS", 120.0),
            delete_wait_seconds=env_float("WGS_DELETE_WAIT_SECONDS", 30.0),
            node_timeout_seconds=env_float("WGS_NODE_TIMEOUT_SECONDS", 15.0),
            default_cpu=env_str("WGS_DEFAULT_CPU", "0.5"),
            default_memory=env_str("WGS_DEFAULT_MEMORY", "512m"),
            min_memory_bytes=env_int("WGS_MIN_MEMORY_BYTES", 32 * 1024 * 1024),
            pids_limit=env_int("WGS_PIDS_LIMIT", 256),
            migrate_timeout_seconds=env_float("WGS_API_MIGRATE_TIMEOUT_SECONDS", 240.0),
            drain_timeout_seconds=env_float("WGS_API_DRAIN_TIMEOUT_SECONDS", 3600.0),
            events_max_deliver=env_int("WGS_API_EVENTS_MAX_DELIVER", 8),
            send_lease_seconds=env_float("WGS_API_SEND_LEASE_SECONDS", LEASE_SECONDS),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read on first use)."""
    return Settings.from_env()
