"""Webhooks service settings, read once from the environment."""

from dataclasses import dataclass

from wgs_kit.env import SettingsError, env_float, env_int, env_str
from wgs_kit.urls import allow_private_from_env

# Standard-Webhooks-like: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (8 attempts over 27.6 h, 33.1 h with all jitter).
DEFAULT_SCHEDULE = "5,300,1800,7200,18000,36000,36000"


def parse_schedule(raw: str) -> tuple[float, ...]:
    """`"5,300,1800"` as retry delays in seconds; `SettingsError` unless all are numbers >= 0."""
    try:
        delays = tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise SettingsError(f"WGS_WEBHOOKS_SCHEDULE must be a comma list of seconds, got {raw!r}") from None
    if any(delay < 0 for delay in delays):
        raise SettingsError(f"WGS_WEBHOOKS_SCHEDULE delays must not be negative, got {raw!r}")
    return delays


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the webhooks process is configured with."""

    database_url: str
    nats_url: str
    allow_private: bool
    timeout_seconds: float
    schedule: tuple[float, ...]
    concurrency: int
    tenant_concurrency: int  # attempts at once of one tenant's endpoints (all processes together)
    poll_seconds: float

    @property
    def lease_seconds(self) -> float:
        """How long a claimed delivery belongs to its worker before another may take it over."""
        return self.timeout_seconds + 5.0

    @classmethod
    def from_env(cls) -> "Settings":
        """Settings from `DATABASE_URL`, `NATS_URL` and `WGS_WEBHOOKS_*`."""
        concurrency = env_int("WGS_WEBHOOKS_CONCURRENCY", 32)
        settings = cls(
            database_url=env_str("DATABASE_URL"),
            nats_url=env_str("NATS_URL", "nats://127.0.0.1:4222"),
            allow_private=allow_private_from_env(),
            timeout_seconds=env_float("WGS_WEBHOOKS_TIMEOUT_SECONDS", 10.0),
            schedule=parse_schedule(env_str("WGS_WEBHOOKS_SCHEDULE", DEFAULT_SCHEDULE)),
            concurrency=concurrency,
            tenant_concurrency=env_int("WGS_WEBHOOKS_TENANT_CONCURRENCY", max(1, concurrency * 3 // 4)),
            poll_seconds=env_float("WGS_WEBHOOKS_POLL_SECONDS", 0.1),
        )
        if settings.timeout_seconds <= 0 or settings.concurrency < 1 or settings.poll_seconds <= 0:
            raise SettingsError("WGS_WEBHOOKS_TIMEOUT_SECONDS, _CONCURRENCY and _POLL_SECONDS must be positive")
        if not 1 <= settings.tenant_concurrency <= settings.concurrency:
            raise SettingsError(
                f"WGS_WEBHOOKS_TENANT_CONCURRENCY must be from 1 to WGS_WEBHOOKS_CONCURRENCY ({settings.concurrency}),"
                f" got {settings.tenant_concurrency}"
            )
        return settings
