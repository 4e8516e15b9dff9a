"""The provider contract every provider image must meet (`docs/provider-contract.md`), without pairing."""

import asyncio
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
INVALID_SENDS: list[tuple[dict[str, Any], str]] = [
    ({"id": "m", "content": TEXT}, "to"),
    ({"id": "m", "to": "+491700000002", "content": TEXT}, "to"),
    ({"id": "m", "to": "49170000000x", "content": TEXT}, "to"),
    ({"id": "m", "to": PEER, "content": {"type": "sticker"}}, "content.type"),
    ({"id": "m", "to": PEER, "content": {"type": "text"}}, "content.text"),
    ({"id": "m", "to": PEER, "content": {"type": "image"}}, "content.media"),
    ({"id": "m", "to": PEER, "content": {"type": "image", "media": {"mime_type": "image/png"}}}, "content.media"),
    (
        {"id": "m", "to": PEER, "content": {"type": "document", "media": {"mime_type": "a/b", "base64": "%%%"}}},
        "content.media.base64",
    ),
    (
        {"id": "m", "to": PEER, "content": {"type": "location", "location": {"latitude": 90.5, "longitude": 0}}},
        "content.location.latitude",
    ),
    (
        {"id": "m", "to": PEER, "content": {"type": "location", "location": {"latitude": 0, "longitude": 180.5}}},
        "content.location.longitude",
    ),
    ({"id": "m", "to": PEER, "content": {"type": "reaction"}}, "content.reaction"),
]


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
async def test_qr_is_404_with_a_reason_before_the_first_one(provider: ProviderUnderTest) -> None:
    response = await provider.get("/qr")
    still_starting = (await provider.health())["state"] == "starting"
    if provider.is_sandbox:
        assert still_starting
    if still_starting:  # no QR can have been shown before the answer
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "no QR yet"
        assert "reason" in response.json()
    await provider.wait_state("qr")
    assert (await provider.get("/qr")).status_code == 200


async def test_pair_codes_are_eight_characters_and_unique(provider: ProviderUnderTest) -> None:
    await provider.wait_state("qr")
    codes = []
    for _ in range(3):
        response = await provider.post("/pair-code", {"phone": provider.phone})
        assert response.status_code == 200, response.text
        codes.append(response.json()["code"])
    assert all(PAIR_CODE.fullmatch(code) for code in codes), codes
    assert len(set(codes)) == len(codes)
    for bad in ({}, {"phone": ""}, {"phone": "+491700000001"}, {"phone": "4917abc00001"}):
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
    assert (await provider.get("/no-such-call")).status_code == 404
    assert (await provider.http.delete("/health")).status_code == 405
    response = await provider.http.post("/messages", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert isinstance(response.json()["error"], str)
    huge = b"POST /messages HTTP/1.1\r\nHost: provider\r\nContent-Length: 1073741824\r\n\r\n"
    assert await provider.raw_status(huge) == 413
