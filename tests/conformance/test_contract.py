"""The provider contract every provider image must meet (`docs/provider-contract.md`), without pairing."""

import asyncio
import json
import re
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from wgs_kit.waiting import wait_until

from tests.conformance.client import ProviderUnderTest

PEER = "491700000002"
TEXT = {"type": "text", "text": "hello"}
PAIR_CODE = re.compile(r"[A-Z0-9]{4}-[A-Z0-9]{4}")


def send(content: Any = TEXT, **body: Any) -> dict[str, Any]:
    """A `POST /messages` body: id `m` to `PEER` with `content`, changed by `body` (None drops a key)."""
    return {
        key: value for key, value in {"id": "m", "to": PEER, "content": content, **body}.items() if value is not None
    }


INVALID_SENDS: list[tuple[dict[str, Any], str]] = [
    (send(id=None), "id"),
    (send(id=""), "id"),
    (send(to=None), "to"),
    (send(to="+491700000002"), "to"),
    (send(to="49170000000x"), "to"),
    (send("hello"), "content"),
    (send({"type": "sticker"}), "content.type"),
    (send({"type": "text"}), "content.text"),
    (send({"type": "text", "text": ""}), "content.text"),
    (send({"type": "image"}), "content.media"),
    (send({"type": "image", "media": {"mime_type": "image/png"}}), "content.media"),
    (send({"type": "image", "media": {"base64": "aGk="}}), "content.media.mime_type"),
    (send({"type": "document", "media": {"mime_type": "a/b", "base64": "%%%"}}), "content.media.base64"),
    (send({"type": "document", "media": {"mime_type": "a/b", "url": "ftp://example.com/a"}}), "content.media.url"),
    (send({"type": "location"}), "content.location"),
    (send({"type": "location", "location": {"latitude": "north", "longitude": 0}}), "content.location.latitude"),
    (send({"type": "location", "location": {"latitude": 90.5, "longitude": 0}}), "content.location.latitude"),
    (send({"type": "location", "location": {"latitude": 0, "longitude": 180.5}}), "content.location.longitude"),
    (send({"type": "reaction"}), "content.reaction"),
    (send({"type": "reaction", "reaction": {"message_id": "", "emoji": "👍"}}), "content.reaction.message_id"),
    (send({"type": "reaction", "reaction": {"message_id": "x", "emoji": 1}}), "content.reaction.emoji"),
]
BODY_LIMIT = 16 * 2**20


def parse_at(value: str) -> datetime:
    """An event's `at`, which must be ISO-8601 in UTC."""
    at = datetime.fromisoformat(value)
    assert at.utcoffset() == timedelta(0), value
    return at


async def test_health_has_the_contract_shape_and_a_fresh_instance_is_unpaired(provider: ProviderUnderTest) -> None:
    health = await provider.health()
    assert health["state"] in {"starting", "qr"}
    assert health["phone_id"] is None
    assert (await provider.wait_state("qr"))["phone_id"] is None


@pytest.mark.provider_env(WGS_SANDBOX_QR_SECONDS="1")
async def test_qr_is_a_raw_string_that_rotates_with_qr_events(provider: ProviderUnderTest) -> None:
    await provider.wait_state("qr")
    response = await provider.get("/qr")
    assert response.status_code == 200, response.text
    first = response.json()
    assert isinstance(first["qr"], str)
    assert first["qr"]
    assert isinstance(first["expires_in"], int)
    assert first["expires_in"] > 0

    async def rotated() -> str | None:
        response = await provider.get("/qr")
        qr = response.json()["qr"] if response.status_code == 200 else None
        return qr if qr != first["qr"] else None

    second = await wait_until(rotated, timeout=60, what="a new QR")
    announced = [event["data"]["qr"] for event in (await provider.events())["events"] if event["type"] == "qr"]
    assert first["qr"] in announced
    assert second in announced


@pytest.mark.provider_env(WGS_SANDBOX_START_SECONDS="3")
async def test_while_starting_qr_is_404_and_pair_code_503_with_a_reason(provider: ProviderUnderTest) -> None:
    qr = await provider.get("/qr")
    code = await provider.post("/pair-code", {"phone": provider.phone})
    still_starting = (await provider.health())["state"] == "starting"
    if provider.is_sandbox:
        assert still_starting
    if still_starting:  # both answers left while starting, before the first QR
        assert (qr.status_code, qr.json()["error"]) == (404, "no QR yet"), qr.text
        assert (code.status_code, code.json()["error"]) == (503, "not ready"), code.text
        assert "reason" in qr.json()
        assert "reason" in code.json()
    await provider.wait_state("qr")
    assert (await provider.get("/qr")).status_code == 200
    assert (await provider.post("/pair-code", {"phone": provider.phone})).status_code == 200


async def test_pair_codes_are_eight_characters_and_unique(provider: ProviderUnderTest) -> None:
    await provider.wait_state("qr")
    codes = []
    for _ in range(3):
        response = await provider.post("/pair-code", {"phone": provider.phone})
        assert response.status_code == 200, response.text
        codes.append(response.json()["code"])
    assert all(PAIR_CODE.fullmatch(code) for code in codes), codes
    assert len(set(codes)) == len(codes)
    for bad in (None, {}, {"phone": ""}, {"phone": "+491700000001"}, {"phone": "4917abc00001"}):  # None: no body
        response = await provider.post("/pair-code", bad)
        assert (response.status_code, response.json().get("field")) == (422, "phone"), (bad, response.text)


async def test_send_while_not_connected_is_503_and_sends_nothing(provider: ProviderUnderTest) -> None:
    await provider.wait_state("qr")
    response = await provider.post("/messages", {"id": "m1", "to": PEER, "content": TEXT})
    assert response.status_code == 503
    assert response.json()["error"] == "Client not connected"
    assert not [event for event in (await provider.events())["events"] if event["type"] == "message.status"]


async def test_invalid_sends_are_422_naming_the_field(provider: ProviderUnderTest) -> None:
    await provider.wait_state("qr")
    for body, field in INVALID_SENDS:
        response = await provider.post("/messages", body)
        assert (response.status_code, response.json().get("field")) == (422, field), (body, response.text)
        assert isinstance(response.json()["error"], str)


async def test_bad_event_queries_are_422_naming_the_parameter(provider: ProviderUnderTest) -> None:
    await provider.wait_state("qr")
    for name in ("after", "wait"):
        for value in ("x", "-1"):
            response = await provider.get("/events", **{name: value})
            assert (response.status_code, response.json().get("field")) == (422, name), (name, value, response.text)


async def test_a_batch_of_sends_is_answered_per_item_or_refused_whole(provider: ProviderUnderTest) -> None:
    """The batch form of `POST /messages` is optional: each item answered as alone, or 4xx sending nothing."""
    await provider.wait_state("qr")
    batch = [{"id": "b1", "to": PEER, "content": TEXT}, {"id": "b2", "to": "12ab", "content": TEXT}]
    response = await provider.post("/messages", {"batch": batch})
    if response.status_code == 200:
        results = response.json()["results"]
        assert [(r["status"], r["body"].get("field")) for r in results] == [(503, None), (422, "to")]
        assert results[0]["body"]["error"] == "Client not connected"
    else:
        assert 400 <= response.status_code < 500, response.text
    assert not [event for event in (await provider.events())["events"] if event["type"] == "message.status"]


async def test_events_are_in_seq_order_and_long_poll_returns_within_the_wait(provider: ProviderUnderTest) -> None:
    await provider.wait_state("qr")
    page = await provider.events()
    assert any(event["type"] == "qr" for event in page["events"])
    for event in page["events"]:
        assert isinstance(event["type"], str)
        assert isinstance(event["data"], dict)
        parse_at(event["at"])
    last = page["last_seq"]
    started = time.monotonic()
    quiet = await provider.events(after=last, wait=1)
    elapsed = time.monotonic() - started
    assert elapsed < 5
    assert quiet["events"] or elapsed >= 0.9

    poll = asyncio.create_task(provider.events(after=last, wait=20))
    started = time.monotonic()
    assert (await provider.post("/logout")).status_code == 200
    woken = await asyncio.wait_for(poll, 10)
    assert time.monotonic() - started < 5
    assert woken["events"]
    assert woken["events"][0]["seq"] > last


async def test_ack_is_accepted_and_the_sequence_goes_on(provider: ProviderUnderTest) -> None:
    await provider.wait_state("qr")
    last = await provider.last_seq()
    assert last > 0
    response = await provider.post("/events/ack", {"seq": last})
    assert response.status_code == 200, response.text
    response = await provider.post("/events/ack", {"seq": "x"})
    assert (response.status_code, response.json().get("field")) == (422, "seq")
    assert (await provider.post("/logout")).status_code == 200
    event = await provider.wait_event("qr", after=last)
    assert event["seq"] > last
    if provider.is_sandbox:  # the contract allows dropping acknowledged events; the sandbox does
        assert all(event["seq"] > last for event in (await provider.events())["events"])


async def test_logout_starts_a_new_qr_cycle(provider: ProviderUnderTest) -> None:
    await provider.wait_state("qr")
    before = (await provider.get("/qr")).json()["qr"]
    last = await provider.last_seq()
    response = await provider.post("/logout")
    assert (response.status_code, response.json()) == (200, {"state": "qr"})
    event = await provider.wait_event("qr", after=last)
    assert event["data"]["qr"] != before
    assert (await provider.wait_state("qr"))["phone_id"] is None


async def test_transport_errors(provider: ProviderUnderTest) -> None:
    """Section 2: 404, 405 with `Allow`, 400, 411; each with an `error`."""
    errors = [await provider.get("/no-such-call")]
    assert errors[-1].status_code == 404
    for method, path, allowed in [("DELETE", "/health", "GET"), ("GET", "/messages", "POST")]:
        errors.append(response := await provider.http.request(method, path))
        assert response.status_code == 405, (method, path)
        assert allowed in {m.strip().upper() for m in response.headers.get("Allow", "").split(",")}, response.headers
    for body in (b"{not json", b"[]"):
        errors.append(await provider.http.post("/messages", content=body, headers={"Content-Type": "application/json"}))
        assert errors[-1].status_code == 400, body
    assert all(isinstance(response.json()["error"], str) for response in errors)
    chunked = b"POST /events/ack HTTP/1.1\r\nHost: provider\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    assert await provider.raw_status(chunked) == 411


async def test_a_16_mib_body_is_taken_and_a_larger_one_is_413_then_closed(provider: ProviderUnderTest) -> None:
    """Section 1, body limit: the larger one is answered without reading its body."""
    document = send({"type": "document", "media": {"mime_type": "application/octet-stream", "base64": ""}})
    room = BODY_LIMIT - len(json.dumps(document))
    document["id"] += "m" * (room % 4)  # the base64 takes the rest, in whole quads
    document["content"]["media"]["base64"] = "A" * (room - room % 4)
    body = json.dumps(document).encode()
    assert len(body) == BODY_LIMIT
    response = await provider.http.post("/messages", content=body, headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()["error"]) == (503, "Client not connected"), response.text[:200]
    huge = b"POST /messages HTTP/1.1\r\nHost: provider\r\nContent-Length: 1073741824\r\n\r\n"
    assert await provider.raw_status(huge, then_closed=True) == 413


async def test_reaching_qr_emits_connection_and_a_restart_keeps_events_and_seqs(provider: ProviderUnderTest) -> None:
    """Sections 3, 5 and 7: every state change emits `connection`; the unacked outbox and the seq counter
    survive a restart, which starts a new QR cycle."""
    await provider.wait_state("qr")
    event = await provider.wait_event("connection", after=0, where=lambda data: data["state"] == "qr")
    assert event["data"]["phone_id"] is None
    assert "reason" in event["data"]
    before = await provider.events()

    await provider.restart()

    last = before["last_seq"]
    again = await provider.wait_event("connection", after=last, where=lambda data: data["state"] == "qr")
    qr = await provider.wait_event("qr", after=last)
    assert again["data"]["phone_id"] is None
    assert qr["data"]["qr"] not in [event["data"]["qr"] for event in before["events"] if event["type"] == "qr"]
    assert (await provider.events())["events"][: len(before["events"])] == before["events"]
