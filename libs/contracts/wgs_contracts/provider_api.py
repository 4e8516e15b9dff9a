"""Bodies of the provider contract (HTTP over the instance's unix socket), gateway side.

`docs/provider-contract.md` is the normative description; these types are
what the node agent and the API decode. Providers need not use them.
"""

from datetime import datetime

import msgspec

from wgs_contracts.instance_events import ConnectionState, DeliveryStatus, MessageContent


class ErrorBody(msgspec.Struct):
    """The `{"error"}` of a provider's error answer (other keys ignored)."""

    error: str = ""


def not_ready(status: int, body: bytes) -> bool:
    """A provider's `503 not ready` to a send: linked, but not connected right now (starting with its
    saved session, reconnecting), so the send can wait for it; `503 Client not connected` cannot."""
    if status != 503:
        return False
    try:
        return msgspec.json.decode(body, type=ErrorBody).error == "not ready"
    except msgspec.DecodeError:
        return False


class Health(msgspec.Struct, kw_only=True):
    """`GET /health`."""

    state: ConnectionState
    reason: str | None = None
    phone_id: str | None = None


class OutboxEvent(msgspec.Struct, kw_only=True):
    """One event of `GET /events`: `data` is decoded by `type`."""

    seq: int
    type: str
    at: datetime
    data: msgspec.Raw


class EventsPage(msgspec.Struct, kw_only=True):
    """`GET /events?after=N&wait=S`."""

    events: list[OutboxEvent]
    last_seq: int


class MessageData(msgspec.Struct, kw_only=True):
    """`data` of a `message` event."""

    message_id: str
    sender: str
    recipient: str
    content: MessageContent


class MessageStatusData(msgspec.Struct, kw_only=True):
    """`data` of a `message.status` event."""

    message_id: str
    status: DeliveryStatus
    reason: str | None = None


class QrData(msgspec.Struct, kw_only=True):
    """`data` of a `qr` event."""

    qr: str


class ConnectionData(msgspec.Struct, kw_only=True):
    """`data` of a `connection` event."""

    state: ConnectionState
    phone_id: str | None = None
    reason: str | None = None


class SandboxOutbound(msgspec.Struct, kw_only=True):
    """`data` of a `sandbox.outbound` event: a message to route to another sandbox instance."""

    id: str
    to: str
    content: MessageContent
    from_: str = msgspec.field(name="from")


class SandboxReceipt(msgspec.Struct, kw_only=True):
    """`data` of a `sandbox.receipt` event: a status to route back to the sender."""

    id: str
    to: str
    status: DeliveryStatus
    from_: str = msgspec.field(name="from")
    reason: str | None = None


class SendRequest(msgspec.Struct, kw_only=True):
    """`POST /messages` body."""

    id: str
    to: str
    content: MessageContent


class DeliverRequest(msgspec.Struct, kw_only=True):
    """`POST /sandbox/deliver` body."""

    id: str
    content: MessageContent
    from_: str = msgspec.field(name="from")


class ReceiptRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`POST /sandbox/receipt` body."""

    id: str
    status: DeliveryStatus
    reason: str | None = None


class DeliverBatch(msgspec.Struct, kw_only=True):
    """`POST /sandbox/deliver` body carrying several messages (all of a page's for one recipient)."""

    batch: list[DeliverRequest]


class ReceiptBatch(msgspec.Struct, kw_only=True):
    """`POST /sandbox/receipt` body carrying several receipts."""

    batch: list[ReceiptRequest]


class BatchItemResult(msgspec.Struct, kw_only=True):
    """The answer to one item of a batch: what the item alone would have been answered."""

    status: int
    body: msgspec.Raw


class BatchResults(msgspec.Struct, kw_only=True):
    """`200` answer to a batch: one result per item, in order."""

    results: list[BatchItemResult]
