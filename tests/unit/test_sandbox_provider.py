"""The sandbox provider's logic in-process: `SandboxProvider.handle` called directly, state in a tmp folder."""

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from wgs_kit.waiting import wait_until
from wgs_sandbox import state as state_module
from wgs_sandbox import store
from wgs_sandbox.http import Request
from wgs_sandbox.provider import SandboxProvider

PHONE = "491700000001"
PEER = "491700000002"
TEXT = {"type": "text", "text": "hello"}
PNG = "iVBORw0KGgo="


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make(tmp_path: Path, clock: Clock):
    def make(**options: Any) -> SandboxProvider:
        return SandboxProvider(**{"instance_id": "7", "data_dir": tmp_path, "phone": PHONE, "clock": clock, **options})

    return make


@pytest.fixture
def provider(make) -> SandboxProvider:
    return make()


async def call(provider: SandboxProvider, method: str, path: str, body: Any = None, **query: Any) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    response = await provider.handle(Request(method, path, {k: [str(v)] for k, v in query.items()}, {}, raw))
    return response.status, response.body


async def events(provider: SandboxProvider, after: int = 0) -> list[dict]:
    status, body = await call(provider, "GET", "/events", after=after)
    assert status == 200
    return body["events"]


async def last_seq(provider: SandboxProvider) -> int:
    return (await call(provider, "GET", "/events", after=0))[1]["last_seq"]


async def pair(provider: SandboxProvider) -> None:
    qr = (await call(provider, "GET", "/qr"))[1]["qr"]
    assert await call(provider, "POST", "/sandbox/scan", {"qr": qr}) == (200, {"state": "connected", "phone_id": PHONE})


async def send(provider: SandboxProvider, message_id: str = "m1", content: Any = TEXT, to: Any = PEER):
    return await call(provider, "POST", "/messages", {"id": message_id, "to": to, "content": content})


# --- states, QR and pairing -----------------------------------------------------------------------


async def test_fresh_instance_shows_a_qr_and_announces_it(provider):
    status, health = await call(provider, "GET", "/health")
    assert status == 200
    assert {k: health[k] for k in ("state", "reason", "phone_id")} == {"state": "qr", "reason": None, "phone_id": None}
    status, qr = await call(provider, "GET", "/qr")
    assert status == 200
    assert qr["expires_in"] == 20
    assert [(e["seq"], e["type"], e["data"]) for e in await events(provider)] == [
        (1, "connection", {"state": "qr", "phone_id": None, "reason": None}),
        (2, "qr", {"qr": qr["qr"]}),
    ]


async def test_starting_has_no_qr_and_no_pair_code_until_ready(make, clock):
    provider = make(start_seconds=5)
    assert (await call(provider, "GET", "/health"))[1]["state"] == "starting"
    assert await call(provider, "GET", "/qr") == (404, {"error": "no QR yet", "reason": "provider is starting"})
    status, body = await call(provider, "POST", "/pair-code", {"phone": PHONE})
    assert (status, body["error"]) == (503, "not ready")
    assert await events(provider) == []
    clock.now += 5
    assert (await call(provider, "GET", "/health"))[1]["state"] == "qr"
    assert (await call(provider, "GET", "/qr"))[0] == 200


async def test_qr_rotates_each_period_with_a_qr_event(make, clock):
    provider = make(qr_seconds=3)
    first = (await call(provider, "GET", "/qr"))[1]
    clock.now += 2.5
    assert (await call(provider, "GET", "/qr"))[1] == {"qr": first["qr"], "expires_in": 1}
    clock.now += 0.5
    second = (await call(provider, "GET", "/qr"))[1]
    assert second["qr"] != first["qr"]
    assert [e["data"]["qr"] for e in await events(provider) if e["type"] == "qr"] == [first["qr"], second["qr"]]


async def test_run_rotates_the_qr_without_requests(tmp_path):
    provider = SandboxProvider(instance_id="7", data_dir=tmp_path, qr_seconds=0.05)
    ticker = asyncio.create_task(provider.run())
    try:

        async def rotated() -> bool:
            return sum(e["type"] == "qr" for e in provider.outbox) >= 3

        await wait_until(rotated, timeout=5, what="three QR events")
    finally:
        ticker.cancel()


async def test_scan_of_the_current_qr_pairs(provider):
    await pair(provider)
    health = (await call(provider, "GET", "/health"))[1]
    assert (health["state"], health["phone_id"], health["reason"]) == ("connected", PHONE, None)
    assert (await events(provider))[-1]["data"] == {"state": "connected", "phone_id": PHONE, "reason": None}
    assert await call(provider, "GET", "/qr") == (409, {"error": "already connected"})
    assert (await call(provider, "POST", "/pair-code", {"phone": PHONE}))[0] == 409
    assert (await call(provider, "POST", "/sandbox/scan", {"qr": "x"}))[0] == 409


async def test_scan_refuses_an_expired_qr_and_unknown_codes(provider, clock):
    old = (await call(provider, "GET", "/qr"))[1]["qr"]
    clock.now += 20
    assert await call(provider, "POST", "/sandbox/scan", {"qr": old}) == (
        422,
        {"error": "qr: does not match the current QR", "field": "qr"},
    )
    assert (await call(provider, "POST", "/sandbox/scan", {"code": "AAAA-BBBB"}))[1]["field"] == "code"
    assert (await call(provider, "POST", "/sandbox/scan", {}))[1]["field"] == "qr"
    assert (await call(provider, "GET", "/health"))[1]["state"] == "qr"


async def test_pair_codes_are_unique_and_pair_by_scan(make):
    provider = make(phone="")
    codes = {(await call(provider, "POST", "/pair-code", {"phone": PHONE}))[1]["code"] for _ in range(5)}
    assert len(codes) == 5
    assert all(len(c) == 9 and c[4] == "-" and c.replace("-", "").isalnum() and c.isupper() for c in codes)
    code = next(iter(codes))
    status, body = await call(provider, "POST", "/sandbox/scan", {"code": code.lower()})
    assert (status, body) == (200, {"state": "connected", "phone_id": "sandbox-7"})


@pytest.mark.parametrize("phone", [None, "", "+491700000001", "4917a0000001", "12345", "1" * 16, 491700000001])
async def test_pair_code_needs_a_phone_of_digits(provider, phone):
    status, body = await call(provider, "POST", "/pair-code", {} if phone is None else {"phone": phone})
    assert (status, body["field"]) == (422, "phone")


async def test_logout_unlinks_and_starts_a_new_qr_cycle(provider):
    await pair(provider)
    seq = await last_seq(provider)
    assert await call(provider, "POST", "/logout") == (200, {"state": "qr"})
    new = await events(provider, after=seq)
    assert [(e["type"], e["data"].get("state")) for e in new] == [
        ("connection", "disconnected"),
        ("connection", "qr"),
        ("qr", None),
    ]
    assert new[0]["data"] == {"state": "disconnected", "phone_id": PHONE, "reason": "logged out"}
    health = (await call(provider, "GET", "/health"))[1]
    assert (health["state"], health["phone_id"], health["reason"]) == ("qr", None, "logged out")
    assert (await call(provider, "GET", "/qr"))[1]["qr"] == new[2]["data"]["qr"]
    assert (await send(provider, "after-logout"))[0] == 503


# --- sending --------------------------------------------------------------------------------------


async def test_send_while_not_connected_is_503(provider):
    assert await send(provider) == (503, {"error": "Client not connected"})
    assert [e["type"] for e in await events(provider)] == ["connection", "qr"]


INVALID_SENDS = [
    ({"to": PEER, "content": TEXT}, "id"),
    ({"id": "m", "content": TEXT}, "to"),
    ({"id": "m", "to": "+491700000002", "content": TEXT}, "to"),
    ({"id": "m", "to": "49170000000x", "content": TEXT}, "to"),
    ({"id": "m", "to": PEER}, "content"),
    ({"id": "m", "to": PEER, "content": {"type": "sticker"}}, "content.type"),
    ({"id": "m", "to": PEER, "content": {"type": "text"}}, "content.text"),
    ({"id": "m", "to": PEER, "content": {"type": "text", "text": ""}}, "content.text"),
    ({"id": "m", "to": PEER, "content": {"type": "image"}}, "content.media"),
    ({"id": "m", "to": PEER, "content": {"type": "image", "media": {"mime_type": "image/png"}}}, "content.media"),
    ({"id": "m", "to": PEER, "content": {"type": "image", "media": {"base64": PNG}}}, "content.media.mime_type"),
    (
        {"id": "m", "to": PEER, "content": {"type": "document", "media": {"mime_type": "a/b", "base64": "%%%"}}},
        "content.media.base64",
    ),
    (
        {"id": "m", "to": PEER, "content": {"type": "image", "media": {"mime_type": "a/b", "url": "ftp://x"}}},
        "content.media.url",
    ),
    ({"id": "m", "to": PEER, "content": {"type": "location"}}, "content.location"),
    (
        {"id": "m", "to": PEER, "content": {"type": "location", "location": {"latitude": 91, "longitude": 0}}},
        "content.location.latitude",
    ),
    (
        {"id": "m", "to": PEER, "content": {"type": "location", "location": {"latitude": 0, "longitude": -181}}},
        "content.location.longitude",
    ),
    (
        {"id": "m", "to": PEER, "content": {"type": "location", "location": {"latitude": "1", "longitude": 2}}},
        "content.location.latitude",
    ),
    ({"id": "m", "to": PEER, "content": {"type": "reaction"}}, "content.reaction"),
    (
        {"id": "m", "to": PEER, "content": {"type": "reaction", "reaction": {"emoji": "x"}}},
        "content.reaction.message_id",
    ),
]


@pytest.mark.parametrize(("body", "field"), INVALID_SENDS)
async def test_invalid_sends_name_the_field_connected_or_not(provider, body, field):
    status, answer = await call(provider, "POST", "/messages", body)
    assert (status, answer["field"]) == (422, field)
    assert answer["error"].startswith(field + ":")
    await pair(provider)
    assert await call(provider, "POST", "/messages", body) == (status, answer)


async def test_send_emits_sent_and_outbound_and_is_idempotent(provider):
    await pair(provider)
    seq = await last_seq(provider)
    assert await send(provider) == (200, {"id": "m1", "status": "sent"})
    new = await events(provider, after=seq)
    assert [e["seq"] for e in new] == [seq + 1, seq + 2]
    assert [(e["type"], e["data"]) for e in new] == [
        ("message.status", {"message_id": "m1", "status": "sent", "reason": None}),
        ("sandbox.outbound", {"id": "m1", "to": PEER, "from": PHONE, "content": TEXT}),
    ]
    assert await send(provider, content={"type": "text", "text": "changed"}) == (200, {"id": "m1", "status": "sent"})
    await call(provider, "POST", "/logout")
    assert await send(provider) == (200, {"id": "m1", "status": "sent"})
    assert [e["type"] for e in await events(provider, after=seq + 2)] == ["connection", "connection", "qr"]


async def test_each_content_type_is_sent_reduced_to_its_part(provider):
    await pair(provider)
    contents = [
        {"type": "image", "text": "dropped", "media": {"mime_type": "image/png", "base64": PNG, "caption": "c"}},
        {"type": "document", "media": {"mime_type": "application/pdf", "url": "https://x/y.pdf", "filename": "y.pdf"}},
        {"type": "location", "location": {"latitude": -90, "longitude": 180.0, "name": "pole"}, "extra": 1},
        {"type": "reaction", "reaction": {"message_id": "m0", "emoji": ""}},
    ]
    for number, content in enumerate(contents):
        assert (await send(provider, f"c{number}", content))[0] == 200
    outbound = [e["data"]["content"] for e in await events(provider) if e["type"] == "sandbox.outbound"]
    assert outbound == [
        {"type": "image", "media": {"mime_type": "image/png", "base64": PNG, "caption": "c"}},
        contents[1],
        {"type": "location", "location": {"latitude": -90, "longitude": 180.0, "name": "pole"}},
        contents[3],
    ]


# --- the simulated network: deliveries and receipts -----------------------------------------------


async def test_deliver_emits_the_message_then_a_read_receipt_once(provider):
    delivery = {"id": "x1", "from": PEER, "content": TEXT}
    assert await call(provider, "POST", "/sandbox/deliver", delivery) == (503, {"error": "Client not connected"})
    await pair(provider)
    seq = await last_seq(provider)
    assert await call(provider, "POST", "/sandbox/deliver", delivery) == (200, {"status": "delivered"})
    assert await call(provider, "POST", "/sandbox/deliver", delivery) == (200, {"status": "delivered"})
    assert [(e["type"], e["data"]) for e in await events(provider, after=seq)] == [
        ("message", {"message_id": "x1", "sender": PEER, "recipient": PHONE, "content": TEXT}),
        ("sandbox.receipt", {"id": "x1", "to": PEER, "from": PHONE, "status": "read"}),
    ]
    bad = await call(provider, "POST", "/sandbox/deliver", {"id": "x2", "from": PEER, "content": {"type": "text"}})
    assert (bad[0], bad[1]["field"]) == (422, "content.text")


async def test_a_paired_phone_takes_deliveries_while_it_starts_again(make, clock):
    await pair(make())
    restarted = make(start_seconds=5)  # the same state folder: the instance's container restarted
    assert (await call(restarted, "GET", "/health"))[1]["state"] == "starting"
    seq = await last_seq(restarted)
    delivery = {"id": "x1", "from": PEER, "content": TEXT}
    assert await call(restarted, "POST", "/sandbox/deliver", delivery) == (200, {"status": "delivered"})
    assert [e["type"] for e in await events(restarted, after=seq)] == ["message", "sandbox.receipt"]


async def test_a_linked_phone_starting_again_answers_sends_not_ready_an_unlinked_one_not_connected(make, clock):
    """`not ready`: the gateway queues the send until the session is back; `Client not connected`: pairing
    is needed, the send is refused."""
    unlinked = make()
    assert await send(unlinked) == (503, {"error": "Client not connected"})
    await pair(unlinked)
    restarted = make(start_seconds=5)  # the same state folder: the instance's container restarted
    assert await send(restarted) == (503, {"error": "not ready", "reason": "the linked session is starting"})
    clock.now += 5
    assert await send(restarted) == (200, {"id": "m1", "status": "sent"})


async def test_receipt_statuses_only_move_forward_once_each(provider):
    await pair(provider)
    await send(provider, "a")
    await send(provider, "b")
    seq = await last_seq(provider)

    async def receipt(message_id: str, status: str, **extra: str) -> tuple[int, Any]:
        return await call(provider, "POST", "/sandbox/receipt", {"id": message_id, "status": status, **extra})

    assert await receipt("a", "delivered") == (200, {"id": "a", "status": "delivered"})
    assert await receipt("a", "delivered") == (200, {"id": "a", "status": "delivered"})
    assert await receipt("a", "read") == (200, {"id": "a", "status": "read"})
    assert await receipt("a", "delivered") == (200, {"id": "a", "status": "read"})
    assert await receipt("a", "failed") == (200, {"id": "a", "status": "read"})
    assert await receipt("b", "failed", reason="blocked") == (200, {"id": "b", "status": "failed"})
    assert await receipt("b", "read") == (200, {"id": "b", "status": "failed"})
    assert [e["data"] for e in await events(provider, after=seq)] == [
        {"message_id": "a", "status": "delivered", "reason": None},
        {"message_id": "a", "status": "read", "reason": None},
        {"message_id": "b", "status": "failed", "reason": "blocked"},
    ]
    assert (await receipt("nope", "read"))[0] == 404
    assert (await receipt("a", "sent"))[1]["field"] == "status"


async def test_a_batch_of_deliveries_answers_each_item_as_alone_and_saves_once(provider, make):
    await pair(provider)
    seq = await last_seq(provider)
    appends: list[bytes] = []
    append = provider.store.append

    def counted_append(records: bytes) -> None:
        appends.append(records)
        append(records)

    provider.store.append = counted_append
    batch = [
        {"id": "x1", "from": PEER, "content": TEXT},
        {"id": "x2", "from": PEER, "content": {"type": "text"}},
        "not an object",
        {"id": "x1", "from": PEER, "content": TEXT},
        {"id": "x3", "from": PEER, "content": TEXT},
    ]
    status, body = await call(provider, "POST", "/sandbox/deliver", {"batch": batch})
    assert status == 200
    assert [r["status"] for r in body["results"]] == [200, 422, 400, 200, 200]
    assert body["results"][1]["body"]["field"] == "content.text"
    assert [
        (e["type"], e["data"].get("message_id", e["data"].get("id"))) for e in await events(provider, after=seq)
    ] == [
        ("message", "x1"),
        ("sandbox.receipt", "x1"),
        ("message", "x3"),
        ("sandbox.receipt", "x3"),
    ]
    assert len(appends) == 1  # the whole batch in one journal append, before the answer
    assert set(make().delivered) == {"x1", "x3"}


async def test_concurrent_requests_share_one_journal_append_made_on_the_loop(provider):
    """Group commit without a worker thread (decision 40): the requests that wait while a flush
    runs go into the next append together, and each append runs on the loop's own thread."""
    await pair(provider)
    appends: list[tuple[int, int]] = []  # (records' bytes, thread) of each append
    append = provider.store.append

    def recorded_append(records: bytes) -> None:
        appends.append((len(records), threading.get_ident()))
        append(records)

    provider.store.append = recorded_append
    answers = await asyncio.gather(*(send(provider, f"m{n}") for n in range(10)))
    assert [status for status, _ in answers] == [200] * 10
    assert 1 <= len(appends) <= 2  # the first send's own append, then the nine that waited for it
    assert {thread for _, thread in appends} == {threading.get_ident()}


async def test_a_batch_of_receipts_moves_each_status_forward(provider):
    await pair(provider)
    await send(provider, "a")
    await send(provider, "b")
    seq = await last_seq(provider)
    receipts = [{"id": "a", "status": "read"}, {"id": "b", "status": "delivered"}, {"id": "nope", "status": "read"}]
    status, body = await call(provider, "POST", "/sandbox/receipt", {"batch": receipts})
    assert status == 200
    assert body["results"] == [
        {"status": 200, "body": {"id": "a", "status": "read"}},
        {"status": 200, "body": {"id": "b", "status": "delivered"}},
        {"status": 404, "body": {"error": "unknown message id", "field": "id"}},
    ]
    assert [e["data"]["status"] for e in await events(provider, after=seq)] == ["delivered", "read", "delivered"]


@pytest.mark.parametrize("batch", [[], "x", [{}] * 1001])
async def test_a_malformed_batch_is_422_and_changes_nothing(provider, batch):
    await pair(provider)
    seq = await last_seq(provider)
    status, body = await call(provider, "POST", "/sandbox/deliver", {"batch": batch})
    assert (status, body["field"]) == (422, "batch")
    assert await events(provider, after=seq) == []


# --- events: long-poll, ack, bounds ----------------------------------------------------------------


async def test_events_long_poll_waits_then_answers_empty(provider):
    seq = await last_seq(provider)
    started = time.monotonic()
    assert await call(provider, "GET", "/events", after=seq, wait=0.2) == (200, {"events": [], "last_seq": seq})
    assert 0.2 <= time.monotonic() - started < 2


async def test_events_long_poll_wakes_on_a_new_event(provider):
    seq = await last_seq(provider)
    poll = asyncio.create_task(call(provider, "GET", "/events", after=seq, wait=20))
    await asyncio.sleep(0)  # let the poll start waiting
    started = time.monotonic()
    await call(provider, "POST", "/logout")
    status, body = await asyncio.wait_for(poll, 5)
    assert time.monotonic() - started < 2
    assert status == 200
    assert body["events"][0]["seq"] == seq + 1


@pytest.mark.parametrize("query", [{"after": -1}, {"after": "x"}, {"after": "1.5"}, {"wait": "nan"}, {"wait": -2}])
async def test_events_query_must_be_non_negative_numbers(provider, query):
    status, body = await call(provider, "GET", "/events", **query)
    assert (status, body["field"]) == (422, next(iter(query)))


async def test_ack_drops_events_up_to_seq(provider):
    await call(provider, "POST", "/logout")
    seq = await last_seq(provider)
    assert seq == 3
    assert await call(provider, "POST", "/events/ack", {"seq": 2}) == (200, {"acked": 2, "pending": 1})
    assert [e["seq"] for e in await events(provider)] == [3]
    assert await call(provider, "POST", "/events/ack", {"seq": 2}) == (200, {"acked": 2, "pending": 1})
    assert await call(provider, "POST", "/events/ack", {"seq": 9}) == (200, {"acked": 9, "pending": 0})
    assert await call(provider, "GET", "/events", after=0) == (200, {"events": [], "last_seq": 3})
    for bad in ({}, {"seq": -1}, {"seq": "3"}, {"seq": True}):
        assert (await call(provider, "POST", "/events/ack", bad))[1]["field"] == "seq"


@pytest.fixture
def disk_flushes(monkeypatch) -> list[int]:
    """The descriptors of every fdatasync made from now on (still made)."""
    flushes: list[int] = []
    fdatasync = store.os.fdatasync

    def counted(fd: int) -> None:
        flushes.append(fd)
        fdatasync(fd)

    monkeypatch.setattr(store.os, "fdatasync", counted)
    return flushes


async def test_an_ack_is_written_without_waiting_for_the_disk(provider, disk_flushes):
    """An ack lost in a crash of the machine only replays events (deduplicated by id), so it is
    written to the journal without an fdatasync; the next change's fdatasync covers it."""
    await pair(provider)
    seq = await last_seq(provider)
    flushed = len(disk_flushes)

    assert await call(provider, "POST", "/events/ack", {"seq": seq}) == (200, {"acked": seq, "pending": 0})
    assert await events(provider) == []
    assert len(disk_flushes) == flushed  # neither the ack nor the read after it waited for the disk
    journal = provider.store.folder / store.journal_file(provider.store.generation)
    assert store.read_journal(journal, provider.store.generation)[0][-1] == [["a", seq]]  # yet it is written

    await send(provider, "m1")
    assert len(disk_flushes) == flushed + 1  # the send waits for its own fdatasync, as before


async def test_an_ack_with_other_changes_waiting_is_saved_durably(make, clock, disk_flushes):
    provider = make(qr_seconds=3)
    seq = await last_seq(provider)
    flushed = len(disk_flushes)
    clock.now += 3  # the ack's request brings the next QR, an event: it must be on disk before any answer

    assert (await call(provider, "POST", "/events/ack", {"seq": seq}))[0] == 200
    assert len(disk_flushes) == flushed + 1
    kept = (await events(make()))[0]
    assert (kept["seq"], kept["type"]) == (seq + 1, "qr")


async def test_outbox_and_remembered_ids_are_bounded(provider, monkeypatch):
    monkeypatch.setattr(state_module, "MAX_OUTBOX", 3)
    monkeypatch.setattr(state_module, "MAX_REMEMBERED", 2)
    await pair(provider)
    for number in range(3):
        await send(provider, f"m{number}")
    assert [e["seq"] for e in await events(provider)] == [7, 8, 9]
    assert list(provider.sent) == ["m1", "m2"]


# --- persistence -----------------------------------------------------------------------------------


async def test_state_survives_a_new_provider_on_the_same_folder(make, tmp_path):
    first = make()
    await pair(first)
    await send(first, "m1")
    await call(first, "POST", "/sandbox/deliver", {"id": "x1", "from": PEER, "content": TEXT})
    await call(first, "POST", "/events/ack", {"seq": 2})
    seq = await last_seq(first)
    assert sorted(p.name for p in tmp_path.iterdir()) == [store.journal_file(1)]

    second = make()
    health = (await call(second, "GET", "/health"))[1]
    assert (health["state"], health["phone_id"]) == ("connected", PHONE)
    kept = await events(second)
    assert kept[0]["seq"] == 3
    assert kept[-1]["seq"] == seq + 1
    assert kept[-1]["data"] == {"state": "connected", "phone_id": PHONE, "reason": None}
    assert await send(second, "m1") == (200, {"id": "m1", "status": "sent"})
    assert await call(second, "POST", "/sandbox/deliver", {"id": "x1", "from": PEER, "content": TEXT}) == (
        200,
        {"status": "delivered"},
    )
    assert await last_seq(second) == seq + 1
    assert (await call(second, "POST", "/sandbox/receipt", {"id": "m1", "status": "read"}))[0] == 200


async def test_unpaired_restart_gets_a_new_qr_and_continues_the_sequence(make):
    first = make()
    old = (await call(first, "GET", "/qr"))[1]["qr"]
    second = make()
    new = await events(second, after=2)
    assert [(e["seq"], e["type"]) for e in new] == [(3, "connection"), (4, "qr")]
    assert new[1]["data"]["qr"] != old
    assert (await call(second, "POST", "/sandbox/scan", {"qr": old}))[0] == 422


async def test_a_corrupt_state_file_refuses_to_start(tmp_path):
    (tmp_path / store.LEGACY_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="Expecting property name"):
        SandboxProvider(instance_id="7", data_dir=tmp_path)
    (tmp_path / store.LEGACY_FILE).write_text("[]")
    with pytest.raises(ValueError, match="not a version 1"):
        SandboxProvider(instance_id="7", data_dir=tmp_path)
    (tmp_path / store.SNAPSHOT_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="Expecting property name"):
        SandboxProvider(instance_id="7", data_dir=tmp_path)
    (tmp_path / store.SNAPSHOT_FILE).write_text('{"version": 3, "journal": 1, "state": {}}')
    with pytest.raises(ValueError, match="snapshot version 3, this provider reads 2"):
        SandboxProvider(instance_id="7", data_dir=tmp_path)


# --- routing ---------------------------------------------------------------------------------------


async def test_routing_errors(provider):
    assert await call(provider, "GET", "/nope") == (404, {"error": "no route /nope"})
    response = await provider.handle(Request("DELETE", "/qr"))
    assert (response.status, response.headers) == (405, {"Allow": "GET"})
    assert await call(provider, "POST", "/messages", b"{bad") == (400, {"error": "body is not valid JSON"})
    assert await call(provider, "POST", "/messages", b"[1]") == (400, {"error": "body must be a JSON object"})


async def test_a_read_receipt_overtaking_the_delivery_one_reports_delivered_first(provider):
    await pair(provider)
    await send(provider, "c")
    seq = await last_seq(provider)
    assert await call(provider, "POST", "/sandbox/receipt", {"id": "c", "status": "read"}) == (
        200,
        {"id": "c", "status": "read"},
    )
    assert await call(provider, "POST", "/sandbox/receipt", {"id": "c", "status": "delivered"}) == (
        200,
        {"id": "c", "status": "read"},
    )
    assert [e["data"]["status"] for e in await events(provider, after=seq)] == ["delivered", "read"]
