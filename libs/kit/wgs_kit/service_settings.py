"""Settings shared by services that only need the database and NATS."""

from dataclasses import dataclass

from wgs_kit.env import env_str


@dataclass(frozen=True, kw_only=True)
class DatabaseAndNats:
    """`DATABASE_URL` and `NATS_URL`."""

    database_url: str
    nats_url: str

    @classmethod
    def from_env(cls) -> "DatabaseAndNats":
        """Read both from the environment."""
        return cls(
            database_url=env_str("DATABASE_URL"),
            nats_url=env_str("NATS_URL", "nats://127.0.0.1:4222"),
        )
