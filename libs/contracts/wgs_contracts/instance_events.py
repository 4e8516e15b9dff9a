"""What happens on a WhatsApp connection, as events on `wgs.evt.instance.{id}.{kind}`.

Providers keep an outbox of events with increasing sequence numbers; the node
agent publishes each one here with `event_id = "{instance}:{generation}:{seq}"`
(also its `Nats-Msg-Id`), so a replay after a crash is deduplicated and a
consumer can deduplicate by `event_id` forever.
"""

from datetime import datetime
from enum import StrEnum
from typing import Final

import msgspec

from wgs_contracts.messages import Base, InstanceStatusChanged, utcnow
from wgs_contracts.state import SnapshotFallback


class MessageType(StrEnum):
    """Kinds of WhatsApp messages the gateway sends and receives."""

    TEXT = "text"
    IMAGE = "image"
    DOCUMENT = "document"
    LOCATION = "location"
    REACTION = "reaction"


class DeliveryStatus(StrEnum):
    """Life of a sent message (`GET /api/instances/{id}/messages/{msg_id}`)."""

    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"


class ConnectionState(StrEnum):
    """States of a provider's WhatsApp connection (`GET /health` of the provider contract)."""

    STARTING = "starting"
    QR = "qr"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    FAILED = "failed"


class Media(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """An attachment: inline `base64` or a `url`, with its MIME type."""

    mime_type: str
    base64: str | None = None
    url: str | None = None
    filename: str | None = None
    caption: str | None = None


class Location(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """A shared location."""

    latitude: float
    longitude: float
    name: str | None = None


class Reaction(msgspec.Struct, kw_only=True, frozen=True):
    """An emoji reaction to an earlier message."""

    message_id: str
    emoji: str


class MessageContent(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The content of a message: `type` says which of the optional parts is set."""

    type: MessageType
    text: str | None = None
    media: Media | None = None
    location: Location | None = None
    reaction: Reaction | None = None


class OutboundMessage(msgspec.Struct, kw_only=True, frozen=True):
    """A message a tenant sends; `id` is the gateway's message id (idempotency key at the provider)."""

    id: str
    instance_id: int
    to: str
    content: MessageContent
    queued_at: datetime = msgspec.field(default_factory=utcnow)


class EventBase(Base, frozen=True):
    """Fields every provider event carries."""

    event_id: str
    instance_id: int
    tenant_id: int
    generation: int
    seq: int
    at: datetime


class MessageReceived(EventBase, frozen=True, tag="message"):
    """An inbound message; on `wgs.evt.instance.{id}.message`."""

    message_id: str
    sender: str
    recipient: str
    content: MessageContent


class MessageStatusChanged(EventBase, frozen=True, tag="message.status"):
    """A sent message was sent, delivered, read or failed; on `wgs.evt.instance.{id}.message_status`."""

    message_id: str
    status: DeliveryStatus
    reason: str | None = None


class QrChanged(EventBase, frozen=True, tag="qr"):
    """A new pairing QR is showing; on `wgs.evt.instance.{id}.qr`."""

    qr: str


class ConnectionChanged(EventBase, frozen=True, tag="connection"):
    """The WhatsApp connection changed state; on `wgs.evt.instance.{id}.connection`."""

    state: ConnectionState
    phone_id: str | None = None
    reason: str | None = None


ProviderEvent = MessageReceived | MessageStatusChanged | QrChanged | ConnectionChanged
TenantEvent = InstanceStatusChanged | ProviderEvent  # what tenants' webhooks receive
InstanceEvent = TenantEvent | SnapshotFallback  # everything on wgs.evt.instance.>

# The subject token of each event kind: wgs.evt.instance.{id}.{kind}.
EVENT_KINDS: Final = {
    "instance.status": "status",
    "message": "message",
    "message.status": "message_status",
    "qr": "qr",
    "connection": "connection",
}


def provider_event_id(instance_id: int, generation: int, seq: int) -> str:
    """The stable id of a provider's outbox event (and its `Nats-Msg-Id`)."""
    return f"{instance_id}:{generation}:{seq}"


# --- request-reply between the API, node agents and providers ---------------------------------


class ProviderCall(Base, frozen=True, tag="provider.call"):
    """An HTTP request to relay to an instance's provider over its unix socket."""

    instance_id: int
    method: str
    path: str
    body: bytes | None = None


class ProviderReply(Base, frozen=True, tag="provider.reply"):
    """The provider's HTTP answer; or, `relayed` False, the agent's own: 404 when the instance does
    not run on its node, 504 when its provider did not answer."""

    status: int
    body: bytes
    content_type: str = "application/json"
    relayed: bool = True


class ProviderSends(Base, frozen=True, tag="provider.sends"):
    """Several sends to one instance's provider, relayed together (each body a `POST /messages` one)."""

    instance_id: int
    bodies: list[bytes]


class ProviderSendsReply(Base, frozen=True, tag="provider.sends_reply"):
    """The provider's answer to each send of a `ProviderSends`, in order."""

    replies: list[ProviderReply]


class SandboxEnvelope(Base, frozen=True, tag="sandbox.envelope"):
    """Traffic of the simulated WhatsApp network between sandbox instances, routed by phone."""

    kind: str  # "message" or "receipt"
    sender: str
    recipient: str
    body: bytes


EVENT_TYPES: Final = (MessageReceived, MessageStatusChanged, QrChanged, ConnectionChanged)
