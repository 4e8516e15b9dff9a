"""Riding out an outage while handling JetStream messages, and telling an outage from a bug in the logs.

A message whose handler fails because a dependency is down (PostgreSQL restarting, say) is not at
fault: nacked, each redelivery would count toward its `max_deliver`, and an outage longer than the
redelivery backoff (about a minute for 8 deliveries) would dead-letter every message handled
meanwhile. So the messages are held instead: kept in progress (`+WPI`, so the server neither
redelivers them nor counts a delivery) while the handler is tried again with growing pauses,
until it succeeds or fails for another reason, which takes the usual path (retry, dead letter).
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

log = logging.getLogger(__name__)
T = TypeVar("T")
FIRST_PAUSE: Final = 0.5
MAX_PAUSE: Final = 5.0  # well below every consumer's ack wait (30 s and more): the hold never lapses
# What a NATS call raises while the server is restarting or unreachable, or the service asked is down.
NATS_OUTAGES: Final = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.NoRespondersError,
    nats.errors.TimeoutError,
    nats.js.errors.ServiceUnavailableError,
    TimeoutError,
)


def log_failure(
    logger: logging.Logger,
    exc: Exception,
    what: str,
    *args: object,
    outages: tuple[type[BaseException], ...] = NATS_OUTAGES,
) -> None:
    """Log a failed round of a background loop (`what % args`, "failed" appended).

    An outage of what the loop uses (`outages`: NATS unreachable by default; a loop that uses
    PostgreSQL names its outages too) is one warning line: it passes, the loop tries again, and
    its traceback tells nothing. Anything else is an error with its traceback.
    """
    if isinstance(exc, outages):
        logger.warning(what + " failed, a dependency is unavailable: %r", *args, exc)
    else:
        logger.error(what + " failed", *args, exc_info=exc)


async def through_outages(
    attempt: Callable[[], Awaitable[T]],
    msgs: Sequence[Msg],
    *,
    outages: tuple[type[BaseException], ...],
    what: str,
) -> T:
    """`attempt()`, tried again while it fails with one of `outages`, `msgs` held meanwhile."""
    pause = FIRST_PAUSE
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if not isinstance(exc, outages):
                raise
            log.warning("%s: %r; holding %d message(s), trying again in %.1f s", what, exc, len(msgs), pause)
        for msg in msgs:
            await msg.in_progress()
        await asyncio.sleep(pause)
        pause = min(MAX_PAUSE, pause * 2)
