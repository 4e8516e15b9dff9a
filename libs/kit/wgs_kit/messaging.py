"""NATS plumbing: msgspec codec, the FastStream broker, JetStream publishing with idempotency keys.

The durable consumers (explicit acks, redelivery with backoff, the dead-letter stream) are
`wgs_kit.batched.BatchedPullConsumer`; `redelivery_delay` is their backoff.
"""

import asyncio
import json
import logging
import uuid
import weakref
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Any, TypeVar

import msgspec
import nats
from fast_depends.msgspec import MsgSpecSerializer
from faststream.nats import NatsBroker, NatsMessage
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import RetentionPolicy, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from wgs_contracts import headers
from wgs_contracts.messages import SCHEMA_VERSION
from wgs_contracts.streams import ALL_STREAMS, StreamSpec

from wgs_kit.logs import new_trace_id, trace_id_var

log = logging.getLogger(__name__)
M = TypeVar("M")

_encoder = msgspec.json.Encoder()


def encode(message: msgspec.Struct) -> bytes:
    """JSON bytes of a contract message."""
    return _encoder.encode(message)


async def raw_body(msg: NatsMessage) -> bytes:
    """FastStream decoder handing handlers the raw body: they decode it with msgspec themselves
    (`decode`), where its failure is theirs to handle."""
    return msg.body


def make_broker(url: str, name: str) -> NatsBroker:
    """A FastStream NATS broker whose handlers receive raw bytes and msgspec-serialize replies."""
    return NatsBroker(
        url,
        name=name,
        decoder=raw_body,
        serializer=MsgSpecSerializer(),
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        graceful_timeout=10.0,
        logger=logging.getLogger(f"faststream.{name}"),
        log_level=logging.DEBUG,
    )


class ConnectionReport:
    """nats-py connection callbacks that report an outage in a few lines.

    Without them nats-py logs every failed reconnect attempt (one a second) as an error with a
    traceback. Here: one warning when the connection drops, one per distinct error while it
    reconnects, and one line when it is back.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._down = False
        self._last_error: str | None = None

    async def error(self, exc: Exception) -> None:
        """A connection error: a warning, unless it repeats the last one."""
        if repr(exc) != self._last_error:
            self._last_error = repr(exc)
            log.warning("%s: NATS connection error: %r (reconnecting)", self.name, exc)

    async def disconnected(self) -> None:
        """The connection dropped (nats-py calls this again at each failed attempt): a warning, once."""
        if not self._down:
            self._down = True
            log.warning("%s: disconnected from NATS; reconnecting", self.name)

    async def reconnected(self) -> None:
        """The connection is back."""
        self._down, self._last_error = False, None
        log.info("%s: reconnected to NATS", self.name)


async def connect_nats(url: str, name: str) -> Client:
    """A plain nats-py connection that reconnects forever, once a second, reporting outages tersely."""
    report = ConnectionReport(name)
    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        error_cb=report.error,
        disconnected_cb=report.disconnected,
        reconnected_cb=report.reconnected,
    )


def trace_headers(msg_id: str | None = None) -> dict[str, str]:
    """Headers for an outgoing message: the current trace id (a new one if none) and a dedup key."""
    trace = trace_id_var.get()
    result = {headers.TRACE_ID: new_trace_id() if trace == "-" else trace}
    if msg_id is not None:
        result[headers.MSG_ID] = msg_id
    return result


async def publish_durable(
    broker: NatsBroker, subject: str, message: msgspec.Struct, *, msg_id: str, stream: StreamSpec
) -> None:
    """Publish to JetStream and wait for the stream's ack; `msg_id` makes a repeat harmless.

    Plain nats-py on the broker's connection: every event passes here, and FastStream's
    publisher machinery costs more CPU than the publish itself.
    """
    js = broker.connection.jetstream()
    await js.publish(subject, encode(message), timeout=5.0, stream=stream.name, headers=trace_headers(msg_id))


FAST_BATCH_MAX = 1000  # messages of one fast-ingest batch (a page of events is at most this long)
FAST_BATCH_FLOW = 1000  # the ack cadence asked for; the publisher waits only for the commit's answer
FAST_BATCH_SUFFIX = "$FI"  # fast-ingest batches are told apart by their reply subjects (ADR-50)


class FastBatchOp(IntEnum):
    """What a message does to its fast-ingest batch (a token of its reply subject)."""

    START = 0
    ADD = 1
    COMMIT = 2


class BatchRefused(Exception):
    """JetStream did not store a fast-ingest batch whole: it stopped at a gap or a refused message,
    or the stream takes no batches."""


class BatchAnswers:
    """The server's answers to one connection's fast-ingest batches, on one wildcard subscription.

    Each batch gets its own inbox under the connection's prefix, its last token the batch id, and
    the answers on it go to that batch's callback. A subscription per batch cost a SUB and an UNSUB
    per page of events: two more writes of the publisher, and two changes of the server's
    subscription list, each of which empties its subject cache.
    """

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.prefix = nc.new_inbox()
        self._callbacks: dict[str, Callable[[Msg], None]] = {}
        self._subscribing = asyncio.Lock()
        self._subscribed = False

    @classmethod
    def of(cls, nc: Client) -> "BatchAnswers":
        """The connection's (one per connection, made on first use)."""
        answers = _BATCH_ANSWERS.get(nc)
        if answers is None:
            answers = _BATCH_ANSWERS[nc] = cls(nc)
        return answers

    async def open(self, on_answer: Callable[[Msg], None]) -> str:
        """A new batch's inbox; the answers on it go to `on_answer` until `close`."""
        if not self._subscribed:  # the lock only until the first batch has subscribed
            async with self._subscribing:
                if not self._subscribed:
                    await self.nc.subscribe(f"{self.prefix}.>", cb=self._dispatch)
                    self._subscribed = True
        batch_id = uuid.uuid4().hex
        self._callbacks[batch_id] = on_answer
        return f"{self.prefix}.{batch_id}"

    def close(self, inbox: str) -> None:
        """Stop taking answers for the batch of `inbox` (late ones are dropped)."""
        self._callbacks.pop(inbox.rpartition(".")[2], None)

    async def _dispatch(self, msg: Msg) -> None:
        batch_id = msg.subject[len(self.prefix) + 1 :].partition(".")[0]
        on_answer = self._callbacks.get(batch_id)
        if on_answer is not None:
            on_answer(msg)


_BATCH_ANSWERS: "weakref.WeakKeyDictionary[Client, BatchAnswers]" = weakref.WeakKeyDictionary()


async def publish_durable_all(
    broker: NatsBroker, messages: Sequence[tuple[str, msgspec.Struct, str]], *, stream: StreamSpec
) -> None:
    """Publish (subject, message, msg_id) triples in order, each stored once, with one answer per batch.

    On a stream with `allow_fast_batches` (nats-server 2.14+), up to FAST_BATCH_MAX messages go out
    as one JetStream fast-ingest batch: written together, each stored as it arrives (a repeated id
    is skipped), answered once. The server stops a batch at a gap or at the first message it refuses
    and stores nothing of it after that, so the stream never holds a message without the ones before
    it. A batch not stored whole (`BatchRefused`: stopped, or the stream does not take batches yet)
    is published again one message at a time, in order: what was stored is deduplicated, and the
    refused message raises there. A message too big for the connection raises before it is sent.
    """
    if len(messages) == 1 or not stream.allow_fast_batches:
        await _publish_one_by_one(broker, messages, stream)
        return
    for start in range(0, len(messages), FAST_BATCH_MAX):
        batch = messages[start : start + FAST_BATCH_MAX]
        try:
            await _publish_fast(broker, batch, stream)
        except BatchRefused as refusal:
            log.info("fast batch of %d not stored whole (%s): publishing one by one", len(batch), refusal)
            await _publish_one_by_one(broker, batch, stream)


async def _publish_one_by_one(
    broker: NatsBroker, messages: Sequence[tuple[str, msgspec.Struct, str]], stream: StreamSpec
) -> None:
    for subject, message, msg_id in messages:
        await publish_durable(broker, subject, message, msg_id=msg_id, stream=stream)


async def _publish_fast(
    broker: NatsBroker, batch: Sequence[tuple[str, msgspec.Struct, str]], stream: StreamSpec
) -> None:
    """One JetStream fast-ingest batch (ADR-50, "gap: fail"); returns once the server answered its commit.

    The batch lives in the reply subjects: `<inbox>.<flow>.fail.<batch seq>.<op>.$FI`, the inbox's
    last token being the batch id. The server answers on them (`BatchAnswers`): flow acks, an
    error for a refused message (and for each one after it), and the commit's answer with the
    count stored.
    """
    answers = BatchAnswers.of(broker.connection)
    refusals: list[dict[str, Any]] = []
    committed: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    def answer(msg: Msg) -> None:
        frame = json.loads(msg.data)
        if "error" in frame:
            refusals.append(frame["error"])
        if msg.subject == replies[-1] and not committed.done():
            committed.set_result(frame)

    inbox = await answers.open(answer)
    replies = [
        f"{inbox}.{FAST_BATCH_FLOW}.fail.{sequence}.{op_of(sequence, len(batch))}.{FAST_BATCH_SUFFIX}"
        for sequence in range(1, len(batch) + 1)
    ]
    try:
        common = {**trace_headers(), headers.EXPECTED_STREAM: stream.name}
        for (subject, message, msg_id), reply in zip(batch, replies, strict=True):
            await answers.nc.publish(subject, encode(message), reply=reply, headers={**common, headers.MSG_ID: msg_id})
        commit = await asyncio.wait_for(committed, timeout=5.0)
    finally:
        answers.close(inbox)
    if refusals:
        first = refusals[0]
        raise BatchRefused(f"{first.get('err_code')}: {first.get('description')}")
    if commit.get("count") != len(batch):
        raise BatchRefused(f"{commit.get('count')} of {len(batch)} stored")


def op_of(sequence: int, size: int) -> FastBatchOp:
    """The operation of the `sequence`-th message (from 1) of a batch of `size`."""
    if sequence == size:
        return FastBatchOp.COMMIT
    return FastBatchOp.START if sequence == 1 else FastBatchOp.ADD


async def publish_core(broker: NatsBroker, subject: str, message: msgspec.Struct) -> None:
    """Fire-and-forget publish on core NATS (heartbeats)."""
    await broker.publish(encode(message), subject, headers=trace_headers())


def stream_config(spec: StreamSpec) -> StreamConfig:
    """The nats-py StreamConfig of a contract stream."""
    return StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        description=spec.description,
        retention=RetentionPolicy(spec.retention),
        max_age=spec.max_age_seconds,
        duplicate_window=spec.duplicate_window_seconds,
        allow_batched=spec.allow_fast_batches,
    )


async def ensure_streams(js: JetStreamContext) -> list[str]:
    """Create or update every contract stream; return their names. Only `wgs-migrate` calls it."""
    names = []
    for spec in ALL_STREAMS:
        config = stream_config(spec)
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)
        names.append(spec.name)
    return names


def redelivery_delay(attempt: int) -> float:
    """Backoff before redelivering a message that failed `attempt` times: 0.5 s doubling to 30 s."""
    return min(30.0, 0.5 * 2.0 ** min(max(0, attempt - 1), 16))


class UnsupportedSchemaVersion(ValueError):
    """A message written by a newer contract than this process knows."""


_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def decode(data: bytes, message_type: type[M]) -> M:
    """Decode a contract message (or union of messages); refuse newer schema versions.

    One decoder per type, kept: msgspec caches what it knows of a Struct on the class, but
    rebuilds a union's on every call (ten times the cost of decoding an event).
    """
    decoder = _decoders.get(message_type)
    if decoder is None:
        decoder = _decoders[message_type] = msgspec.json.Decoder(message_type)
    message: M = decoder.decode(data)
    version = getattr(message, "schema_version", SCHEMA_VERSION)
    if version > SCHEMA_VERSION:
        raise UnsupportedSchemaVersion(f"schema_version {version} > supported {SCHEMA_VERSION}")
    return message
