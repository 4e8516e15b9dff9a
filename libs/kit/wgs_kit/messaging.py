"""NATS plumbing: msgspec codec, JetStream publishing with idempotency keys, durable consumers.

Durable consumers here are pull consumers with explicit acks: a handler that
raises gets its message redelivered with backoff; after `max_deliver` attempts
the message is parked on the dead-letter stream (never silently dropped).
"""

import json
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import msgspec
from fast_depends.msgspec import MsgSpecSerializer
from faststream import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, NatsMessage, PullSub
from nats.js.api import RetentionPolicy, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NotFoundError
from wgs_contracts import headers, subjects
from wgs_contracts.messages import SCHEMA_VERSION
from wgs_contracts.streams import ALL_STREAMS, DEAD_LETTERS, StreamSpec

from wgs_kit.logs import new_trace_id, trace_id_var

log = logging.getLogger(__name__)
M = TypeVar("M")

_encoder = msgspec.json.Encoder()


def encode(message: msgspec.Struct) -> bytes:
    """JSON bytes of a contract message."""
    return _encoder.encode(message)


async def raw_body(msg: NatsMessage) -> bytes:
    """FastStream decoder handing handlers the raw body: they decode it with msgspec themselves,
    inside `guarded_delivery`, so that a malformed message is dead-lettered, not redelivered forever."""
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


ATOMIC_BATCH_MAX = 1000  # JetStream's limit of messages in one atomic batch
# JetStream refusals of an atomic batch as such, not of its messages: the batch repeats an id the
# stream holds (a replay after a crash); the stream does not take batches (yet: before `wgs-migrate`
# updated it); the server has too many batches in flight, so it dropped some of ours
# ("incomplete") or refused it; the batch is over the server's size limit.
BATCH_REFUSALS = frozenset({10201, 10174, 10176, 10210, 10199})


class BatchRefused(Exception):
    """JetStream refused an atomic batch as a whole; nothing of it was stored."""


async def publish_durable_all(
    broker: NatsBroker, messages: Sequence[tuple[str, msgspec.Struct, str]], *, stream: StreamSpec
) -> None:
    """Publish (subject, message, msg_id) triples in order, each stored once, with one ack per batch.

    On a stream with `allow_atomic_batches`, up to ATOMIC_BATCH_MAX messages go out as one JetStream
    atomic batch: written together, acked once, stored whole or not at all. A batch refused as such
    (`BATCH_REFUSALS`: e.g. it repeats an id already stored, after a crash) is published one
    message at a time instead, in order: stored ones are deduplicated, the others stored, and a
    message refused stops it there. Either way the stream never holds a message without the ones
    before it. A message too big for the server raises before the batch is committed.
    """
    if len(messages) == 1 or not stream.allow_atomic_batches:
        await _publish_one_by_one(broker, messages, stream)
        return
    for start in range(0, len(messages), ATOMIC_BATCH_MAX):
        batch = messages[start : start + ATOMIC_BATCH_MAX]
        try:
            await _publish_atomic(broker, batch, stream)
        except BatchRefused as refusal:
            log.info("atomic batch of %d refused (%s): publishing one by one", len(batch), refusal)
            await _publish_one_by_one(broker, batch, stream)


async def _publish_one_by_one(
    broker: NatsBroker, messages: Sequence[tuple[str, msgspec.Struct, str]], stream: StreamSpec
) -> None:
    for subject, message, msg_id in messages:
        await publish_durable(broker, subject, message, msg_id=msg_id, stream=stream)


async def _publish_atomic(
    broker: NatsBroker, batch: Sequence[tuple[str, msgspec.Struct, str]], stream: StreamSpec
) -> None:
    """One JetStream atomic batch: every message but the last without a reply, the last commits."""
    nc = broker.connection
    common = {**trace_headers(), headers.EXPECTED_STREAM: stream.name, headers.BATCH_ID: uuid.uuid4().hex}
    *leading, (last_subject, last_message, last_id) = batch
    for sequence, (subject, message, msg_id) in enumerate(leading, 1):
        batch_headers = {**common, headers.MSG_ID: msg_id, headers.BATCH_SEQUENCE: str(sequence)}
        await nc.publish(subject, encode(message), headers=batch_headers)
    commit = {**common, headers.MSG_ID: last_id, headers.BATCH_SEQUENCE: str(len(batch)), headers.BATCH_COMMIT: "1"}
    reply = await nc.request(last_subject, encode(last_message), timeout=5.0, headers=commit)
    error = json.loads(reply.data).get("error")
    if error is not None:
        if error.get("err_code") in BATCH_REFUSALS:
            raise BatchRefused(f"{error.get('err_code')}: {error.get('description')}")
        APIError.from_error(error)  # raises the nats-py error of that code


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
        allow_atomic=spec.allow_atomic_batches,
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


def durable_subscriber(
    broker: NatsBroker,
    *,
    stream: StreamSpec,
    subject: str,
    durable: str,
    max_deliver: int = 8,
    ack_wait_seconds: float = 30.0,
    batch_size: int = 16,
) -> Any:
    """A durable pull consumer on a contract stream, nacking on error (never dropping)."""
    return broker.subscriber(
        subject,
        stream=JStream(stream.name, declare=False),
        durable=durable,
        pull_sub=PullSub(batch_size=batch_size, timeout=1.0),
        ack_policy=AckPolicy.NACK_ON_ERROR,
        config=ConsumerConfig(
            durable_name=durable,
            max_deliver=max_deliver,
            ack_wait=ack_wait_seconds,
            filter_subject=subject,
        ),
    )


def redelivery_delay(attempt: int) -> float:
    """Backoff before redelivering a message that failed `attempt` times: 0.5 s doubling to 30 s."""
    return min(30.0, 0.5 * 2.0 ** min(max(0, attempt - 1), 16))


@asynccontextmanager
async def guarded_delivery(
    broker: NatsBroker, msg: NatsMessage, *, consumer: str, max_deliver: int
) -> AsyncIterator[None]:
    """Run a handler body for one JetStream message with trace id, backoff and dead-lettering.

    On error before the last attempt the message is nacked with a delay and the
    error re-raised; on the last attempt it is copied to the dead-letter stream
    and acked, so it is parked, visible and never lost.
    """
    raw = msg.raw_message
    token = trace_id_var.set((raw.headers or {}).get(headers.TRACE_ID, new_trace_id()))
    attempt = raw.metadata.num_delivered
    try:
        yield
    except Exception as exc:
        if attempt >= max_deliver:
            log.exception("giving up on %s after %d attempts: dead-lettered", raw.subject, attempt)
            dead_headers = dict(raw.headers or {})
            dead_headers.pop(headers.MSG_ID, None)
            dead_headers[headers.DEAD_LETTER_REASON] = repr(exc)[:500]
            dead_headers[headers.DEAD_LETTER_SUBJECT] = raw.subject
            await broker.publish(
                raw.data,
                subjects.dead_letter(consumer),
                headers=dead_headers,
                stream=DEAD_LETTERS.name,
                timeout=5.0,
            )
            return
        log.warning("attempt %d on %s failed (%r): will retry", attempt, raw.subject, exc)
        await msg.nack(delay=redelivery_delay(attempt))
        raise
    finally:
        trace_id_var.reset(token)


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
