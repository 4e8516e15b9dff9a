"""A plain nats-py connection (`wgs_kit.messaging.connect_nats`) reports a NATS restart in a few
warning lines, not an error with a traceback per reconnect attempt, and is back after it."""

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from wgs_devstack.nats import EmbeddedNats
from wgs_kit.messaging import ConnectionReport, connect_nats
from wgs_kit.waiting import wait_until

NAME = "wgs-test-connection"


def logged(caplog: pytest.LogCaptureFixture, text: str) -> int:
    """How many records so far contain `text`."""
    return sum(text in record.getMessage() for record in caplog.records)


def seen(caplog: pytest.LogCaptureFixture, text: str) -> Callable[[], Awaitable[bool]]:
    """A probe for `wait_until`: has a record containing `text` been logged?"""

    async def probe() -> bool:
        return logged(caplog, text) > 0

    return probe


async def test_a_nats_restart_is_a_few_warnings_and_the_connection_comes_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    await server.start()
    nc = await connect_nats(server.url, NAME)
    try:
        with caplog.at_level(logging.INFO):
            await server.stop()
            await wait_until(seen(caplog, "ConnectionRefusedError"), 30, what="a failed reconnect attempt")
            await server.start()
            await wait_until(seen(caplog, f"{NAME}: reconnected to NATS"), 30, what="the connection back")
        assert logged(caplog, f"{NAME}: disconnected from NATS; reconnecting") == 1
        assert logged(caplog, "ConnectionRefusedError") == 1  # however many attempts failed
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        assert all(r.exc_info is None for r in caplog.records if r.name.startswith("nats")), caplog.text
        await nc.publish("wgs.test.after-restart", b"x")
        await nc.flush(timeout=5)
    finally:
        await nc.close()
        await server.stop()


async def test_the_same_error_again_is_not_logged_again_until_reconnected(caplog: pytest.LogCaptureFixture) -> None:
    report = ConnectionReport(NAME)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            await report.error(ConnectionRefusedError(111, "Connection refused"))
        await report.error(OSError("unreachable"))
        await report.disconnected()
        await report.disconnected()
        await report.reconnected()
        await report.error(ConnectionRefusedError(111, "Connection refused"))
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING", "WARNING", "INFO", "WARNING"]
    assert logged(caplog, "Connection refused") == 2
