"""The agent groups a page's sandbox traffic by recipient, in event order, and leaves public events alone."""

from datetime import UTC, datetime

import msgspec
from wgs_contracts.provider_api import OutboxEvent
from wgs_node_agent.session import PageRouting, failed

TEXT = {"type": "text", "text": "hi"}


def event(seq: int, kind: str, data: dict) -> OutboxEvent:
    return OutboxEvent(seq=seq, type=kind, at=datetime.now(UTC), data=msgspec.Raw(msgspec.json.encode(data)))


def test_a_page_is_grouped_by_recipient_in_order() -> None:
    routing = PageRouting()
    page = [
        event(1, "message.status", {"message_id": "m1", "status": "sent", "reason": None}),
        event(2, "sandbox.outbound", {"id": "m1", "to": "b", "from": "a", "content": TEXT}),
        event(3, "sandbox.outbound", {"id": "m2", "to": "c", "from": "a", "content": TEXT}),
        event(4, "sandbox.outbound", {"id": "m3", "to": "b", "from": "a", "content": TEXT}),
        event(5, "sandbox.receipt", {"id": "x1", "to": "b", "from": "a", "status": "read"}),
        event(6, "message", {"message_id": "x2", "sender": "c", "recipient": "a", "content": TEXT}),
    ]
    kept = [routing.take(e) for e in page]
    assert kept == [False, True, True, True, True, False]
    assert {to: [m.id for m in messages] for to, messages in routing.outbound.items()} == {
        "b": ["m1", "m3"],
        "c": ["m2"],
    }
    assert {to: [r.id for r in receipts] for to, receipts in routing.receipts.items()} == {"b": ["x1"]}


def test_undeliverable_messages_each_get_a_failed_receipt_with_the_reason() -> None:
    routing = PageRouting()
    routing.take(event(1, "sandbox.outbound", {"id": "m1", "to": "z", "from": "a", "content": TEXT}))
    routing.take(event(2, "sandbox.outbound", {"id": "m2", "to": "z", "from": "a", "content": TEXT}))
    receipts = failed(routing.outbound["z"], "recipient z is not on the sandbox network")
    assert [(r.id, r.status.value, r.reason) for r in receipts] == [
        ("m1", "failed", "recipient z is not on the sandbox network"),
        ("m2", "failed", "recipient z is not on the sandbox network"),
    ]
