"""Retry rules: which answers are retried, the schedule with jitter, Retry-After, and the final verdict."""

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from wgs_kit.env import SettingsError
from wgs_webhooks import retry
from wgs_webhooks.config import DEFAULT_SCHEDULE, parse_schedule
from wgs_webhooks.dispatcher import outcome_of
from wgs_webhooks.retry import RetryPolicy, Verdict, classify, jittered, parse_retry_after
from wgs_webhooks.sender import Answer, Sender

from tests.support.webhooks import Behaviour, Receiver

POLICY = RetryPolicy((1.0, 10.0, 100.0))


@pytest.mark.parametrize(
    ("status_code", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (299, Verdict.DELIVERED),
        (None, Verdict.RETRY),
        (500, Verdict.RETRY),
        (502, Verdict.RETRY),
        (503, Verdict.RETRY),
        (408, Verdict.RETRY),
        (409, Verdict.RETRY),
        (425, Verdict.RETRY),
        (429, Verdict.RETRY),
        (301, Verdict.RETRY),
        (400, Verdict.DEAD),
        (401, Verdict.DEAD),
        (404, Verdict.DEAD),
        (410, Verdict.DEAD),
        (413, Verdict.DEAD),
    ],
)
def test_classify(status_code, verdict):
    assert classify(status_code) is verdict


def test_default_schedule_spans_more_than_a_day():
    delays = parse_schedule(DEFAULT_SCHEDULE)
    assert delays == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert sum(delays) > 24 * 3600


@pytest.mark.parametrize("raw", ["5,x", "-1,2", "1;2"])
def test_bad_schedule_is_a_settings_error(raw):
    with pytest.raises(SettingsError):
        parse_schedule(raw)


def test_jitter_only_lengthens_by_up_to_twenty_percent_and_varies():
    rng = random.Random(7)
    values = [jittered(100.0, rng) for _ in range(1000)]
    assert min(values) >= 100.0
    assert max(values) <= 120.0
    assert max(values) - min(values) > 15.0


class LowestDraw:
    """A random source that always draws the lowest value it may: the shortest jitter."""

    def uniform(self, a: float, b: float) -> float:
        return a


def test_default_schedule_retries_for_at_least_a_day_whatever_the_jitter(monkeypatch):
    """Every retry delay drawn, for many seeds and for the lowest draw: 8 attempts over at least 24 hours."""
    policy = RetryPolicy(parse_schedule(DEFAULT_SCHEDULE))
    for source in [*(random.Random(seed) for seed in range(2000)), LowestDraw()]:
        monkeypatch.setattr(retry, "random", source)
        delays = [policy.next_delay(tries, 503, None, waited=0.0) for tries in range(1, 8)]
        assert sum(d for d in delays if d is not None) >= 24 * 3600
        assert None not in delays


def test_schedule_then_dead():
    for tries, base in ((1, 1.0), (2, 10.0), (3, 100.0)):
        delay = POLICY.next_delay(tries, 500, None, waited=0.0)
        assert delay is not None
        assert base <= delay <= base * 1.2
    assert POLICY.next_delay(4, 500, None, waited=0.0) is None
    assert POLICY.next_delay(1, 400, None, waited=0.0) is None
    assert POLICY.next_delay(1, 200, None, waited=0.0) is None
    assert RetryPolicy(()).next_delay(1, 500, None, waited=0.0) is None


def test_the_retry_period_counts_from_the_delivery_s_creation():
    """A delivery whose try began once the schedule's total (111 s) had passed since it was created (or
    redelivered), say after waiting behind its endpoint's queue, gets that one try: it is dead after it."""
    assert POLICY.next_delay(1, 500, None, waited=110.9) is not None
    assert POLICY.next_delay(1, 500, None, waited=111.0) is None
    assert POLICY.next_delay(2, 429, 5.0, waited=500.0) is None


def test_retry_after_is_honoured_on_429_and_503_and_capped():
    assert POLICY.next_delay(1, 429, 50.0, waited=0.0) == 50.0
    assert POLICY.next_delay(1, 503, 1000.0, waited=0.0) == 100.0  # capped at the longest delay of the schedule
    late = POLICY.next_delay(1, 500, 50.0, waited=0.0)
    assert late is not None
    assert late <= 1.2  # only 429 and 503 ask for a delay
    early = POLICY.next_delay(2, 429, 0.0, waited=0.0)
    assert early is not None
    assert early >= 10.0  # never earlier than the schedule


def test_parse_retry_after():
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after(" 7 ") == 7.0


@pytest.mark.parametrize("value", ["²", "1²", "١٢", "\uff11\uff12", "-5", "1.5", "Mon, 99 Foo 2026 99:99:99 GMT"])
def test_a_malformed_retry_after_is_ignored(value):
    assert parse_retry_after(value) is None


async def test_a_malformed_retry_after_leaves_the_answer_as_it_was(receiver: Receiver):
    """The header is read from every answer: one it cannot read must not turn a 200 into an error."""
    receiver.behaviours["odd"] = Behaviour(statuses=[200, 503], retry_after="²")
    sender = Sender(timeout_seconds=2, allow_private=True, max_connections=2)
    try:
        ok, unavailable = [await sender.post(receiver.url("odd"), {}, b"{}") for _ in range(2)]
    finally:
        await sender.close()
    assert (ok.status_code, ok.error, ok.retry_after) == (200, None, None)
    assert (unavailable.status_code, unavailable.error, unavailable.retry_after) == (503, "HTTP 503: nope", None)
    assert outcome_of(ok, 1, POLICY, waited=0.0).status == "delivered"


def test_outcome_of_an_attempt():
    def answer(status_code, **kw):
        return Answer(status_code=status_code, error=None, latency_ms=12, **kw)

    delivered = outcome_of(answer(200), 1, POLICY, waited=0.0)
    assert (delivered.status, delivered.status_code, delivered.latency_ms) == ("delivered", 200, 12)
    assert outcome_of(answer(200), 9, POLICY, waited=1e6).status == "delivered"
    again = outcome_of(answer(503), 1, POLICY, waited=0.0)
    assert again.status == "pending"
    assert 1.0 <= again.delay_seconds <= 1.2
    assert outcome_of(answer(503), 4, POLICY, waited=0.0).status == "dead"
    assert outcome_of(answer(503), 1, POLICY, waited=111.0).status == "dead"
    assert outcome_of(answer(410), 1, POLICY, waited=0.0).status == "dead"
    refused = Answer(status_code=None, error="refused: private", latency_ms=1, refused=True)
    assert outcome_of(refused, 1, POLICY, waited=0.0).status == "dead"
    timeout = Answer(status_code=None, error="timeout after 10s", latency_ms=10000)
    assert outcome_of(timeout, 1, POLICY, waited=0.0).status == "pending"
