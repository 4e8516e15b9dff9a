"""The JSON body of every webhook: `{"id", "instance", "timestamp", "type", "data"}` (docs/webhooks.md).

A contract with tenants' receivers: the webhooks service sends events in it, and the API its
test events (`endpoint_test_body`).
"""

from datetime import datetime
from typing import Final

import msgspec

from wgs_contracts.instance_events import (
    MessageReceived,
    MessageStatusChanged,
    QrChanged,
    TenantEvent,
)
from wgs_contracts.messages import InstanceStatusChanged


class Data(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """The `data` of one event type; absent optional parts are left out."""


class MediaData(Data):
    """An attachment."""

    mime_type: str
    url: str | None = None
    base64: str | None = None
    filename: str | None = None
    caption: str | None = None


class LocationData(Data):
    """A shared location."""

    latitude: float
    longitude: float
    name: str | None = None


class ReactionData(Data):
    """A reaction to an earlier message."""

    message_id: str
    emoji: str


class MessageData(Data, rename={"sender": "from", "recipient": "to"}):
    """A received message (`from` and `to` as the original gateway)."""

    id: str
    sender: str
    recipient: str
    type: str
    text: str | None = None
    media: MediaData | None = None
    location: LocationData | None = None
    reaction: ReactionData | None = None


class MessageStatusData(Data):
    """A sent message's new status."""

    id: str
    status: str
    reason: str | None = None


class InstanceStatusData(Data):
    """An instance's new lifecycle status."""

    status: str
    generation: int
    node: str | None = None
    reason: str | None = None


class QrData(Data):
    """A new pairing QR code."""

    qr: str


class ConnectionData(Data):
    """The WhatsApp connection's new state."""

    state: str
    phone_id: str | None = None
    reason: str | None = None


class EndpointTestData(Data):
    """A test event that a tenant asked for: it carries nothing of an instance."""

    endpoint_id: int
    message: str


class Envelope(msgspec.Struct, kw_only=True):
    """One event as tenants receive it."""

    id: str
    instance: int
    timestamp: datetime
    type: str
    data: Data


TEST_EVENT_TYPE: Final = "webhook.test"
TEST_EVENT_PREFIX: Final = "test:"  # test events' ids: never an instance event's (`{instance}:{generation}:{seq}`)
NO_INSTANCE: Final = 0  # `instance` of a test event sent to a tenant-level endpoint (ids start at 1)


def event_type(event: TenantEvent) -> str:
    """The event's type tag (`message`, `message.status`, `instance.status`, `qr`, `connection`)."""
    return str(type(event).__struct_config__.tag)


def message_data(event: MessageReceived) -> MessageData:
    """`data` of a received message."""
    content = event.content
    return MessageData(
        id=event.message_id,
        sender=event.sender,
        recipient=event.recipient,
        type=content.type.value,
        text=content.text,
        media=None if content.media is None else MediaData(**msgspec.structs.asdict(content.media)),
        location=None if content.location is None else LocationData(**msgspec.structs.asdict(content.location)),
        reaction=None if content.reaction is None else ReactionData(**msgspec.structs.asdict(content.reaction)),
    )


def event_data(event: TenantEvent) -> Data:
    """The `data` part of an event's webhook."""
    if isinstance(event, MessageReceived):
        return message_data(event)
    if isinstance(event, MessageStatusChanged):
        return MessageStatusData(id=event.message_id, status=event.status.value, reason=event.reason)
    if isinstance(event, InstanceStatusChanged):
        return InstanceStatusData(
            status=event.status.value, generation=event.generation, node=event.node, reason=event.reason
        )
    if isinstance(event, QrChanged):
        return QrData(qr=event.qr)
    return ConnectionData(state=event.state.value, phone_id=event.phone_id, reason=event.reason)


def envelope_body(event: TenantEvent) -> bytes:
    """The exact JSON bytes sent (and signed) for an event."""
    envelope = Envelope(
        id=event.event_id,
        instance=event.instance_id,
        timestamp=event.at,
        type=event_type(event),
        data=event_data(event),
    )
    return msgspec.json.encode(envelope)


def endpoint_test_body(event_id: str, instance_id: int | None, endpoint_id: int, at: datetime) -> bytes:
    """The JSON bytes of a test event for an endpoint (its instance's, or a tenant-level one's)."""
    envelope = Envelope(
        id=event_id,
        instance=NO_INSTANCE if instance_id is None else instance_id,
        timestamp=at,
        type=TEST_EVENT_TYPE,
        data=EndpointTestData(endpoint_id=endpoint_id, message="A test event: your endpoint is reachable."),
    )
    return msgspec.json.encode(envelope)
