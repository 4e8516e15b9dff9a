"""A background loop's failed round: an outage (NATS unreachable, or another the loop names) is one warning
line; anything else an error with its traceback."""

import logging

import asyncpg
import nats.errors
import nats.js.errors
import pytest
from wgs_db.engine import DATABASE_OUTAGES
from wgs_kit.outages import log_failure

LOGGER = logging.getLogger("test.failures")


@pytest.mark.parametrize(
    "exc",
    [
        nats.errors.ConnectionClosedError(),
        nats.errors.NoServersError(),
        nats.errors.TimeoutError(),
        nats.errors.NoRespondersError(),
        nats.js.errors.ServiceUnavailableError(),
        TimeoutError(),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_nats_unreachable_is_one_warning_line(caplog: pytest.LogCaptureFixture, exc: Exception) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER.name):
        log_failure(LOGGER, exc, "event pump of instance %d", 7)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == f"event pump of instance 7 failed, a dependency is unavailable: {exc!r}"
    assert record.exc_info is None


def test_a_loop_names_the_outages_of_its_other_dependencies(caplog: pytest.LogCaptureFixture) -> None:
    down = asyncpg.CannotConnectNowError("the database system is shutting down")
    with caplog.at_level(logging.INFO, logger=LOGGER.name):
        log_failure(LOGGER, down, "claiming deliveries", outages=DATABASE_OUTAGES)
        log_failure(LOGGER, down, "heartbeat")  # NATS only: PostgreSQL down is not what this loop expects
    levels = [(r.levelno, r.exc_info is not None) for r in caplog.records]
    assert levels == [(logging.WARNING, False), (logging.ERROR, True)]


def test_anything_else_is_an_error_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    bug = KeyError("cursor")
    try:
        raise bug
    except KeyError as exc:
        with caplog.at_level(logging.INFO, logger=LOGGER.name):
            log_failure(LOGGER, exc, "drain %s", "mail-491")
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "drain mail-491 failed"
    assert record.exc_info is not None
    assert record.exc_info[1] is bug
