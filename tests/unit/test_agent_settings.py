"""The node agent's bounded settings: read from the environment, defaulted, refused out of range at start."""

from collections.abc import Callable

import pytest
from wgs_kit.env import SettingsError
from wgs_node_agent.config import EVENT_LINGER_SECONDS, event_linger_seconds, sandbox_retry_seconds
from wgs_node_agent.network import ROUTE_RETRY_SECONDS

SETTINGS = [
    # name, reader, default, a value in range, values out of range or malformed
    ("WGS_EVENT_LINGER_SECONDS", event_linger_seconds, EVENT_LINGER_SECONDS, 0.0, ["-0.1", "1.5", "soon"]),
    ("WGS_SANDBOX_RETRY_SECONDS", sandbox_retry_seconds, ROUTE_RETRY_SECONDS, 1.5, ["-1", "61", "later"]),
]


@pytest.mark.parametrize(("name", "read", "default", "valid", "invalid"), SETTINGS, ids=[s[0] for s in SETTINGS])
def test_a_setting_is_read_defaulted_and_refused_out_of_range(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    read: Callable[[], float],
    default: float,
    valid: float,
    invalid: list[str],
) -> None:
    monkeypatch.setenv(name, str(valid))
    assert read() == valid
    monkeypatch.delenv(name)
    assert read() == default
    for raw in invalid:
        monkeypatch.setenv(name, raw)
        with pytest.raises(SettingsError, match=name):
            read()
