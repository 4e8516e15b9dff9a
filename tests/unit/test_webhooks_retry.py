"""Retry rules: which answers are retried, the schedule with jitter, Retry-After, and the final verdict."""

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from wgs_kit.env import SettingsError
from wgs_webhooks.config import DEFAULT_SCHEDULE, parse_schedule
from wgs_webhooks.dispatcher import outcome_of
from wgs_webhooks.retry import RetryPolicy, Verdict, classify, jittered, parse_retry_after
from wgs_webhooks.sender import Answer

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


def test_jitter_stays_within_twenty_percent_and_varies():
    rng = random.Random(7)
    values = [jittered(100.0, rng) for _ in range(1000)]
    assert min(values) >= 80.0
    assert max(values) <= 120.0
    assert max(values) - min(values) > 30.0


def test_schedule_then_dead():
    for tries, base in ((1, 1.0), (2, 10.0), (3, 100.0)):
        delay = POLICY.next_delay(tries, 500, None)
        assert delay is not None
        assert base * 0.8 <= delay <= base * 1.2
    assert POLICY.next_delay(4, 500, None) is None
    assert POLICY.next_delay(1, 400, None) is None
    assert POLICY.next_delay(1, 200, None) is None
    assert RetryPolicy(()).next_delay(1, 500, None) is None


def test_retry_after_is_honoured_on_429_and_503_and_capped():
    assert POLICY.next_delay(1, 429, 50.0) == 50.0
    assert POLICY.next_delay(1, 503, 1000.0) == 100.0  # capped at the longest delay of the schedule
    late = POLICY.next_delay(1, 500, 50.0)
    assert late is not None
    assert late <= 1.2  # only 429 and 503 ask for a delay
    early = POLICY.next_delay(2, 429, 0.0)
    assert early is not None
    assert early >= 8.0  # never earlier than the schedule


def test_parse_retry_after():
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_outcome_of_an_attempt():
    def answer(status_code, **kw):
        return Answer(status_code=status_code, error=None, latency_ms=12, **kw)

    delivered = outcome_of(answer(200), 1, POLICY)
    assert (delivered.status, delivered.status_code, delivered.latency_ms) == ("delivered", 200, 12)
    retry = outcome_of(answer(503), 1, POLICY)
    assert retry.status == "pending"
    assert 0.8 <= retry.delay_seconds <= 1.2
    assert outcome_of(answer(503), 4, POLICY).status == "dead"
    assert outcome_of(answer(410), 1, POLICY).status == "dead"
    refused = Answer(status_code=None, error="refused: private", latency_ms=1, refused=True)
    assert outcome_of(refused, 1, POLICY).status == "dead"
    timeout = Answer(status_code=None, error="timeout after 10s", latency_ms=10000)
    assert outcome_of(timeout, 1, POLICY).status == "pending"
