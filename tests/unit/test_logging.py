"""The services' log format: FastStream's records go through it too; what FastStream and asyncpg
log about an outage is one warning line."""

import io
import logging
from collections.abc import Callable, Iterator

import asyncpg
import faststream.nats  # noqa: F401  (installs FastStream's own "faststream" logger, as in a service)
import pytest
from wgs_db.engine import NATS_AND_DATABASE_OUTAGES
from wgs_kit.logs import configure_logging

LIBRARY_REPORT = "Task-9 raised an exception, retrying..."


@pytest.fixture
def service_logging() -> Iterator[io.StringIO]:
    """What a service logs after `configure_logging`; the loggers it changes are put back after."""
    root, faststream = logging.getLogger(), logging.getLogger("faststream")
    saved = (root.handlers[:], root.level, faststream.handlers[:], faststream.propagate, faststream.level)
    configure_logging("svc", outages=NATS_AND_DATABASE_OUTAGES)
    written = io.StringIO()
    [handler] = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(written)
    yield written
    root.handlers[:], root.level, faststream.handlers[:], faststream.propagate, faststream.level = saved


def raised(work: Callable[[], None]) -> BaseException:
    """What `work` raised, with its traceback."""
    try:
        work()
    except BaseException as exc:
        return exc
    raise AssertionError("nothing raised")


def raising(exc: BaseException) -> Callable[[], None]:
    """Some call failing with `exc`."""

    def call() -> None:
        raise exc

    return call


def test_faststream_records_use_the_service_format(service_logging: io.StringIO) -> None:
    logging.getLogger("faststream.wgs-node-agent-n1").warning("subscriber restarted")
    err = service_logging.getvalue()
    assert err.count("\n") == 1
    assert " WARNING svc[" in err
    assert "faststream.wgs-node-agent-n1: subscriber restarted" in err
    assert "\x1b[" not in err  # FastStream's colored handler is gone


@pytest.mark.parametrize(
    ("logger", "message", "exc"),
    [
        (
            "faststream.wgs-scheduler",
            "ConnectionRefusedError: [Errno 111] Connection refused",
            ConnectionRefusedError(),
        ),
        ("asyncpg.pool", "Failed to restore the pool connection floor; retrying", asyncpg.CannotConnectNowError()),
        ("faststream.wgs-api", "nats: timeout\nmore lines", TimeoutError()),
    ],
    ids=["a FastStream handler on PostgreSQL down", "asyncpg reconnecting its pool", "a NATS timeout"],
)
def test_what_the_libraries_log_about_an_outage_is_one_warning(
    service_logging: io.StringIO, logger: str, message: str, exc: Exception
) -> None:
    logging.getLogger(logger).error(message, exc_info=raised(raising(exc)))
    err = service_logging.getvalue()
    assert err.count("\n") == 1
    assert " WARNING svc[" in err
    assert err.rstrip().endswith(f"{message.splitlines()[0]} (a dependency is unavailable: {exc!r})")


@pytest.mark.parametrize(
    ("logger", "work"),
    [
        ("faststream.wgs-scheduler", raising(ValueError("bad"))),
        ("asyncpg.pool", raising(ValueError("bad"))),
        ("wgs_node_agent.session", raising(TimeoutError())),
        ("wgs_node_agent.session", raising(ConnectionRefusedError())),
    ],
    ids=["another error in FastStream", "another error in asyncpg", "our own logger", "our own logger, an outage"],
)
def test_other_errors_keep_their_level_and_traceback(
    service_logging: io.StringIO, logger: str, work: Callable[[], None]
) -> None:
    logging.getLogger(logger).error(LIBRARY_REPORT, exc_info=raised(work))
    err = service_logging.getvalue()
    assert " ERROR svc[" in err
    assert LIBRARY_REPORT in err
    assert "Traceback" in err
