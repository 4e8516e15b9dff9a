"""The agent groups a page's sandbox traffic by recipient, in event order, and leaves public events alone;
the receipts of a delivery follow the recipient's answer, item by item."""

from datetime import UTC, datetime

import msgspec
from wgs_contracts.instance_events import ProviderReply
from wgs_contracts.provider_api import OutboxEvent
from wgs_node_agent.session import PageRouting, delivery_receipts, failed

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
    receipts = failed([m.id for m in routing.outbound["z"]], "recipient z is not on the sandbox network")
    assert [(r.id, r.status.value, r.reason) for r in receipts] == [
        ("m1", "failed", "recipient z is not on the sandbox network"),
        ("m2", "failed", "recipient z is not on the sandbox network"),
    ]


def test_each_message_of_a_delivery_gets_the_receipt_of_its_own_answer() -> None:
    answer = {"results": [{"status": 200, "body": {"status": "delivered"}}, {"status": 422, "body": {"error": "bad"}}]}
    receipts = delivery_receipts(["m1", "m2"], "b", ProviderReply(status=200, body=msgspec.json.encode(answer)))
    assert [(r.id, r.status.value, r.reason) for r in receipts] == [
        ("m1", "delivered", None),
        ("m2", "failed", 'recipient b refused the message (422: {"error":"bad"})'),
    ]


def test_a_refused_delivery_fails_every_message_with_the_answer() -> None:
    refused = ProviderReply(status=503, body=b'{"error": "Client not connected"}')
    receipts = delivery_receipts(["m1", "m2"], "b", refused)
    reason = 'recipient b refused the message (503: {"error": "Client not connected"})'
    assert [(r.id, r.status.value, r.reason) for r in receipts] == [("m1", "failed", reason), ("m2", "failed", reason)]
