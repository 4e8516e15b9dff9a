"""Sending, pairing and QR: relayed to the instance's provider through its node agent."""

import asyncio
import base64
import io
import json
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Final
from uuid import uuid4

import msgspec
import segno
from litestar.datastructures.headers import MediaTypeHeader
from nats.errors import Error as NatsError
from wgs_contracts.instance_events import DeliveryStatus, OutboundMessage, ProviderCall, ProviderReply
from wgs_contracts.messages import InstanceStatus, Provider
from wgs_contracts.provider_api import SendRequest, not_ready
from wgs_db.engine import DATABASE_OUTAGES, fetch
from wgs_db.tables import Instance, Node
from wgs_kit.coalescing import Coalescer

from wgs_api.domain.instances.services import fetch_own
from wgs_api.domain.messaging import schemas, send_keys
from wgs_api.domain.messaging.late_records import LateRecords
from wgs_api.domain.messaging.rate_limit import send_context
from wgs_api.domain.messaging.relay import SendRelay, relay_sends
from wgs_api.domain.messaging.validation import validate_send
from wgs_api.errors import (
    ApiError,
    Conflict,
    Invalid,
    NotFound,
    Outage,
    RateLimited,
    Unavailable,
    code_for_status,
)
from wgs_api.messaging import ApiMessaging

NOT_CONNECTED = "Client not connected"
log = logging.getLogger(__name__)


class ProviderAnswer(ApiError):
    """A provider's own error answer, passed through with its status and the code that goes with it."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.status_code = status
        self.code = code_for_status(status)


async def node_name(row: dict[str, Any]) -> str | None:
    """The name of the node an instance is placed on."""
    if row["node_id"] is None:
        return None
    node = await Node.select(Node.name).where(Node.id == row["node_id"]).first()
    return node["name"] if node else None


def provider_error(reply: ProviderReply) -> ProviderAnswer:
    """The provider's error reply as an API error, its `reason` (when it gives one) in the message."""
    try:
        body = json.loads(reply.body)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = str(body.get("error") or f"provider answered {reply.status}")
    if body.get("reason"):
        message = f"{message} ({body['reason']})"
    return ProviderAnswer(reply.status, message, body.get("field"))


async def call_running(
    messaging: ApiMessaging, tenant_id: int, instance_id: int, method: str, path: str, body: bytes | None = None
) -> dict[str, Any]:
    """Relay a call to a running instance's provider; its `200` answer's JSON. `503` when it cannot be
    reached now (its node does not answer, does not run it, or its provider does not answer); the
    provider's own error answer (`404` no QR yet, `409` already connected) as an API error."""
    row = await fetch_own(tenant_id, instance_id)
    node = await node_name(row)
    if node is None or row["status"] != InstanceStatus.RUNNING.value:
        raise Unavailable(f"Instance is not running (status {row['status']}).")
    reply = await messaging.call_provider(
        node, ProviderCall(instance_id=instance_id, method=method, path=path, body=body)
    )
    if reply is None or not reply.relayed:
        raise Unavailable("Instance is not reachable right now; try again shortly.")
    if reply.status != 200:
        raise provider_error(reply)
    answer: dict[str, Any] = json.loads(reply.body)
    return answer


async def qr_code(messaging: ApiMessaging, tenant_id: int, instance_id: int) -> tuple[str, bytes]:
    """(raw QR content, PNG) of the instance's current pairing QR."""
    raw = str((await call_running(messaging, tenant_id, instance_id, "GET", "/qr"))["qr"])
    png = io.BytesIO()
    segno.make(raw, error="m").save(png, kind="png", scale=6, border=2)
    return raw, png.getvalue()


def media_quality(accept: str, media_type: str) -> float:
    """The quality an `Accept` header gives `media_type`: that of its most specific range matching it
    (`type/subtype` over `type/*` over `*/*`); 0 when none does."""
    wanted = MediaTypeHeader(media_type)
    ranges = [MediaTypeHeader(item) for item in accept.split(",") if item.strip()]
    matching = [r for r in ranges if r.match(wanted)]
    if not matching:
        return 0.0
    quality, _ = max(matching, key=lambda r: r.priority[1]).priority  # (quality in hundredths, specificity)
    return quality / 100


def prefers_json(accept: str) -> bool:
    """Whether a QR request rates `application/json` above `image/png`. The original API always
    answered the PNG, so a tie keeps it: axios's default `application/json, text/plain, */*`
    still gets the PNG; `Accept: application/json` (or with `*/*;q=0.8`) gets the JSON."""
    return media_quality(accept, "application/json") > media_quality(accept, "image/png")


def qr_json(raw: str, png: bytes) -> schemas.QrJson:
    """The JSON form of a QR."""
    return schemas.QrJson(raw=raw, base64=base64.b64encode(png).decode())


async def pair_code(messaging: ApiMessaging, tenant_id: int, instance_id: int, phone: str) -> schemas.PairCode:
    """A pairing code for linking by phone number."""
    body = msgspec.json.encode({"phone": phone.strip().lstrip("+")})
    answer = await call_running(messaging, tenant_id, instance_id, "POST", "/pair-code", body)
    return schemas.PairCode(code=str(answer["code"]))


async def logout(messaging: ApiMessaging, tenant_id: int, instance_id: int) -> dict[str, Any]:
    """Unlink the instance's phone: its provider forgets the session and shows a new QR."""
    return await call_running(messaging, tenant_id, instance_id, "POST", "/logout")


async def sandbox_scan(messaging: ApiMessaging, tenant_id: int, instance_id: int, code: str | None) -> dict[str, Any]:
    """Pair a sandbox instance: "scan" its current QR, or enter a pairing code."""
    row = await fetch_own(tenant_id, instance_id)
    if row["provider"] != Provider.SANDBOX.value:
        raise Conflict("Only sandbox instances can be paired by the gateway itself.")
    if code is None:
        raw, _ = await qr_code(messaging, tenant_id, instance_id)
        body = msgspec.json.encode({"qr": raw})
    else:
        body = msgspec.json.encode({"code": code})
    return await call_running(messaging, tenant_id, instance_id, "POST", "/sandbox/scan", body)


RECORD_MESSAGES = """
WITH message AS (
    INSERT INTO messages (id, instance_id, tenant_id, recipient, type)
    SELECT r.* FROM unnest($1::text[], $2::int[], $3::int[], $4::text[], $5::text[])
                    AS r(id, instance_id, tenant_id, recipient, type)
    WHERE EXISTS (SELECT 1 FROM instances i WHERE i.id = r.instance_id)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
INSERT INTO message_statuses (message_id, status, provisional)
SELECT m.id, s.status, s.status = 'sent'
  FROM message m JOIN unnest($1::text[], $6::text[]) AS s(id, status) ON s.id = m.id
ON CONFLICT DO NOTHING
"""

# The provider refused the send: nothing was sent, so nothing of it stays (its idempotency key
# neither; its statuses go with it by a trigger).
FORGET_MESSAGE = """
WITH send_key AS (DELETE FROM send_keys WHERE message_id = $1)
DELETE FROM messages WHERE id = $1
"""

# Nobody answered for the provider, or it is reconnecting (`not_ready`): the send is queued, and its
# `sent` stays only if the provider's own event confirmed it meanwhile (decision 35).
REQUEUE_MESSAGE = """
WITH unconfirmed AS (DELETE FROM message_statuses WHERE message_id = $1 AND status = 'sent' AND provisional)
INSERT INTO message_statuses (message_id, status)
SELECT id, 'queued' FROM messages WHERE id = $1
ON CONFLICT DO NOTHING
"""

# Nobody answered for the provider and the send could not be queued either (NATS unreachable): it is
# not accepted (`503`), so its record goes, but not its idempotency key. The provider may still get
# the relay request, which nats-py writes once it reconnects: a retry with the key names the same
# message, which the provider takes once, and the statuses it reported find their record again.
UNACCEPTED_MESSAGE = "DELETE FROM messages WHERE id = $1"


@dataclass(frozen=True)
class MessageRecord:
    """A message the API accepted, with its first status: queued, or sent while its provider is
    asked (provisional: confirmed by the provider's event, or taken back by `send`)."""

    message_id: str
    instance_id: int
    tenant_id: int
    recipient: str
    type: str
    status: str


async def record_messages(records: list[MessageRecord]) -> list[None]:
    """Store accepted messages and their first status, all in one statement.

    A message of an instance deleted meanwhile is not stored (its rows would go with the
    instance anyway); a batch that still fails is retried one record at a time by its
    coalescer, so that only the failing send answers `500`.
    """
    await fetch(
        RECORD_MESSAGES,
        [r.message_id for r in records],
        [r.instance_id for r in records],
        [r.tenant_id for r in records],
        [r.recipient for r in records],
        [r.type for r in records],
        [r.status for r in records],
    )
    return [None] * len(records)


_records: Coalescer[MessageRecord, None] = Coalescer(record_messages, alone_on_error=True)


@dataclass(frozen=True)
class LateRecord:
    """A message record to store once PostgreSQL is back; `requeued`: the provider did not answer, so
    the send was queued and a provisional `sent` the first record may have stored is taken back."""

    record: MessageRecord
    requeued: bool = False


async def store_late_records(late: list[LateRecord]) -> None:
    """Store records that waited for the database: one statement for all (idempotent, as a retry is)."""
    await record_messages([item.record for item in late])
    for item in late:
        if item.requeued:
            await fetch(REQUEUE_MESSAGE, item.record.message_id)


LATE_RECORDS: Final = LateRecords(store_late_records)  # this process's records waiting for PostgreSQL


@dataclass(frozen=True)
class Outgoing:
    """A send on its way to its provider: its `POST /messages` body, and its record."""

    body: bytes
    record: MessageRecord


@dataclass(frozen=True)
class Relayed:
    """What became of an `Outgoing`: the provider's answer (None: nobody answered), and the
    error that kept its record from being stored, if one did."""

    reply: ProviderReply | None
    record_error: BaseException | None


async def relay_and_record(
    messaging: ApiMessaging, node: str, instance_id: int, sends: list[Outgoing]
) -> list[Relayed]:
    """Relay sends waiting together to their provider and, at the same time, record them together.

    The records go to the record coalescer in one turn of the loop, so the sends of one relay
    request are stored by one statement (with any other instance's records waiting then), and
    each send waits for the longer of the two, not their sum (decision 35).
    """
    recorded = asyncio.gather(*(_records.submit(s.record) for s in sends), return_exceptions=True)
    try:
        replies = await relay_sends(messaging, node, instance_id, [s.body for s in sends])
    finally:
        errors = await recorded
    return [
        Relayed(reply, error if isinstance(error, BaseException) else None)
        for reply, error in zip(replies, errors, strict=True)
    ]


SENDS: Final = SendRelay(relay_and_record)  # this process's queues of sends per instance


async def send(
    messaging: ApiMessaging,
    tenant_id: int,
    instance_id: int,
    body: schemas.SendBody,
    idempotency_key: str | None = None,
) -> tuple[schemas.SendResult, bool]:
    """Send now when the instance runs (sent=True), else queue durably (sent=False).

    On the hot path, each shared with the sends waiting meanwhile: the instance with its node
    and the tenant's rate, spending a token (skipped while a lease serves the instance,
    `leases`); then, at the same time, the request to the provider (`relay`) and the message
    with a provisional `sent` (decision 35), both once per batch of sends (`relay_and_record`),
    taken back when the provider refused the send or did not take it now (no answer, or
    `not_ready`: the send is then queued). A body that fails
    validation spends no token. A record that fails changes no answer of a send the provider
    took or the queue holds (it is logged): only the message's history is then missing. A send
    that NATS failed (neither answered nor queued) is a `503` without a record
    (`UNACCEPTED_MESSAGE`).
    With an `idempotency_key`, a retry gets the first request's message (`send_keys`).
    """
    try:
        recipient, content = validate_send(body)
        key = send_keys.checked_key(idempotency_key)
    except Invalid:
        await fetch_own(tenant_id, instance_id)  # 404 first, as for any other call on a missing instance
        raise
    if key is None:
        message_id = uuid4().hex
    else:
        claim = await send_keys.claim(tenant_id, instance_id, key, send_keys.request_digest(recipient, content))
        if claim is None:
            raise NotFound("Instance not found")
        message_id = claim.message_id
        if not claim.ours and (answered := await send_keys.earlier_answer(message_id)) is not None:
            return answered
    context = await send_context(instance_id, tenant_id)
    if context is None:
        raise NotFound("Instance not found")
    if context.desired_state != "running":
        raise Conflict("Instance is being deleted.")
    if context.retry_after is not None:
        raise RateLimited(
            f"Send rate limit of {context.rate_per_second:g}/s exceeded.", retry_after=context.retry_after
        )
    message = OutboundMessage(id=message_id, instance_id=instance_id, to=recipient, content=content)

    def record(status: DeliveryStatus) -> MessageRecord:
        return MessageRecord(message.id, instance_id, tenant_id, recipient, content.type.value, status.value)

    if context.node is None or context.status != InstanceStatus.RUNNING.value:
        await messaging.enqueue_send(message)
        queued = record(DeliveryStatus.QUEUED)
        await _record_queued(_records.submit(queued), LateRecord(queued))
        return schemas.SendResult(status="queued", id=message.id), False
    request = msgspec.json.encode(SendRequest(id=message.id, to=recipient, content=content))
    try:
        relayed = await SENDS.send(messaging, context.node, instance_id, Outgoing(request, record(DeliveryStatus.SENT)))
    except Exception:
        await fetch(FORGET_MESSAGE, message.id)
        raise
    reply = relayed.reply
    if reply is not None and reply.status == 200:
        if relayed.record_error is not None:
            # The provider's answer decides the send: one it took must not be reported as failed
            # (the client would send it again). Its record is stored later, or it is logged.
            _record_later(LateRecord(record(DeliveryStatus.SENT)), relayed.record_error)
        return schemas.SendResult(status="ok", id=message.id), True
    if reply is not None and reply.relayed and not not_ready(reply.status, reply.body):
        await fetch(FORGET_MESSAGE, message.id)
        error = provider_error(reply)
        if reply.status == 503:
            raise Unavailable(NOT_CONNECTED)
        if reply.status == 422:
            raise Invalid(error.message, field=error.field)
        raise error
    try:
        await messaging.enqueue_send(message)
    except NatsError:
        await fetch(UNACCEPTED_MESSAGE, message.id)
        raise Outage(
            f"The provider did not take the send now and it could not be queued: NATS is unreachable. Message"
            f" {message.id} may still go out; a retry with the same Idempotency-Key sends it at most once."
        ) from None
    requeued = LateRecord(record(DeliveryStatus.QUEUED), requeued=True)
    if relayed.record_error is not None:
        _record_later(requeued, relayed.record_error)
    else:
        await _record_queued(fetch(REQUEUE_MESSAGE, message.id), requeued)
    return schemas.SendResult(status="queued", id=message.id), False


def _record_later(late: LateRecord, error: BaseException) -> None:
    """A send's record failed after its fate was settled; its answer stands. A database outage:
    the record is stored once PostgreSQL is back (`LATE_RECORDS`); any other error is logged
    (the message's history is then missing)."""
    message_id, instance_id = late.record.message_id, late.record.instance_id
    if isinstance(error, DATABASE_OUTAGES) and LATE_RECORDS.add(late):
        log.warning(
            "message %s of instance %d: recording it failed (%r); it is stored once PostgreSQL is back",
            message_id,
            instance_id,
            error,
        )
        return
    log.error(
        "message %s of instance %d: recording it failed (%r); the send's answer stands", message_id, instance_id, error
    )


async def _record_queued(recording: Awaitable[object], late: LateRecord) -> None:
    """Record a send already in its instance's queue: it will go out, so a failure must not answer 500
    (the client would send it again); it is stored later or logged instead (`_record_later`)."""
    try:
        await recording
    except Exception as exc:
        _record_later(late, exc)


# A page of an instance's messages, newest first: those before a cursor (the creation time and id
# of the last message of the page before: two messages may share a time), or from the newest.
MESSAGES_PAGE = """
SELECT m.id, m.recipient, m.type FROM messages m
 WHERE m.instance_id = {} AND ({}::timestamptz IS NULL OR (m.created_at, m.id) < ({}, {}::text))
 ORDER BY m.created_at DESC, m.id DESC
 LIMIT {}
"""


async def message_view(tenant_id: int, instance_id: int, message_id: str) -> schemas.MessageView:
    """A message of the instance with its status history, oldest first."""
    await fetch_own(tenant_id, instance_id)
    rows = await Instance.raw(
        "SELECT id, recipient, type FROM messages WHERE id = {} AND instance_id = {}", message_id, instance_id
    )
    if not rows:
        raise NotFound("Message not found")
    return (await _with_histories(rows))[0]


async def list_messages(tenant_id: int, instance_id: int, limit: int, before: str | None) -> list[schemas.MessageView]:
    """The instance's sent messages with their histories, newest first; `before` (a message id of the
    instance, the last of a page) gives the next page."""
    await fetch_own(tenant_id, instance_id)
    cursor_at = None
    if before is not None:
        cursor = await Instance.raw(
            "SELECT created_at FROM messages WHERE id = {} AND instance_id = {}", before, instance_id
        )
        if not cursor:
            raise Invalid("before: not a message of this instance (deleted, or past the retention)", field="before")
        cursor_at = cursor[0]["created_at"]
    rows = await Instance.raw(MESSAGES_PAGE, instance_id, cursor_at, cursor_at, before, limit)
    return await _with_histories(rows)


async def _with_histories(rows: list[dict[str, Any]]) -> list[schemas.MessageView]:
    """The views of message rows (id, recipient, type), in their order, with their histories (one query)."""
    history = await Instance.raw(
        "SELECT message_id, status, reason, at FROM message_statuses WHERE message_id = ANY({}::text[])",
        [row["id"] for row in rows],
    )
    order = [s.value for s in DeliveryStatus]
    history.sort(key=lambda h: (h["at"], order.index(h["status"])))  # statuses of one moment in their own order
    entries: dict[str, list[schemas.StatusEntry]] = {row["id"]: [] for row in rows}
    for h in history:
        entries[h["message_id"]].append(schemas.StatusEntry(status=h["status"], reason=h["reason"], at=h["at"]))

    def current(steps: list[schemas.StatusEntry]) -> str:
        latest = max(
            steps, key=lambda e: (e.status == DeliveryStatus.FAILED.value, order.index(e.status)), default=None
        )
        return latest.status if latest else DeliveryStatus.QUEUED.value

    return [
        schemas.MessageView(
            id=row["id"],
            to=row["recipient"],
            type=row["type"],
            status=current(entries[row["id"]]),
            history=entries[row["id"]],
        )
        for row in rows
    ]
