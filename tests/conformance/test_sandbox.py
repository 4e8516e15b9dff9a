"""Sandbox-only calls: the simulated phone (`/sandbox/scan`) and network (`/sandbox/deliver`, `/sandbox/receipt`)."""

import pytest

from tests.conformance.client import ProviderUnderTest

pytestmark = pytest.mark.sandbox_only
PEER = "491700000002"
TEXT = {"type": "text", "text": "hello"}


async def statuses_of(provider: ProviderUnderTest, message_id: str, after: int = 0) -> list[str]:
    """The `message.status` statuses announced for `message_id` after seq `after`."""
    events = (await provider.events(after=after))["events"]
    return [
        e["data"]["status"] for e in events if e["type"] == "message.status" and e["data"]["message_id"] == message_id
    ]


async def test_scanning_the_qr_pairs_and_announces_the_connection(provider: ProviderUnderTest) -> None:
    event = await provider.pair()
    assert event["data"] == {"state": "connected", "phone_id": provider.phone, "reason": None}
    health = await provider.health()
    assert (health["state"], health["phone_id"]) == ("connected", provider.phone)
    qr = await provider.get("/qr")
    assert (qr.status_code, qr.json()) == (409, {"error": "already connected"})
    assert (await provider.post("/pair-code", {"phone": provider.phone})).status_code == 409
    assert (await provider.post("/sandbox/scan", {"qr": "anything"})).status_code == 409


async def test_scan_refuses_an_unknown_qr_or_code(provider: ProviderUnderTest) -> None:
    await provider.wait_state("qr")
    response = await provider.post("/sandbox/scan", {"qr": "not-the-current-qr"})
    assert (response.status_code, response.json()["field"]) == (422, "qr")
    response = await provider.post("/sandbox/scan", {"code": "AAAA-BBBB"})
    assert (response.status_code, response.json()["field"]) == (422, "code")
    assert (await provider.health())["state"] == "qr"


async def test_a_pair_code_pairs_when_scanned(provider: ProviderUnderTest) -> None:
    await provider.wait_state("qr")
    code = (await provider.post("/pair-code", {"phone": provider.phone})).json()["code"]
    response = await provider.post("/sandbox/scan", {"code": code})
    assert (response.status_code, response.json()) == (200, {"state": "connected", "phone_id": provider.phone})


async def test_a_send_after_pairing_is_sent_once_per_id(provider: ProviderUnderTest) -> None:
    await provider.pair()
    last = await provider.last_seq()
    message = {"id": "m1", "to": PEER, "content": TEXT}
    for _ in range(2):
        response = await provider.post("/messages", message)
        assert (response.status_code, response.json()) == (200, {"id": "m1", "status": "sent"})
    events = (await provider.events(after=last))["events"]
    assert [(e["type"], e["data"]) for e in events] == [
        ("message.status", {"message_id": "m1", "status": "sent", "reason": None}),
        ("sandbox.outbound", {"id": "m1", "to": PEER, "from": provider.phone, "content": TEXT}),
    ]
    response = await provider.post("/messages", {**message, "id": "m2", "content": {"type": "text"}})
    assert (response.status_code, response.json()["field"]) == (422, "content.text")


async def test_sends_come_in_batches(provider: ProviderUnderTest) -> None:
    await provider.pair()
    last = await provider.last_seq()
    batch = [
        {"id": "m1", "to": PEER, "content": TEXT},
        {"id": "m2", "to": PEER, "content": {"type": "text"}},
        {"id": "m1", "to": PEER, "content": TEXT},
    ]
    response = await provider.post("/messages", {"batch": batch})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["status"], r["body"].get("field")) for r in results] == [(200, None), (422, "content.text"), (200, None)]
    assert results[0]["body"] == results[2]["body"] == {"id": "m1", "status": "sent"}  # the repeat: sent once
    events = (await provider.events(after=last))["events"]
    assert [(e["type"], e["data"].get("message_id", e["data"].get("id"))) for e in events] == [
        ("message.status", "m1"),
        ("sandbox.outbound", "m1"),
    ]
    response = await provider.post("/messages", {"batch": [{"id": f"x{i}"} for i in range(1001)]})
    assert (response.status_code, response.json()["field"]) == (422, "batch")


async def test_a_delivered_message_is_announced_then_read(provider: ProviderUnderTest) -> None:
    delivery = {"id": "x1", "from": PEER, "content": TEXT}
    await provider.wait_state("qr")
    response = await provider.post("/sandbox/deliver", delivery)
    assert (response.status_code, response.json()) == (503, {"error": "Client not connected"})
    await provider.pair()
    last = await provider.last_seq()
    for _ in range(2):
        response = await provider.post("/sandbox/deliver", delivery)
        assert (response.status_code, response.json()) == (200, {"status": "delivered"})
    events = (await provider.events(after=last))["events"]
    assert [(e["type"], e["data"]) for e in events] == [
        ("message", {"message_id": "x1", "sender": PEER, "recipient": provider.phone, "content": TEXT}),
        ("sandbox.receipt", {"id": "x1", "to": PEER, "from": provider.phone, "status": "read"}),
    ]


async def test_receipts_move_a_status_forward_only(provider: ProviderUnderTest) -> None:
    await provider.pair()
    assert (await provider.post("/messages", {"id": "m1", "to": PEER, "content": TEXT})).status_code == 200
    for status, now in [("delivered", "delivered"), ("read", "read"), ("delivered", "read"), ("read", "read")]:
        response = await provider.post("/sandbox/receipt", {"id": "m1", "status": status})
        assert (response.status_code, response.json()) == (200, {"id": "m1", "status": now})
    assert await statuses_of(provider, "m1") == ["sent", "delivered", "read"]
    assert (await provider.post("/sandbox/receipt", {"id": "unknown", "status": "read"})).status_code == 404


async def test_deliveries_and_receipts_come_in_batches(provider: ProviderUnderTest) -> None:
    await provider.pair()
    assert (await provider.post("/messages", {"id": "m1", "to": PEER, "content": TEXT})).status_code == 200
    last = await provider.last_seq()
    deliveries = [{"id": "x1", "from": PEER, "content": TEXT}, {"id": "x2", "from": PEER, "content": {"type": "text"}}]
    response = await provider.post("/sandbox/deliver", {"batch": deliveries})
    assert response.status_code == 200
    assert [(r["status"], r["body"].get("field")) for r in response.json()["results"]] == [
        (200, None),
        (422, "content.text"),
    ]
    receipts = [{"id": "m1", "status": "delivered"}, {"id": "unknown", "status": "read"}]
    response = await provider.post("/sandbox/receipt", {"batch": receipts})
    assert [r["status"] for r in response.json()["results"]] == [200, 404]
    events = (await provider.events(after=last))["events"]
    assert [e["type"] for e in events] == ["message", "sandbox.receipt", "message.status"]
    response = await provider.post("/sandbox/receipt", {"batch": []})
    assert (response.status_code, response.json()["field"]) == (422, "batch")


async def test_pairing_seq_and_sent_ids_survive_docker_restart(provider: ProviderUnderTest) -> None:
    await provider.pair()
    message = {"id": "m1", "to": PEER, "content": TEXT}
    assert (await provider.post("/messages", message)).status_code == 200
    acked = 2
    assert (await provider.post("/events/ack", {"seq": acked})).status_code == 200
    last = await provider.last_seq()

    await provider.restart()

    health = await provider.wait_state("connected")
    assert health["phone_id"] == provider.phone
    events = (await provider.events())["events"]
    assert events[0]["seq"] == acked + 1
    assert [(e["seq"], e["type"], e["data"]["state"]) for e in events if e["seq"] > last] == [
        (last + 1, "connection", "connected")
    ]
    response = await provider.post("/messages", message)
    assert (response.status_code, response.json()) == (200, {"id": "m1", "status": "sent"})
    response = await provider.post("/sandbox/receipt", {"id": "m1", "status": "delivered"})
    assert (response.status_code, response.json()) == (200, {"id": "m1", "status": "delivered"})
    assert await statuses_of(provider, "m1", after=last) == ["delivered"]


async def test_idle_memory_stays_small(provider: ProviderUnderTest) -> None:
    await provider.wait_state("qr")
    [stats] = await provider.container.stats(stream=False)
    memory = stats["memory_stats"]["stats"]
    anonymous = memory.get("anon", memory.get("total_rss"))  # cgroup v2, v1: the container's own pages
    assert 0 < anonymous <= 40 * 2**20, memory
