"""Logging with the trace id of the message being handled printed on every line."""

import logging
import os
import random
from contextvars import ContextVar

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


def configure_logging(service: str) -> None:
    """Log to stderr as `time level service trace=... logger: message`, level from WGS_LOG_LEVEL."""
    handler = logging.StreamHandler()
    handler.addFilter(TraceIdFilter())
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s %(levelname)s {service}[{os.getpid()}] trace=%(trace_id)s %(name)s: %(message)s"
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("WGS_LOG_LEVEL", "INFO").upper())
    # FastStream's own supervisor chatter ("callback ... is being executed") stays out of INFO logs.
    logging.getLogger("faststream").setLevel(logging.WARNING)
