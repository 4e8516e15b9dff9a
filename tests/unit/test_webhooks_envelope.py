"""The webhook body: one envelope for every event type, `data` per type, as documented."""

import json
from datetime import UTC, datetime
from typing import Any

from wgs_contracts.instance_events import (
    ConnectionChanged,
    ConnectionState,
    DeliveryStatus,
    Location,
    Media,
    MessageContent,
    MessageReceived,
    MessageStatusChanged,
    MessageType,
    QrChanged,
    Reaction,
)
from wgs_contracts.messages import InstanceStatus, InstanceStatusChanged
from wgs_contracts.webhook_envelope import envelope_body, event_type

AT = datetime(2026, 11, 25, 12, 0, 1, 123000, tzinfo=UTC)
COMMON: dict[str, Any] = {"event_id": "7:1:42", "instance_id": 7, "tenant_id": 3, "generation": 1, "seq": 42, "at": AT}


def body_of(event) -> dict:
    return json.loads(envelope_body(event))


def received(content: MessageContent) -> MessageReceived:
    return MessageReceived(**COMMON, message_id="wamid.1", sender="491701", recipient="491702", content=content)


def test_text_message_matches_the_original_gateways_example():
    body = body_of(received(MessageContent(type=MessageType.TEXT, text="Hello")))
    assert body == {
        "id": "7:1:42",
        "instance": 7,
        "timestamp": "2026-11-25T12:00:01.123000Z",
        "type": "message",
        "data": {"id": "wamid.1", "from": "491701", "to": "491702", "type": "text", "text": "Hello"},
    }
    original = {"instance", "timestamp", "type", "data"}
    assert original <= body.keys()
    assert {"from", "type", "text"} <= body["data"].keys()


def test_media_location_and_reaction_parts_are_camel_case_and_absent_parts_omitted():
    media = Media(mime_type="image/png", url="https://cdn.example/x.png", caption="look")
    image = body_of(received(MessageContent(type=MessageType.IMAGE, media=media)))["data"]
    assert image["media"] == {"mimeType": "image/png", "url": "https://cdn.example/x.png", "caption": "look"}
    assert "text" not in image
    assert "location" not in image
    location = Location(latitude=52.5, longitude=13.4)
    place = body_of(received(MessageContent(type=MessageType.LOCATION, location=location)))
    assert place["data"]["location"] == {"latitude": 52.5, "longitude": 13.4}
    reaction = Reaction(message_id="wamid.0", emoji="👍")
    liked = body_of(received(MessageContent(type=MessageType.REACTION, reaction=reaction)))
    assert liked["data"]["reaction"] == {"messageId": "wamid.0", "emoji": "👍"}


def test_every_other_event_type():
    status = MessageStatusChanged(**COMMON, message_id="wamid.2", status=DeliveryStatus.READ)
    assert body_of(status)["type"] == "message.status"
    assert body_of(status)["data"] == {"id": "wamid.2", "status": "read"}
    assert body_of(QrChanged(**COMMON, qr="2@xyz"))["data"] == {"qr": "2@xyz"}
    connected = ConnectionChanged(**COMMON, state=ConnectionState.CONNECTED, phone_id="491701")
    assert body_of(connected) | {"data": None} == {
        "id": "7:1:42",
        "instance": 7,
        "timestamp": "2026-11-25T12:00:01.123000Z",
        "type": "connection",
        "data": None,
    }
    assert body_of(connected)["data"] == {"state": "connected", "phoneId": "491701"}
    failed = InstanceStatusChanged(
        instance_id=7, tenant_id=3, generation=2, node="vps-1", status=InstanceStatus.FAILED, reason="oom", at=AT
    )
    body = body_of(failed)
    assert (body["id"], body["type"]) == (failed.event_id, "instance.status")
    assert body["data"] == {"status": "failed", "generation": 2, "node": "vps-1", "reason": "oom"}


def test_event_type_is_the_contract_tag():
    assert event_type(QrChanged(**COMMON, qr="q")) == "qr"
    assert event_type(MessageStatusChanged(**COMMON, message_id="m", status=DeliveryStatus.SENT)) == "message.status"
