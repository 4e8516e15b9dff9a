"""Webhook delivery end to end: real NATS, PostgreSQL, API and webhooks service, and a local receiver.

Events are published on WGS_EVENTS as the node agents and the API would; instance rows are
written directly. The receiver (aiohttp on 127.0.0.1) can fail, be slow or be down on purpose.
"""

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from nats.js.client import JetStreamContext
from wgs_contracts import subjects
from wgs_contracts.instance_events import (
    EVENT_KINDS,
    ConnectionChanged,
    ConnectionState,
    InstanceEvent,
    MessageContent,
    MessageReceived,
    MessageType,
    QrChanged,
)
from wgs_contracts.messages import InstanceStatus, InstanceStatusChanged, utcnow
from wgs_devstack.services import Service
from wgs_kit.messaging import encode
from wgs_kit.waiting import wait_until

from tests.conftest import WEBHOOK_TIMEOUT_SECONDS as TIMEOUT_SECONDS
from tests.integration.conftest import InstanceRows
from tests.support.api import Tenant, create_tenant, unique_phone
from tests.support.services import frozen_objects
from tests.support.webhooks import Behaviour, Hit, InvalidWebhook, Receiver, verify_webhook

DEADLINE = 30.0


async def publish(js: JetStreamContext, event: InstanceEvent) -> None:
    kind = EVENT_KINDS[type(event).__struct_config__.tag]  # type: ignore[index]
    await js.publish(
        subjects.instance_event(event.instance_id, kind), encode(event), headers={"Nats-Msg-Id": event.event_id}
    )


def ids() -> dict:
    return {"event_id": uuid.uuid4().hex, "generation": 1, "seq": 1, "at": utcnow()}


def message(instance_id: int, tenant_id: int, text: str = "hello") -> MessageReceived:
    return MessageReceived(
        **ids(),
        instance_id=instance_id,
        tenant_id=tenant_id,
        message_id=uuid.uuid4().hex[:12],
        sender="491700000001",
        recipient="491700000002",
        content=MessageContent(type=MessageType.TEXT, text=text),
    )


def qr(instance_id: int, tenant_id: int) -> QrChanged:
    return QrChanged(**ids(), instance_id=instance_id, tenant_id=tenant_id, qr="2@abc")


def connection(instance_id: int, tenant_id: int) -> ConnectionChanged:
    return ConnectionChanged(**ids(), instance_id=instance_id, tenant_id=tenant_id, state=ConnectionState.CONNECTED)


def status(instance_id: int, tenant_id: int) -> InstanceStatusChanged:
    return InstanceStatusChanged(
        instance_id=instance_id, tenant_id=tenant_id, generation=0, node=None, status=InstanceStatus.STARTING
    )


async def endpoint(client: httpx.AsyncClient, tenant: Tenant, url: str, instance_id: int | None = None, **fields):
    path = "/api/webhooks" if instance_id is None else f"/api/instances/{instance_id}/webhooks"
    response = await client.post(path, json={"url": url, **fields}, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def instance_endpoint(
    client: httpx.AsyncClient, instance_rows: InstanceRows, receiver: Receiver, name: str, **fields
) -> tuple[Tenant, int, dict]:
    """A new tenant, one of its instances, and an endpoint of that instance posting to the receiver's `name`."""
    tenant = await create_tenant(client)
    instance_id = await instance_rows.add(tenant.id)
    return tenant, instance_id, await endpoint(client, tenant, receiver.url(name), instance_id, **fields)


async def deliveries(client: httpx.AsyncClient, tenant: Tenant, endpoint_id: int, **params) -> list[dict]:
    response = await client.get(f"/api/webhooks/{endpoint_id}/deliveries", params=params, headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def settled_deliveries(client: httpx.AsyncClient, tenant: Tenant, endpoint_id: int) -> list[dict]:
    """The endpoint's delivery log once no attempt is in flight: the service records an attempt's
    answer just after the receiver has given it."""

    async def settled() -> list[dict] | None:
        log = await deliveries(client, tenant, endpoint_id)
        return None if any(d["status"] == "sending" for d in log) else log

    return await wait_until(settled, DEADLINE, what="no delivery in flight")


async def received(receiver: Receiver, name: str, count: int) -> list[str]:
    async def enough() -> list[str] | None:
        got = receiver.delivered(name)
        return got if len(got) >= count else None

    return await wait_until(enough, DEADLINE, what=f"{count} deliveries on {name}")


async def received_requests(receiver: Receiver, name: str, count: int) -> list[Hit]:
    """The first `count` requests on `name`, once `count` events were delivered there."""
    await received(receiver, name, count)
    return receiver.requests(name)[:count]


# --- tests ----------------------------------------------------------------------------------------


async def test_webhook_is_signed_and_verifies_with_the_documented_receiver(
    client: httpx.AsyncClient, instance_rows: InstanceRows, js: JetStreamContext, webhooks: Service, receiver: Receiver
) -> None:
    tenant, instance_id, created = await instance_endpoint(client, instance_rows, receiver, "signed")
    event = message(instance_id, tenant.id, "hello")
    await publish(js, event)
    hit = (await received_requests(receiver, "signed", 1))[0]

    verify_webhook(created["secret"], hit.headers, hit.body)
    assert hit.headers["webhook-id"] == event.event_id
    assert hit.headers["content-type"] == "application/json"
    assert abs(int(hit.headers["webhook-timestamp"]) - time.time()) < 60
    assert hit.headers["webhook-signature"].startswith("v1,")
    with pytest.raises(InvalidWebhook):
        verify_webhook(created["secret"], hit.headers, hit.body.replace(b"hello", b"hellO"))
    rotated = (await client.post(f"/api/webhooks/{created['id']}/rotate-secret", headers=tenant.headers)).json()
    with pytest.raises(InvalidWebhook):
        verify_webhook(rotated["secret"], hit.headers, hit.body)
    with pytest.raises(InvalidWebhook):
        verify_webhook(created["secret"], hit.headers, hit.body, now=time.time() + 3600)

    assert hit.json == {
        "id": event.event_id,
        "instance": instance_id,
        "timestamp": hit.json["timestamp"],
        "type": "message",
        "data": {
            "id": event.message_id,
            "from": "491700000001",
            "to": "491700000002",
            "type": "text",
            "text": "hello",
        },
    }
    assert hit.json["timestamp"].startswith(event.at.strftime("%Y-%m-%dT%H:%M:%S"))


async def test_during_a_secret_rotation_deliveries_verify_with_the_old_and_the_new_secret(
    client: httpx.AsyncClient, instance_rows: InstanceRows, js: JetStreamContext, webhooks: Service, receiver: Receiver
) -> None:
    """A receiver may switch to the new secret at any time during the grace, and must after it."""
    tenant, instance_id, created = await instance_endpoint(client, instance_rows, receiver, "rotating")
    rotate = f"/api/webhooks/{created['id']}/rotate-secret"
    rotated = (await client.post(rotate, json={"graceSeconds": 3600}, headers=tenant.headers)).json()
    await publish(js, message(instance_id, tenant.id, "during the grace"))
    during = (await received_requests(receiver, "rotating", 1))[0]
    assert len(during.headers["webhook-signature"].split()) == 2
    verify_webhook(rotated["secret"], during.headers, during.body)
    verify_webhook(created["secret"], during.headers, during.body)  # a receiver not switched yet

    ended = (await client.post(rotate, json={"graceSeconds": 0}, headers=tenant.headers)).json()
    await publish(js, message(instance_id, tenant.id, "after it"))
    after = (await received_requests(receiver, "rotating", 2))[1]
    assert len(after.headers["webhook-signature"].split()) == 1
    verify_webhook(ended["secret"], after.headers, after.body)
    for replaced in (created["secret"], rotated["secret"]):
        with pytest.raises(InvalidWebhook):
            verify_webhook(replaced, after.headers, after.body)


async def test_a_delivery_carries_the_endpoints_own_headers_beside_its_signature(
    client: httpx.AsyncClient, instance_rows: InstanceRows, js: JetStreamContext, webhooks: Service, receiver: Receiver
) -> None:
    own = {"X-Api-Key": "k3y", "Authorization": "Bearer receiver-token"}
    tenant, instance_id, created = await instance_endpoint(client, instance_rows, receiver, "gated", headers=own)
    await publish(js, message(instance_id, tenant.id))
    hit = (await received_requests(receiver, "gated", 1))[0]
    assert hit.headers["x-api-key"] == "k3y"
    assert hit.headers["authorization"] == "Bearer receiver-token"
    verify_webhook(created["secret"], hit.headers, hit.body)


async def test_a_test_event_reaches_an_endpoint_whatever_its_filter_signed_and_logged(
    client: httpx.AsyncClient, instance_rows: InstanceRows, webhooks: Service, receiver: Receiver
) -> None:
    tenant, instance_id, created = await instance_endpoint(client, instance_rows, receiver, "probe", events=["qr"])
    tenant_wide = await endpoint(client, tenant, receiver.url("probe-all"))

    sent = await client.post(f"/api/webhooks/{created['id']}/test", headers=tenant.headers)
    assert sent.status_code == 202, sent.text
    queued = sent.json()
    assert queued["eventId"].startswith("test:")
    assert queued["type"] == "webhook.test"
    assert queued["status"] in ("pending", "sending", "delivered")
    hit = (await received_requests(receiver, "probe", 1))[0]
    verify_webhook(created["secret"], hit.headers, hit.body)
    assert hit.headers["webhook-id"] == queued["eventId"]
    assert hit.json == {
        "id": queued["eventId"],
        "instance": instance_id,
        "timestamp": hit.json["timestamp"],
        "type": "webhook.test",
        "data": {"endpointId": created["id"], "message": "A test event: your endpoint is reachable."},
    }
    [logged] = await settled_deliveries(client, tenant, created["id"])
    assert (logged["id"], logged["status"], logged["attempts"], logged["lastStatusCode"]) == (
        queued["id"],
        "delivered",
        1,
        200,
    )

    wide = (await client.post(f"/api/webhooks/{tenant_wide['id']}/test", headers=tenant.headers)).json()
    wide_hit = (await received_requests(receiver, "probe-all", 1))[0]
    verify_webhook(tenant_wide["secret"], wide_hit.headers, wide_hit.body)
    assert (wide_hit.json["id"], wide_hit.json["instance"]) == (wide["eventId"], 0)


async def test_a_test_event_is_refused_for_a_disabled_missing_or_foreign_endpoint(
    client: httpx.AsyncClient, instance_rows: InstanceRows, receiver: Receiver
) -> None:
    tenant, _, created = await instance_endpoint(client, instance_rows, receiver, "probe-off", enabled=False)
    stranger = await create_tenant(client)
    path = f"/api/webhooks/{created['id']}/test"

    disabled = await client.post(path, headers=tenant.headers)
    assert disabled.status_code == 409, disabled.text
    assert disabled.json()["code"] == "conflict"
    assert "disabled" in disabled.json()["error"]
    foreign = await client.post(path, headers=stranger.headers)
    assert foreign.status_code == 404
    assert foreign.json()["code"] == "not_found"
    missing = await client.post("/api/webhooks/999999999/test", headers=tenant.headers)
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    assert await deliveries(client, tenant, created["id"]) == []


async def test_event_filter_and_enabled_flag_are_respected(
    client: httpx.AsyncClient, instance_rows: InstanceRows, js: JetStreamContext, webhooks: Service, receiver: Receiver
) -> None:
    tenant = await create_tenant(client)
    instance_id = await instance_rows.add(tenant.id)
    messages = await endpoint(client, tenant, receiver.url("messages"), instance_id, events=["message"])
    pairing = await endpoint(client, tenant, receiver.url("pairing"), instance_id, events=["qr", "connection"])
    everything = await endpoint(client, tenant, receiver.url("all"), instance_id, events=["*"])
    disabled = await endpoint(client, tenant, receiver.url("disabled"), instance_id, enabled=False)
    events: list[InstanceEvent] = [
        qr(instance_id, tenant.id),
        message(instance_id, tenant.id),
        status(instance_id, tenant.id),
        connection(instance_id, tenant.id),
        message(instance_id, tenant.id),
    ]
    for event in events:
        await publish(js, event)
    assert await received(receiver, "all", 5) == [e.event_id for e in events]
    assert receiver.delivered("messages") == [events[1].event_id, events[4].event_id]
    assert receiver.delivered("pairing") == [events[0].event_id, events[3].event_id]
    types = [h.json["type"] for h in receiver.requests("all")]
    assert types == ["qr", "message", "instance.status", "connection", "message"]
    assert receiver.requests("disabled") == []
    assert await deliveries(client, tenant, disabled["id"]) == []
    assert {d["type"] for d in await deliveries(client, tenant, messages["id"])} == {"message"}
    assert {d["type"] for d in await deliveries(client, tenant, pairing["id"])} == {"qr", "connection"}
    assert len(await deliveries(client, tenant, everything["id"], status="delivered")) == 5


async def test_tenant_endpoint_gets_all_its_instances_and_never_another_tenants(
    client: httpx.AsyncClient, instance_rows: InstanceRows, js: JetStreamContext, webhooks: Service, receiver: Receiver
) -> None:
    tenant, other = await create_tenant(client), await create_tenant(client)
    first, second = await instance_rows.add(tenant.id), await instance_rows.add(tenant.id)
    foreign = await instance_rows.add(other.id)
    await endpoint(client, tenant, receiver.url("tenant"))
    await endpoint(client, other, receiver.url("other"))
    events: list[InstanceEvent] = [
        message(first, tenant.id),
        message(foreign, other.id),
        qr(second, tenant.id),
        message(second, tenant.id),
    ]
    for event in events:
        await publish(js, event)
    assert await received(receiver, "tenant", 3) == [events[0].event_id, events[2].event_id, events[3].event_id]
    assert {h.json["instance"] for h in receiver.requests("tenant")} == {first, second}
    assert await received(receiver, "other", 1) == [events[1].event_id]


async def test_legacy_webhook_field_delivers_signed_events(
    client: httpx.AsyncClient, db, js: JetStreamContext, webhooks: Service, receiver: Receiver
) -> None:
    tenant = await create_tenant(client)
    body = {"phone": unique_phone(), "provider": "sandbox", "webhook": receiver.url("legacy")}
    created = await client.post("/api/instances?wait=0", json=body, headers=tenant.headers)
    assert created.status_code == 202, created.text
    instance_id = created.json()["id"]
    try:
        event = message(instance_id, tenant.id, "from the original gateway")
        await publish(js, event)

        async def got_it() -> Hit | None:
            return next((h for h in receiver.requests("legacy") if h.event_id == event.event_id), None)

        hit = await wait_until(got_it, DEADLINE, what="legacy delivery")
        assert hit.json["type"] == "message"
        assert hit.json["instance"] == instance_id
        assert hit.json["data"]["text"] == "from the original gateway"
        assert hit.json["data"]["from"] == "491700000001"

        listed = (await client.get(f"/api/instances/{instance_id}/webhooks", headers=tenant.headers)).json()
        assert len(listed) == 1
        assert listed[0]["legacy"] is True
        assert listed[0]["events"] == ["*"]
        assert listed[0]["url"] == receiver.url("legacy")
        secret = (await client.get(f"/api/webhooks/{listed[0]['id']}", headers=tenant.headers)).json()["secret"]
        verify_webhook(secret, hit.headers, hit.body)

        deleted = await client.delete(f"/api/webhooks/{listed[0]['id']}", headers=tenant.headers)
        assert deleted.status_code == 204
        instance = (await client.get(f"/api/instances/{instance_id}", headers=tenant.headers)).json()
        assert instance["webhookUrl"] is None
        assert (await client.get(f"/api/instances/{instance_id}/webhooks", headers=tenant.headers)).json() == []
    finally:
        await db.execute("DELETE FROM instances WHERE id = $1", instance_id)


async def test_failing_receiver_gets_every_event_once_in_order(
    client: httpx.AsyncClient, instance_rows: InstanceRows, js: JetStreamContext, webhooks: Service, receiver: Receiver
) -> None:
    tenant, instance_id, created = await instance_endpoint(client, instance_rows, receiver, "flaky")
    receiver.behaviours["flaky"] = Behaviour(statuses=[500, 503, 502])
    events = [message(instance_id, tenant.id, f"m{n}") for n in range(5)]
    for event in events:
        await publish(js, event)
    assert await received(receiver, "flaky", 5) == [e.event_id for e in events]
    ok = [h.event_id for h in receiver.requests("flaky") if h.status == 200]
    assert sorted(ok) == sorted(e.event_id for e in events)  # exactly once each
    # Nothing after a failed delivery was sent before it succeeded (one at a time, in order).
    assert [h.event_id for h in receiver.requests("flaky")[:4]] == [events[0].event_id] * 4
    log = await settled_deliveries(client, tenant, created["id"])
    assert {d["status"] for d in log} == {"delivered"}
    assert sorted(d["attempts"] for d in log) == [1, 1, 1, 1, 4]


async def test_an_unordered_endpoint_is_not_held_back_by_a_delivery_waiting_for_its_retry(
    client: httpx.AsyncClient, instance_rows: InstanceRows, js: JetStreamContext, webhooks: Service, receiver: Receiver
) -> None:
    """The first event is answered 429: its retry comes 3.2 s later (the test schedule's longest
    delay). The unordered endpoint gets the three events after it meanwhile; the ordered one
    gets them only after it, one at a time as ever."""
    tenant = await create_tenant(client)
    instance_id = await instance_rows.add(tenant.id)
    endpoints = {}
    for name, ordered in (("unordered", False), ("ordered", True)):
        receiver.behaviours[name] = Behaviour(statuses=[429], retry_after="60")
        endpoints[name] = await endpoint(client, tenant, receiver.url(name), instance_id, ordered=ordered)
        assert endpoints[name]["ordered"] is ordered
    first, *later = [message(instance_id, tenant.id, f"event {n}") for n in range(4)]
    await publish(js, first)

    async def refused_once() -> bool:
        return all(len(receiver.requests(name)) == 1 for name in endpoints)

    await wait_until(refused_once, DEADLINE, what="the first event refused on both endpoints")
    for event in later:
        await publish(js, event)

    assert await received(receiver, "unordered", 4) == [e.event_id for e in (*later, first)]
    assert await received(receiver, "ordered", 4) == [e.event_id for e in (first, *later)]
    for name in endpoints:  # one at a time: exactly once each, the first refused once
        assert [h.event_id for h in receiver.requests(name) if h.status == 429] == [first.event_id]
        assert len(receiver.requests(name)) == 5
        log = await settled_deliveries(client, tenant, endpoints[name]["id"])
        assert sorted(d["attempts"] for d in log) == [1, 1, 1, 2]


async def test_dead_deliveries_of_a_time_range_are_recovered_in_pages_and_delivered(
    client: httpx.AsyncClient,
    db,
    js: JetStreamContext,
    webhooks: Service,
    receiver: Receiver,
    instance_rows: InstanceRows,
) -> None:
    """A receiver that refused three events (400: dead at once, as after an outage longer than the
    retries) gets them again, oldest first, once they are recovered two at a time."""
    tenant, instance_id, created = await instance_endpoint(client, instance_rows, receiver, "outage")
    receiver.behaviours["outage"] = Behaviour(statuses=[400, 400, 400])
    since = (await db.fetchval("SELECT now()")).isoformat()
    events = [message(instance_id, tenant.id, f"lost {n}") for n in range(3)]
    for event in events:
        await publish(js, event)

    async def all_dead() -> bool:
        return [d["status"] for d in await settled_deliveries(client, tenant, created["id"])] == ["dead"] * 3

    await wait_until(all_dead, DEADLINE, what="three dead deliveries")
    recover = f"/api/webhooks/{created['id']}/recover"
    first = await client.post(recover, json={"since": since, "limit": 2}, headers=tenant.headers)
    assert first.status_code == 202, first.text
    assert first.json() == {"redelivered": 2, "more": True}
    second = await client.post(recover, json={"since": since}, headers=tenant.headers)
    assert second.json() == {"redelivered": 1, "more": False}
    assert await received(receiver, "outage", 3) == [e.event_id for e in events]
    log = await settled_deliveries(client, tenant, created["id"])
    assert [(d["status"], d["attempts"]) for d in log] == [("delivered", 2)] * 3
    again = await client.post(recover, json={"since": since}, headers=tenant.headers)
    assert again.json() == {"redelivered": 0, "more": False}  # nothing dead is left


async def test_a_failing_ordered_endpoint_s_backlog_is_dead_after_the_retry_period(
    client: httpx.AsyncClient, instance_rows: InstanceRows, js: JetStreamContext, webhooks: Service, receiver: Receiver
) -> None:
    """Every event is refused with 500. The first is retried for the test schedule's total (6.2 s), then
    dead; the two created with it reach the head of the queue once their own retry period is over (it
    counts from their creation), so each gets one attempt and is dead: a backlog behind a receiver that
    never recovers does not grow."""
    tenant, instance_id, created = await instance_endpoint(client, instance_rows, receiver, "never-up")
    receiver.behaviours["never-up"] = Behaviour(statuses=[500] * 20)
    events = [message(instance_id, tenant.id, f"m{n}") for n in range(3)]
    for event in events:
        await publish(js, event)

    async def all_dead() -> list[dict] | None:
        log = await settled_deliveries(client, tenant, created["id"])
        return log if [d["status"] for d in log] == ["dead"] * 3 else None

    log = await wait_until(all_dead, DEADLINE, what="three dead deliveries")
    assert [(d["eventId"], d["attempts"]) for d in reversed(log)] == [
        (events[0].event_id, 6),
        (events[1].event_id, 1),
        (events[2].event_id, 1),
    ]
    assert [h.event_id for h in receiver.requests("never-up")] == [events[0].event_id] * 6 + [
        e.event_id for e in events[1:]
    ]


async def test_a_redelivery_waits_for_the_ordered_endpoint_s_delivery_in_flight(
    client: httpx.AsyncClient,
    db,
    instance_rows: InstanceRows,
    js: JetStreamContext,
    webhooks: Service,
    receiver: Receiver,
) -> None:
    """An older delivery redelivered while a newer one is being sent goes out only once that one is
    answered: an ordered endpoint has one delivery in flight, whatever a redelivery put back."""
    tenant, instance_id, created = await instance_endpoint(client, instance_rows, receiver, "in-flight")
    behaviour = receiver.behaviours["in-flight"] = Behaviour(statuses=[400])
    first, second = message(instance_id, tenant.id, "first"), message(instance_id, tenant.id, "second")
    await publish(js, first)

    async def dead() -> list[dict]:
        return await deliveries(client, tenant, created["id"], status="dead")

    [refused] = await wait_until(dead, DEADLINE, what="the first delivery dead")
    behaviour.delay = 0.8  # each answer from now on: the second is in flight that long (the timeout is 1 s)
    await publish(js, second)

    async def second_in_flight() -> bool:
        return any(h.event_id == second.event_id for h in receiver.requests("in-flight"))

    await wait_until(second_in_flight, DEADLINE, what="the second delivery sent")
    path = f"/api/webhooks/{created['id']}/deliveries/{refused['id']}/redeliver"
    assert (await client.post(path, headers=tenant.headers)).status_code == 202
    sending = await db.fetchval(
        "SELECT status FROM webhook_deliveries WHERE endpoint_id = $1 AND event_id = $2",
        created["id"],
        second.event_id,
    )
    assert sending == "sending"  # the redelivery came while the second was in flight

    assert await received(receiver, "in-flight", 2) == [second.event_id, first.event_id]
    _, sent, resent = receiver.requests("in-flight")
    assert resent.event_id == first.event_id
    assert resent.at >= sent.at + behaviour.delay  # only after the second was answered


async def test_receiver_down_across_a_webhooks_restart_gets_everything_afterwards(
    client: httpx.AsyncClient, db, js: JetStreamContext, webhooks: Service, instance_rows: InstanceRows
) -> None:
    tenant = await create_tenant(client)
    instance_id = await instance_rows.add(tenant.id)
    receiver = Receiver()  # not listening yet
    created = await endpoint(client, tenant, receiver.url("down"), instance_id)
    events = [message(instance_id, tenant.id, f"m{n}") for n in range(3)]
    for event in events[:2]:
        await publish(js, event)

    async def failed_attempts() -> int:
        return await db.fetchval(
            "SELECT coalesce(max(attempts), 0) FROM webhook_deliveries WHERE endpoint_id = $1", created["id"]
        )

    async def both_fanned_out_and_failing() -> bool:
        count = await db.fetchval("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1", created["id"])
        return count == 2 and await failed_attempts() > 0

    await wait_until(both_fanned_out_and_failing, DEADLINE, what="a failed attempt")
    await webhooks.kill9()
    await publish(js, events[2])  # published while the service is down
    before = await failed_attempts()
    webhooks.start()

    async def retried_after_restart() -> bool:
        return await failed_attempts() > before

    await wait_until(retried_after_restart, DEADLINE, what="an attempt after the restart")
    await receiver.start()
    try:
        assert await received(receiver, "down", 3) == [e.event_id for e in events]
    finally:
        await receiver.stop()
    assert {d["status"] for d in await settled_deliveries(client, tenant, created["id"])} == {"delivered"}


async def test_slow_endpoint_does_not_delay_another(
    client: httpx.AsyncClient,
    db,
    js: JetStreamContext,
    webhooks: Service,
    receiver: Receiver,
    instance_rows: InstanceRows,
) -> None:
    tenant = await create_tenant(client)
    instance_id = await instance_rows.add(tenant.id)
    slow = await endpoint(client, tenant, receiver.url("slow"), instance_id)
    await endpoint(client, tenant, receiver.url("fast"), instance_id)
    receiver.behaviours["slow"] = Behaviour(delay=TIMEOUT_SECONDS * 3)
    events = [message(instance_id, tenant.id, f"m{n}") for n in range(3)]
    for event in events:
        await publish(js, event)
    assert await received(receiver, "fast", 3) == [e.event_id for e in events]
    # The slow endpoint's first attempt has not even timed out yet, and it got nothing else.
    assert {h.event_id for h in receiver.requests("slow")} == {events[0].event_id}
    first = await db.fetchrow(
        "SELECT a.latency_ms FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id"
        " WHERE d.endpoint_id = $1 ORDER BY a.id LIMIT 1",
        slow["id"],
    )
    assert first is not None
    assert first["latency_ms"] is None
    receiver.behaviours["slow"].delay = 0
    assert await received(receiver, "slow", 3) == [e.event_id for e in events]
    log = await deliveries(client, tenant, slow["id"])
    oldest = log[-1]
    assert oldest["attempts"] >= 2
    detail = (await client.get(f"/api/webhooks/{slow['id']}/deliveries/{oldest['id']}", headers=tenant.headers)).json()
    assert detail["attemptLog"][0]["error"] == f"timeout after {TIMEOUT_SECONDS:g}s"


async def test_status_codes_decide_between_retry_and_dead(
    client: httpx.AsyncClient, instance_rows: InstanceRows, js: JetStreamContext, webhooks: Service, receiver: Receiver
) -> None:
    tenant = await create_tenant(client)
    instance_id = await instance_rows.add(tenant.id)
    names = {"bad": [400] * 9, "gone": [410] * 9, "busy": [429], "broken": [500] * 9}
    created = {name: await endpoint(client, tenant, receiver.url(name), instance_id) for name in names}
    for name, statuses in names.items():
        receiver.behaviours[name] = Behaviour(statuses=list(statuses), retry_after="1" if name == "busy" else None)
    await publish(js, message(instance_id, tenant.id))

    async def settled() -> dict[str, dict] | None:
        rows = {name: await deliveries(client, tenant, e["id"]) for name, e in created.items()}
        if all(len(r) == 1 and r[0]["status"] in ("delivered", "dead") for r in rows.values()):
            return {name: r[0] for name, r in rows.items()}
        return None

    final = await wait_until(settled, DEADLINE, what="every delivery settled")
    assert (final["bad"]["status"], final["bad"]["attempts"], final["bad"]["lastStatusCode"]) == ("dead", 1, 400)
    assert (final["gone"]["status"], final["gone"]["attempts"], final["gone"]["lastStatusCode"]) == ("dead", 1, 410)
    assert (final["busy"]["status"], final["busy"]["attempts"]) == ("delivered", 2)
    assert final["busy"]["deliveredAt"] is not None
    assert (final["broken"]["status"], final["broken"]["attempts"]) == ("dead", 6)
    assert final["broken"]["lastError"].startswith("HTTP 500")
    assert final["broken"]["nextAttemptAt"] is None
    busy = receiver.requests("busy")
    assert busy[1].at - busy[0].at >= 0.9  # Retry-After: 1 honoured (the schedule alone says 0.2 s)
    assert len(receiver.requests("bad")) == len(receiver.requests("gone")) == 1


async def test_delivery_log_and_redelivery(
    client: httpx.AsyncClient, instance_rows: InstanceRows, js: JetStreamContext, webhooks: Service, receiver: Receiver
) -> None:
    tenant, stranger = await create_tenant(client), await create_tenant(client)
    instance_id = await instance_rows.add(tenant.id)
    created = await endpoint(client, tenant, receiver.url("log"), instance_id)
    receiver.behaviours["log"] = Behaviour(statuses=[400])
    event = message(instance_id, tenant.id, "again")
    await publish(js, event)

    async def dead() -> list[dict]:
        return await deliveries(client, tenant, created["id"], status="dead")

    [delivery] = await wait_until(dead, DEADLINE, what="a dead delivery")
    assert delivery["eventId"] == event.event_id
    assert delivery["type"] == "message"
    assert (delivery["attempts"], delivery["lastStatusCode"], delivery["lastError"]) == (1, 400, "HTTP 400: nope")
    assert delivery["lastLatencyMs"] >= 0
    assert delivery["deliveredAt"] is None
    assert await deliveries(client, tenant, created["id"], status="delivered") == []
    path = f"/api/webhooks/{created['id']}/deliveries/{delivery['id']}"
    detail = (await client.get(path, headers=tenant.headers)).json()
    assert detail["payload"]["id"] == event.event_id
    assert detail["payload"]["data"]["text"] == "again"
    assert [(a["attempt"], a["statusCode"]) for a in detail["attemptLog"]] == [(1, 400)]
    assert (await client.get(path, headers=stranger.headers)).status_code == 404
    assert (await client.post(f"{path}/redeliver", headers=stranger.headers)).status_code == 404
    missing = f"/api/webhooks/{created['id']}/deliveries/999999999"
    assert (await client.get(missing, headers=tenant.headers)).status_code == 404

    redelivered = await client.post(f"{path}/redeliver", headers=tenant.headers)
    assert redelivered.status_code == 202, redelivered.text
    assert redelivered.json()["status"] in ("pending", "sending", "delivered")

    async def delivered() -> dict | None:
        view = (await client.get(path, headers=tenant.headers)).json()
        return view if view["status"] == "delivered" else None

    view = await wait_until(delivered, DEADLINE, what="redelivered")
    assert [(a["attempt"], a["statusCode"]) for a in view["attemptLog"]] == [(1, 400), (2, 200)]
    assert view["attempts"] == 2
    assert view["deliveredAt"] is not None
    assert receiver.delivered("log") == [event.event_id]


@contextlib.asynccontextmanager
async def commit_modes(db) -> AsyncIterator[Callable[[], Awaitable[set[tuple[str, str]]]]]:
    """While the block runs, each INSERT and UPDATE of webhook deliveries notes whether its session's
    commits wait for the WAL flush (`synchronous_commit`); yields a reader of what was noted."""
    await db.execute("CREATE TABLE test_commit_modes (operation text, mode text)")
    await db.execute(
        "CREATE FUNCTION test_note_commit_mode() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " INSERT INTO test_commit_modes VALUES (TG_OP, current_setting('synchronous_commit')); RETURN NULL; END $$"
    )
    await db.execute(
        "CREATE TRIGGER test_note_commit_mode AFTER INSERT OR UPDATE ON webhook_deliveries"
        " FOR EACH STATEMENT EXECUTE FUNCTION test_note_commit_mode()"
    )

    async def noted() -> set[tuple[str, str]]:
        return {(r["operation"], r["mode"]) for r in await db.fetch("SELECT * FROM test_commit_modes")}

    try:
        yield noted
    finally:
        await db.execute("DROP TRIGGER test_note_commit_mode ON webhook_deliveries")
        await db.execute("DROP FUNCTION test_note_commit_mode()")
        await db.execute("DROP TABLE test_commit_modes")


async def test_fan_out_waits_for_its_wal_flush_and_the_delivery_bookkeeping_does_not(
    client: httpx.AsyncClient,
    db,
    js: JetStreamContext,
    webhooks: Service,
    receiver: Receiver,
    instance_rows: InstanceRows,
) -> None:
    """Decision 45: deliveries are on disk before their events are acked; claims and attempts are not waited for."""
    tenant, instance_id, created = await instance_endpoint(client, instance_rows, receiver, "flush")
    async with commit_modes(db) as noted:
        await publish(js, message(instance_id, tenant.id))
        await received(receiver, "flush", 1)
        assert [d["status"] for d in await settled_deliveries(client, tenant, created["id"])] == ["delivered"]
        assert await noted() == {("INSERT", "on"), ("UPDATE", "off")}


async def test_the_webhooks_service_freezes_its_start_up_heap(webhooks: Service) -> None:
    """Full collections skip what start-up made (decision 36)."""
    assert await frozen_objects(webhooks) > 10_000
