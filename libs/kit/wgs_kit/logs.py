"""Logging with the trace id of the message being handled printed on every line."""

import logging
import os
import random
from contextvars import ContextVar

from wgs_kit.outages import NATS_OUTAGES

trace_id_var: ContextVar[str] = ContextVar("trace_id", default="-")


def new_trace_id() -> str:
    """A fresh trace id: 64 random bits in hex (unique enough to follow a request; not a secret,
    so no system call for entropy on every request)."""
    return f"{random.getrandbits(64):016x}"


class TraceIdFilter(logging.Filter):
    """Adds `trace_id` from the context to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = trace_id_var.get()
        return True


class LibraryOutageFilter(logging.Filter):
    """Makes what FastStream and asyncpg log about an outage one warning line, not a traceback.

    An exception among `outages` (NATS or PostgreSQL unreachable, say) in a record of theirs (a
    FastStream handler that failed on it, asyncpg's pool failing to reconnect) keeps the record's
    first line, marked as an outage, at warning level: it passes, and is retried. Any other error
    keeps its level and traceback; records of other loggers are left alone.
    """

    def __init__(self, outages: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.outages = outages

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or not record.name.startswith(LIBRARIES):
            return True
        if isinstance(record.exc_info[1], self.outages):
            first_line = record.getMessage().splitlines()[0]
            as_one_warning(record, f"{first_line} (a dependency is unavailable: {record.exc_info[1]!r})")
        return True


LIBRARIES = ("faststream", "asyncpg")


def as_one_warning(record: logging.LogRecord, message: str) -> None:
    """Rewrite `record` as a warning reading `message`, without its traceback."""
    record.levelno, record.levelname = logging.WARNING, "WARNING"
    record.msg, record.args = message, ()
    record.exc_info, record.exc_text = None, None


def configure_logging(service: str, *, outages: tuple[type[BaseException], ...] = NATS_OUTAGES) -> None:
    """Log to stderr as `time level service trace=... logger: message`, level from WGS_LOG_LEVEL.

    FastStream's records go through the same handler (it installs its own, colored one, which
    is removed). What FastStream and asyncpg log about one of `outages` (those of the service's
    dependencies: NATS by default) is one warning line (`LibraryOutageFilter`).
    """
    handler = logging.StreamHandler()
    handler.addFilter(TraceIdFilter())
    handler.addFilter(LibraryOutageFilter(outages))
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s %(levelname)s {service}[{os.getpid()}] trace=%(trace_id)s %(name)s: %(message)s"
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("WGS_LOG_LEVEL", "INFO").upper())
    faststream = logging.getLogger("faststream")
    faststream.handlers.clear()
    faststream.propagate = True
    # FastStream's own supervisor chatter ("callback ... is being executed") stays out of INFO logs.
    faststream.setLevel(logging.WARNING)
