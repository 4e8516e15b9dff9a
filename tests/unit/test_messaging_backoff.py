"""Redelivery backoff, contract streams as nats-py configs, and wait_until."""

import pytest
from nats.js.api import RetentionPolicy, StreamConfig
from wgs_contracts.streams import ALL_STREAMS, StreamSpec
from wgs_kit.messaging import redelivery_delay, stream_config
from wgs_kit.waiting import DeadlineExceeded, wait_until

NS = 1_000_000_000


@pytest.mark.parametrize(
    ("attempt", "delay"),
    [(0, 0.5), (1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 16.0), (7, 30.0), (8, 30.0), (50, 30.0)],
)
def test_redelivery_delay(attempt, delay):
    assert redelivery_delay(attempt) == delay
    assert isinstance(redelivery_delay(attempt), float)


def test_redelivery_delay_never_decreases_and_is_capped():
    delays = [redelivery_delay(n) for n in range(1, 40)]
    assert delays == sorted(delays)
    assert max(delays) == 30.0


@pytest.mark.parametrize("spec", ALL_STREAMS, ids=lambda s: s.name)
def test_stream_config_maps_spec(spec: StreamSpec):
    config = stream_config(spec)
    assert isinstance(config, StreamConfig)
    assert config.name == spec.name
    assert config.subjects == list(spec.subjects)
    assert config.description == spec.description
    assert config.max_age == spec.max_age_seconds
    assert config.duplicate_window == spec.duplicate_window_seconds
    assert config.retention == RetentionPolicy(spec.retention)
    # nats-py takes seconds and sends nanoseconds: the units must be seconds here.
    wire = config.as_dict()
    assert wire["max_age"] == int(spec.max_age_seconds * NS)
    assert wire["duplicate_window"] == int(spec.duplicate_window_seconds * NS)


def test_stream_config_custom_values():
    spec = StreamSpec(
        name="X",
        subjects=("a.>", "b.*"),
        description="d",
        max_age_seconds=60.0,
        duplicate_window_seconds=5.0,
        retention="workqueue",
    )
    config = stream_config(spec)
    assert config.subjects == ["a.>", "b.*"]
    assert config.max_age == 60.0
    assert config.duplicate_window == 5.0
    assert config.retention == RetentionPolicy.WORK_QUEUE


async def test_wait_until_returns_truthy_value():
    answers = iter([None, 0, "", {"ready": True}])
    calls = 0

    async def probe():
        nonlocal calls
        calls += 1
        return next(answers)

    assert await wait_until(probe, timeout=5, interval=0) == {"ready": True}
    assert calls == 4


async def test_wait_until_immediate():
    async def probe():
        return 42

    assert await wait_until(probe, timeout=0) == 42


async def test_wait_until_deadline():
    calls = 0

    async def probe():
        nonlocal calls
        calls += 1
        return False

    with pytest.raises(DeadlineExceeded, match="node ready"):
        await wait_until(probe, timeout=0.05, interval=0.001, what="node ready")
    assert calls >= 2


def test_deadline_exceeded_is_a_timeout():
    assert issubclass(DeadlineExceeded, TimeoutError)


def test_redelivery_delay_never_overflows():
    assert redelivery_delay(2000) == 30.0


def test_newer_schema_versions_are_refused():
    from wgs_contracts.messages import CreateInstance
    from wgs_kit.messaging import UnsupportedSchemaVersion, decode

    body = b'{"type":"instance.create","instance_id":1,"tenant_id":2,"schema_version":2}'
    with pytest.raises(UnsupportedSchemaVersion):
        decode(body, CreateInstance)
