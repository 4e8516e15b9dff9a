"""Durable consumers (`wgs_kit.batched`) and publishing (`wgs_kit.messaging`) on the real NATS
server: a failed handler is redelivered with backoff and succeeds once, an outage holds a message
instead of spending its deliveries, a handler that keeps failing (or a body that cannot be decoded)
is parked on the dead-letter stream after `max_deliver` attempts, a concurrent consumer handles a
batch's messages at once, and `Nats-Msg-Id` deduplicates publishes.

Each test gets its own JetStream stream (`TEST_GUARD_<token>`), deleted at the end, and purges only
its own dead-letter subject."""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import MaxPayloadError
from nats.js.api import ConsumerInfo, RawStreamMsg
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NotFoundError
from wgs_contracts import headers, subjects
from wgs_contracts.messages import CreateInstance
from wgs_contracts.streams import DEAD_LETTERS, StreamSpec
from wgs_kit.batched import BatchedPullConsumer, consumer_config, differs, ensure_pull_consumer
from wgs_kit.logs import trace_id_var
from wgs_kit.messaging import (
    FAST_BATCH_MAX,
    decode,
    make_broker,
    publish_durable,
    publish_durable_all,
    stream_config,
)
from wgs_kit.waiting import wait_until

MAX_DELIVER = 3
DEADLINE = 15.0
MESSAGE = CreateInstance(instance_id=7, tenant_id=3)

Work = Callable[[Msg], Awaitable[None]]


@dataclass
class GuardStream:
    """A test-only stream, its JetStream context and what the test left on the dead-letter stream."""

    spec: StreamSpec
    token: str
    url: str
    nc: NatsClient
    js: JetStreamContext
    dead_letter_subjects: list[str] = field(default_factory=list)

    def subject(self, leaf: str) -> str:
        return f"test.guard.{self.token}.{leaf}"

    def consumer(self, leaf: str) -> str:
        name = f"test-guard-{self.token}-{leaf}"
        self.dead_letter_subjects.append(subjects.dead_letter(name))
        return name

    async def consumer_info(self, durable: str) -> ConsumerInfo:
        return await self.js.consumer_info(self.spec.name, durable)

    async def messages(self) -> int:
        info = await self.js.stream_info(self.spec.name)
        return info.state.messages

    async def dead_letter(self, consumer: str) -> RawStreamMsg | None:
        try:
            return await self.js.get_last_msg(DEAD_LETTERS.name, subjects.dead_letter(consumer))
        except NotFoundError:
            return None


@dataclass
class Attempts:
    """What a handler saw: the delivery count of each attempt, the trace ids, the successes."""

    delivered: list[int] = field(default_factory=list)
    traces: list[str] = field(default_factory=list)
    successes: int = 0


@asynccontextmanager
async def guard_stream(
    url: str, *, batches: bool = False, max_msg_size: int | None = None, server_batches: bool | None = None
) -> AsyncIterator[GuardStream]:
    """A test-only stream, deleted after: fast-ingest batches allowed or not (`server_batches`: what
    the server was told, when it differs from the spec), optionally a message size limit."""
    token = uuid.uuid4().hex[:12]
    spec = StreamSpec(
        name=f"TEST_GUARD_{token}",
        subjects=(f"test.guard.{token}.>",),
        description="test-only stream of test_durable_delivery",
        max_age_seconds=3600.0,
        allow_fast_batches=batches,
    )
    nc = await nats.connect(url)
    js = nc.jetstream()
    config = stream_config(spec)
    config.max_msg_size = max_msg_size
    config.allow_batched = batches if server_batches is None else server_batches
    await js.add_stream(config)
    stream = GuardStream(spec=spec, token=token, url=url, nc=nc, js=js)
    try:
        yield stream
    finally:
        await js.delete_stream(spec.name)
        for subject in stream.dead_letter_subjects:
            await js.purge_stream(DEAD_LETTERS.name, subject=subject)
        await nc.close()


@pytest.fixture
async def guard(migrated: dict[str, str]) -> AsyncIterator[GuardStream]:
    async with guard_stream(migrated["NATS_URL"]) as stream:
        yield stream


@asynccontextmanager
async def consuming(
    stream: GuardStream, subject: str, durable: str, work: Work, *, outages: tuple[type[BaseException], ...] = ()
) -> AsyncIterator[None]:
    """A started durable consumer handling each message by `work`, concurrently, the way the
    scheduler and the node agents consume their commands."""

    async def handle(msgs: list[Msg]) -> None:
        for msg in msgs:
            await work(msg)

    consumer = BatchedPullConsumer(
        stream.js,
        handle,
        stream=stream.spec,
        durable=durable,
        filter_subjects=[subject],
        max_deliver=MAX_DELIVER,
        concurrent=True,
        outages=outages,
    )
    await consumer.start()
    try:
        yield
    finally:
        await consumer.stop()


async def publish(stream: GuardStream, subject: str, *, msg_id: str, trace: str) -> None:
    """`publish_durable` of a contract message under a known trace id."""
    broker = make_broker(stream.url, "test-publisher")
    await broker.start()
    token = trace_id_var.set(trace)
    try:
        await publish_durable(broker, subject, MESSAGE, msg_id=msg_id, stream=stream.spec)
    finally:
        trace_id_var.reset(token)
        await broker.stop()


async def settled(stream: GuardStream, durable: str) -> ConsumerInfo:
    """Consumer info once nothing is pending or awaiting an ack (so no delivery can follow)."""

    async def probe() -> ConsumerInfo | None:
        info = await stream.consumer_info(durable)
        return info if info.num_pending == 0 and info.num_ack_pending == 0 else None

    return await wait_until(probe, DEADLINE, what=f"consumer {durable} settled")


async def test_failed_first_attempt_is_redelivered_and_succeeds_once(guard: GuardStream) -> None:
    subject, durable = guard.subject("retry"), guard.consumer("retry")
    seen = Attempts()

    async def fail_once(msg: Msg) -> None:
        seen.delivered.append(msg.metadata.num_delivered)
        seen.traces.append(trace_id_var.get())
        if len(seen.delivered) == 1:
            raise RuntimeError("transient failure")
        assert decode(msg.data, CreateInstance) == MESSAGE
        seen.successes += 1

    async with consuming(guard, subject, durable, fail_once):
        await publish(guard, subject, msg_id=f"retry-{guard.token}", trace=f"trace-{guard.token}")

        async def succeeded() -> bool:
            return seen.successes > 0

        await wait_until(succeeded, DEADLINE, what="a successful attempt")

        info = await settled(guard, durable)
        assert info.delivered is not None
        assert info.delivered.stream_seq == 1
        assert info.delivered.consumer_seq == 2  # one message, delivered twice
        assert info.ack_floor is not None
        assert info.ack_floor.stream_seq == 1  # acked after the success
    assert seen.successes == 1
    assert seen.delivered == [1, 2]
    assert seen.traces == [f"trace-{guard.token}"] * 2  # handled under the message's trace id
    assert await guard.dead_letter(durable) is None


async def test_an_outage_holds_the_message_instead_of_spending_its_deliveries(guard: GuardStream) -> None:
    """A handler failing because a dependency is down (here: more times than `max_deliver`) is tried
    again while its message is held, as the scheduler handles commands: never redelivered, never
    dead-lettered."""
    subject, durable = guard.subject("outage"), guard.consumer("outage")
    seen = Attempts()

    async def down_for_a_while(msg: Msg) -> None:
        seen.delivered.append(msg.metadata.num_delivered)
        if len(seen.delivered) <= MAX_DELIVER:
            raise ConnectionRefusedError("the database is restarting")
        seen.successes += 1

    async with consuming(guard, subject, durable, down_for_a_while, outages=(ConnectionError,)):
        await publish(guard, subject, msg_id=f"outage-{guard.token}", trace=f"trace-{guard.token}")
        info = await settled(guard, durable)
        assert info.delivered is not None
        assert info.delivered.consumer_seq == 1  # delivered once, held through the failures
    assert seen.successes == 1
    assert seen.delivered == [1] * (MAX_DELIVER + 1)
    assert await guard.dead_letter(durable) is None


async def test_handler_that_always_fails_is_dead_lettered_after_max_deliver(guard: GuardStream) -> None:
    subject, durable = guard.subject("poison"), guard.consumer("poison")
    trace = f"trace-{guard.token}"
    seen = Attempts()

    async def always_fail(msg: Msg) -> None:
        seen.delivered.append(msg.metadata.num_delivered)
        raise RuntimeError(f"provider exploded {guard.token}")

    async with consuming(guard, subject, durable, always_fail):
        await publish(guard, subject, msg_id=f"poison-{guard.token}", trace=trace)
        dead = await wait_until(lambda: guard.dead_letter(durable), DEADLINE, what="a dead letter")

        assert dead.data == msgspec.json.encode(MESSAGE)
        dead_headers = dead.headers or {}
        assert f"provider exploded {guard.token}" in dead_headers[headers.DEAD_LETTER_REASON]
        assert "RuntimeError" in dead_headers[headers.DEAD_LETTER_REASON]
        assert dead_headers[headers.DEAD_LETTER_SUBJECT] == subject
        assert dead_headers[headers.TRACE_ID] == trace
        assert headers.MSG_ID not in dead_headers  # a second dead letter of the same id is not deduplicated

        info = await settled(guard, durable)
        assert info.delivered is not None
        assert info.delivered.consumer_seq == MAX_DELIVER
        assert info.ack_floor is not None
        assert info.ack_floor.stream_seq == 1  # parked, then acked: never redelivered again
    assert seen.delivered == [1, 2, 3]
    dead_letters = await guard.js.stream_info(DEAD_LETTERS.name, subjects_filter=subjects.dead_letter(durable))
    assert dead_letters.state.subjects == {subjects.dead_letter(durable): 1}


async def test_a_concurrent_consumer_handles_a_batchs_messages_at_once_each_on_its_own(guard: GuardStream) -> None:
    """The first command waits for the second to start (one container start does not wait for
    another); the second fails once and is retried by itself, the first handled once."""
    subject, durable = guard.subject("concurrent"), guard.consumer("concurrent")
    second_started = asyncio.Event()
    handled: list[tuple[str, int]] = []

    async def command(msg: Msg) -> None:
        name = (msg.headers or {}).get(headers.MSG_ID, "?")
        handled.append((name, msg.metadata.num_delivered))
        if name.startswith("first"):
            await asyncio.wait_for(second_started.wait(), DEADLINE)
            return
        second_started.set()
        if msg.metadata.num_delivered == 1:
            raise RuntimeError("transient failure")

    first, second = f"first-{guard.token}", f"second-{guard.token}"
    await publish(guard, subject, msg_id=first, trace="t1")
    await publish(guard, subject, msg_id=second, trace="t2")
    async with consuming(guard, subject, durable, command):
        info = await settled(guard, durable)
        assert info.ack_floor is not None
        assert info.ack_floor.stream_seq == 2
    assert sorted(handled) == [(first, 1), (second, 1), (second, 2)]
    assert await guard.dead_letter(durable) is None


async def test_a_stopped_consumer_starts_again_where_it_was(guard: GuardStream) -> None:
    """As the scheduler's command consumer does when it is elected again."""
    subject, durable = guard.subject("restart"), guard.consumer("restart")
    handled: list[str] = []

    async def command(msg: Msg) -> None:
        handled.append((msg.headers or {}).get(headers.MSG_ID, "?"))

    def handled_count(count: int) -> Callable[[], Awaitable[bool]]:
        async def reached() -> bool:
            return len(handled) >= count

        return reached

    consumer = BatchedPullConsumer(
        guard.js, lambda msgs: command(msgs[0]), stream=guard.spec, durable=durable, filter_subjects=[subject]
    )
    for round_ in range(2):
        await consumer.start()
        try:
            await publish(guard, subject, msg_id=f"{round_}-{guard.token}", trace="t")
            await wait_until(handled_count(round_ + 1), DEADLINE, what=f"round {round_} handled")
        finally:
            await consumer.stop()
    assert handled == [f"0-{guard.token}", f"1-{guard.token}"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        pytest.param(b"this is not json", "DecodeError", id="not-json"),
        pytest.param(
            b'{"type":"instance.create","schema_version":999,"instance_id":1,"tenant_id":1}',
            "UnsupportedSchemaVersion",
            id="newer-schema",
        ),
    ],
)
async def test_undecodable_body_is_dead_lettered(guard: GuardStream, body: bytes, error: str) -> None:
    subject, durable = guard.subject("malformed"), guard.consumer("malformed")
    seen = Attempts()

    async def decode_it(msg: Msg) -> None:
        seen.delivered.append(msg.metadata.num_delivered)
        decode(msg.data, CreateInstance)
        seen.successes += 1

    async with consuming(guard, subject, durable, decode_it):
        await guard.js.publish(subject, body, stream=guard.spec.name, headers={headers.TRACE_ID: guard.token})
        dead = await wait_until(lambda: guard.dead_letter(durable), DEADLINE, what="a dead letter")
        assert dead.data == body
        dead_headers = dead.headers or {}
        assert error in dead_headers[headers.DEAD_LETTER_REASON]
        assert dead_headers[headers.DEAD_LETTER_SUBJECT] == subject
        assert dead_headers[headers.TRACE_ID] == guard.token
        await settled(guard, durable)
    assert seen.successes == 0
    assert seen.delivered == [1, 2, 3]


async def test_publish_durable_deduplicates_by_msg_id(guard: GuardStream) -> None:
    subject = guard.subject("dedup")
    assert await guard.messages() == 0

    await publish(guard, subject, msg_id=f"same-{guard.token}", trace="t1")
    await publish(guard, subject, msg_id=f"same-{guard.token}", trace="t2")
    assert await guard.messages() == 1

    await publish(guard, subject, msg_id=f"other-{guard.token}", trace="t3")
    assert await guard.messages() == 2

    first = await guard.js.get_msg(guard.spec.name, seq=1)
    assert (first.headers or {})[headers.MSG_ID] == f"same-{guard.token}"
    assert (first.headers or {})[headers.TRACE_ID] == "t1"  # the repeat did not replace it


async def test_ensure_pull_consumer_updates_an_existing_consumer_keeping_its_position(guard: GuardStream) -> None:
    durable = guard.consumer("upgrade")
    old = consumer_config(durable, [guard.subject(">")], max_deliver=8, ack_wait_seconds=30.0)
    await ensure_pull_consumer(guard.js, guard.spec.name, old)
    await guard.js.publish(guard.subject("a"), b"1", stream=guard.spec.name)
    await guard.js.publish(guard.subject("b"), b"2", stream=guard.spec.name)
    sub = await guard.js.pull_subscribe_bind(durable=durable, stream=guard.spec.name)
    for msg in await sub.fetch(2, timeout=5):
        await msg.ack_sync()
    await sub.unsubscribe()

    new = consumer_config(durable, [guard.subject("a"), guard.subject("c")], max_deliver=3, ack_wait_seconds=10.0)
    info = await ensure_pull_consumer(guard.js, guard.spec.name, new)
    assert set(info.config.filter_subjects or ()) == {guard.subject("a"), guard.subject("c")}
    assert info.config.max_deliver == 3
    assert differs(info.config, new) == []
    assert info.ack_floor is not None
    assert info.ack_floor.stream_seq == 2  # the same consumer: what it acknowledged stays acknowledged
    assert (await ensure_pull_consumer(guard.js, guard.spec.name, new)).ack_floor == info.ack_floor  # no-op

    await guard.js.publish(guard.subject("b"), b"3", stream=guard.spec.name)
    await guard.js.publish(guard.subject("c"), b"4", stream=guard.spec.name)
    info = await guard.consumer_info(durable)
    assert info.num_pending == 1  # only `c`: `b` is no longer selected


async def stored(stream: GuardStream) -> list[tuple[str, str]]:
    """(subject, Nats-Msg-Id) of every message of the stream, in stream order."""
    info = await stream.js.stream_info(stream.spec.name)
    result: list[tuple[str, str]] = []
    if not info.state.messages:
        return result
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await stream.js.get_msg(stream.spec.name, seq=seq)
        result.append((msg.subject or "", (msg.headers or {})[headers.MSG_ID]))
    return result


async def publish_all(stream: GuardStream, ids: list[str]) -> None:
    """`publish_durable_all` of one message per id (subject `test.guard.<token>.<id>`)."""
    broker = make_broker(stream.url, "test-publisher")
    await broker.start()
    try:
        await publish_durable_all(
            broker, [(stream.subject(i), MESSAGE, f"{stream.token}-{i}") for i in ids], stream=stream.spec
        )
    finally:
        await broker.stop()


@pytest.mark.parametrize("batches", [True, False], ids=["fast-batches", "one-by-one"])
async def test_publish_durable_all_stores_each_message_once_in_order(
    migrated: dict[str, str], batches: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wgs_kit.messaging")
    async with guard_stream(migrated["NATS_URL"], batches=batches) as stream:
        await publish_all(stream, ["a", "b", "c"])
        # A replay after a crash: what was stored again, and what comes after it.
        await publish_all(stream, ["b", "c", "d", "e"])
        await publish_all(stream, ["f"])

        assert await stored(stream) == [(stream.subject(i), f"{stream.token}-{i}") for i in "abcdef"]
    assert "not stored whole" not in caplog.text  # batches, the replay included, were stored as batches


async def test_publish_durable_all_splits_long_batches(migrated: dict[str, str]) -> None:
    async with guard_stream(migrated["NATS_URL"], batches=True) as stream:
        ids = [f"m{n}" for n in range(FAST_BATCH_MAX + 5)]
        await publish_all(stream, ids)

        assert [msg_id for _, msg_id in await stored(stream)] == [f"{stream.token}-{i}" for i in ids]


class Padded(msgspec.Struct):
    """A message as big as one likes."""

    text: str


async def publish_three_with(stream: GuardStream, middle: msgspec.Struct) -> None:
    """`publish_durable_all` of `a`, `b` (= `middle`), `c`."""
    broker = make_broker(stream.url, "test-publisher")
    await broker.start()
    try:
        await publish_durable_all(
            broker,
            [
                (stream.subject("a"), MESSAGE, f"{stream.token}-a"),
                (stream.subject("b"), middle, f"{stream.token}-b"),
                (stream.subject("c"), MESSAGE, f"{stream.token}-c"),
            ],
            stream=stream.spec,
        )
    finally:
        await broker.stop()


async def test_a_message_too_big_for_the_connection_stops_the_batch_before_it(migrated: dict[str, str]) -> None:
    async with guard_stream(migrated["NATS_URL"], batches=True) as stream:
        with pytest.raises(MaxPayloadError):
            await publish_three_with(stream, Padded(text="x" * 1_100_000))  # the server takes up to 1 MiB

        assert await stored(stream) == [(stream.subject("a"), f"{stream.token}-a")]  # never `c` without `b`


async def test_a_message_the_stream_refuses_stops_the_batch_there(migrated: dict[str, str]) -> None:
    # The server stops the batch at the refused message; published one by one instead, what comes
    # before it is stored (once) and the refusal raises: nothing after it is stored.
    async with guard_stream(migrated["NATS_URL"], batches=True, max_msg_size=400) as stream:
        with pytest.raises(APIError):
            await publish_three_with(stream, Padded(text="x" * 1000))

        assert await stored(stream) == [(stream.subject("a"), f"{stream.token}-a")]  # never `c` without `b`


async def test_a_stream_not_yet_taking_batches_gets_the_messages_one_by_one(migrated: dict[str, str]) -> None:
    # The publisher's contract allows batches, the stream was not updated yet (before `wgs-migrate`).
    async with guard_stream(migrated["NATS_URL"], batches=True, server_batches=False) as stream:
        await publish_all(stream, ["a", "b", "c"])

        assert await stored(stream) == [(stream.subject(i), f"{stream.token}-{i}") for i in "abc"]


async def test_a_connections_batches_share_one_subscription_for_their_answers(
    migrated: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No SUB and UNSUB per page of events: the answers of every batch come on one subscription."""
    async with guard_stream(migrated["NATS_URL"], batches=True) as stream:
        broker = make_broker(stream.url, "test-publisher")
        await broker.start()
        subscribed: list[str] = []
        subscribe = broker.connection.subscribe

        async def counted_subscribe(subject: str, **kwargs: Any) -> Any:
            subscribed.append(subject)
            return await subscribe(subject, **kwargs)

        monkeypatch.setattr(broker.connection, "subscribe", counted_subscribe)
        try:
            pages = [
                [(stream.subject(f"p{page}"), MESSAGE, f"{stream.token}-{page}-{n}") for n in range(3)]
                for page in range(6)
            ]
            for page in pages[:3]:
                await publish_durable_all(broker, page, stream=stream.spec)
            await asyncio.gather(*(publish_durable_all(broker, page, stream=stream.spec) for page in pages[3:]))
        finally:
            await broker.stop()
        assert len(subscribed) == 1
        assert len(await stored(stream)) == 6 * 3


async def test_many_batches_at_once_are_each_stored_in_order(migrated: dict[str, str]) -> None:
    """Every instance of a node publishes its pages on one connection, concurrently."""
    async with guard_stream(migrated["NATS_URL"], batches=True) as stream:
        broker = make_broker(stream.url, "test-publisher")
        await broker.start()
        try:
            pages = [
                [(stream.subject(f"p{page}"), MESSAGE, f"{stream.token}-{page}-{n}") for n in range(20)]
                for page in range(60)
            ]
            await asyncio.gather(*(publish_durable_all(broker, page, stream=stream.spec) for page in pages))
        finally:
            await broker.stop()

        found = await stored(stream)
        assert len(found) == 60 * 20
        for page in range(60):
            ids = [msg_id for subject, msg_id in found if subject == stream.subject(f"p{page}")]
            assert ids == [f"{stream.token}-{page}-{n}" for n in range(20)]
