"""State service settings, read once from the environment."""

from dataclasses import dataclass

from wgs_contracts.state import DEFAULT_CHUNK_BYTES
from wgs_kit.env import env_float, env_int, env_str


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything a state process is configured with."""

    database_url: str
    nats_url: str
    keep: int
    chunk_bytes: int
    upload_timeout_seconds: float

    @classmethod
    def from_env(cls) -> "Settings":
        """Settings from `DATABASE_URL`, `NATS_URL` and `WGS_STATE_*`."""
        return cls(
            database_url=env_str("DATABASE_URL"),
            nats_url=env_str("NATS_URL", "nats://127.0.0.1:4222"),
            keep=max(1, env_int("WGS_STATE_KEEP", 5)),
            chunk_bytes=env_int("WGS_STATE_CHUNK_BYTES", DEFAULT_CHUNK_BYTES),
            upload_timeout_seconds=env_float("WGS_STATE_UPLOAD_TIMEOUT_SECONDS", 900.0),
        )
