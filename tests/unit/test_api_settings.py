"""The API's settings from the environment."""

import pytest
from wgs_api.config import KEEP_ALIVE_SECONDS, Settings


def test_idle_connections_outlive_a_load_balancers_idle_timeout_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://localhost/wgs")
    monkeypatch.delenv("WGS_API_KEEP_ALIVE_SECONDS", raising=False)
    assert Settings.from_env().keep_alive_seconds == KEEP_ALIVE_SECONDS > 60
    monkeypatch.setenv("WGS_API_KEEP_ALIVE_SECONDS", "5")
    assert Settings.from_env().keep_alive_seconds == 5
