"""The webhooks service's settings from the environment: the per-tenant share of the worker slots."""

import pytest
from wgs_kit.env import SettingsError
from wgs_webhooks.config import Settings


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://localhost/wgs")
    for name in ("WGS_WEBHOOKS_CONCURRENCY", "WGS_WEBHOOKS_TENANT_CONCURRENCY"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("concurrency", "tenant"), [(None, 24), ("32", 24), ("10", 7), ("3", 2), ("1", 1)])
def test_a_tenant_gets_three_quarters_of_the_slots_by_default_and_at_least_one(
    monkeypatch: pytest.MonkeyPatch, concurrency: str | None, tenant: int
) -> None:
    if concurrency is not None:
        monkeypatch.setenv("WGS_WEBHOOKS_CONCURRENCY", concurrency)
    settings = Settings.from_env()
    assert settings.tenant_concurrency == tenant <= settings.concurrency


@pytest.mark.parametrize("tenant", ["1", "3", "4"])
def test_a_tenant_share_from_one_to_every_slot_is_taken(monkeypatch: pytest.MonkeyPatch, tenant: str) -> None:
    monkeypatch.setenv("WGS_WEBHOOKS_CONCURRENCY", "4")
    monkeypatch.setenv("WGS_WEBHOOKS_TENANT_CONCURRENCY", tenant)
    assert Settings.from_env().tenant_concurrency == int(tenant)


@pytest.mark.parametrize("tenant", ["0", "-1", "5", "two"])
def test_a_tenant_share_outside_one_to_every_slot_is_refused(monkeypatch: pytest.MonkeyPatch, tenant: str) -> None:
    monkeypatch.setenv("WGS_WEBHOOKS_CONCURRENCY", "4")
    monkeypatch.setenv("WGS_WEBHOOKS_TENANT_CONCURRENCY", tenant)
    with pytest.raises(SettingsError, match="WGS_WEBHOOKS_TENANT_CONCURRENCY"):
        Settings.from_env()
