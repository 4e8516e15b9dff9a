"""What an attempt's outcome means for its delivery: delivered, retry later (when), or dead."""

import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum

JITTER = 0.2
RETRYABLE_4XX = frozenset({408, 409, 425, 429})
RETRY_AFTER_STATUSES = frozenset({429, 503})
DELTA_SECONDS = re.compile(r"[0-9]+")


class Verdict(StrEnum):
    """What to do with a delivery after an attempt."""

    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"


def classify(status_code: int | None) -> Verdict:
    """2xx delivered; no answer (network error, timeout), 5xx, 408/409/425/429 and other non-4xx retried;
    any other 4xx is dead at once."""
    if status_code is None:
        return Verdict.RETRY
    if 200 <= status_code < 300:
        return Verdict.DELIVERED
    if 400 <= status_code < 500 and status_code not in RETRYABLE_4XX:
        return Verdict.DEAD
    return Verdict.RETRY


def jittered(delay: float, rng: random.Random | None = None) -> float:
    """`delay` lengthened by up to 20% so that retries of many deliveries do not arrive together;
    never shortened, so the schedule always spans at least its total."""
    return delay * (rng or random).uniform(1, 1 + JITTER)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds asked by a `Retry-After` header (ASCII delta-seconds or HTTP date); None if absent or
    unreadable (never raises: a malformed header is ignored)."""
    if value is None:
        return None
    value = value.strip()
    if DELTA_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """The retry schedule: after failed try n (1-based, counted since the last redelivery) wait `schedule[n-1]`,
    for at most the schedule's total (the retry period) since the delivery was created or redelivered."""

    schedule: tuple[float, ...]

    def next_delay(
        self, tries: int, status_code: int | None, retry_after: float | None, *, waited: float
    ) -> float | None:
        """Seconds until the next try after `tries` failed ones, or None when the delivery is dead: the answer
        is not retried, the schedule is exhausted, or the retry period was over when this try began, `waited`
        seconds into it (a delivery that waited that long behind its endpoint's queue gets one try).

        A `Retry-After` on 429/503 is honoured (never earlier than asked), capped at the schedule's longest delay.
        """
        if classify(status_code) is not Verdict.RETRY or tries > len(self.schedule) or waited >= sum(self.schedule):
            return None
        delay = jittered(self.schedule[tries - 1])
        if retry_after is not None and status_code in RETRY_AFTER_STATUSES:
            delay = max(delay, min(retry_after, max(self.schedule)))
        return delay
