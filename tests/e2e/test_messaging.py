"""Pairing and messaging between sandbox instances through every service, on a real Docker engine."""

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from datetime import datetime

import aiodocker
import httpx
import msgspec
import nats
import pytest
from nats.js.api import DeliverPolicy
from nats.js.client import JetStreamContext
from wgs_contracts import subjects
from wgs_contracts.instance_events import MessageReceived, ProviderSends, ProviderSendsReply
from wgs_devstack.docker_engine import DockerEngine
from wgs_devstack.services import Service
from wgs_kit.messaging import decode, encode
from wgs_kit.waiting import wait_until
from wgs_node_agent.network import ROUTE_RETRY_SECONDS

from tests.e2e.conftest import NODE
from tests.support.api import Tenant, create_tenant
from tests.support.sandbox import connected, connection_is, history, pair_up, reaches, running_sandbox
from tests.support.webhooks import Hit, Receiver, verify_webhook

pytestmark = pytest.mark.docker
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY_PNG = base64.b64encode(PNG_MAGIC + b"\x00" * 16).decode()


@pytest.fixture
async def pair(client: httpx.AsyncClient, node_agent: Service) -> AsyncIterator[tuple[Tenant, dict, Tenant, dict]]:
    """Two sandbox instances of two tenants, both running (not yet paired)."""
    tenant_a, tenant_b = await create_tenant(client), await create_tenant(client)
    a, b = await running_sandbox(client, tenant_a), await running_sandbox(client, tenant_b)
    yield tenant_a, a, tenant_b, b
    for tenant, instance in ((tenant_a, a), (tenant_b, b)):
        await client.delete(f"/api/instances/{instance['id']}", headers=tenant.headers)


@pytest.fixture
async def paired(
    client: httpx.AsyncClient, pair: tuple[Tenant, dict, Tenant, dict]
) -> tuple[Tenant, dict, Tenant, dict]:
    """The two instances of `pair`, both paired."""
    tenant_a, a, tenant_b, b = pair
    for tenant, instance in ((tenant_a, a), (tenant_b, b)):
        await pair_up(client, tenant, instance["id"])
    return pair


async def test_pair_by_qr_and_by_code_then_message_a_to_b(
    client: httpx.AsyncClient, pair: tuple[Tenant, dict, Tenant, dict], migrated: dict[str, str]
) -> None:
    tenant_a, a, tenant_b, b = pair
    await connection_is(client, tenant_a, a["id"], "qr")  # the provider is up and shows a QR
    unpaired = await client.post(
        f"/api/instances/{a['id']}/send", json={"to": b["phoneNumber"], "text": "hi"}, headers=tenant_a.headers
    )
    assert unpaired.status_code == 503, unpaired.text
    assert unpaired.json()["error"] == "Client not connected"
    assert unpaired.json()["code"] == "unavailable"

    for accept in ("*/*", "application/json, text/plain, */*"):  # curl's, and axios's default: the PNG
        png = await client.get(f"/api/instances/{a['id']}/qr", headers={**tenant_a.headers, "Accept": accept})
        assert png.status_code == 200, png.text
        assert png.headers["content-type"] == "image/png"
        assert png.content.startswith(PNG_MAGIC)
    as_json = (
        await client.get(f"/api/instances/{a['id']}/qr", headers={**tenant_a.headers, "Accept": "application/json"})
    ).json()
    assert as_json["raw"]
    assert base64.b64decode(as_json["base64"]).startswith(PNG_MAGIC)

    scanned = await client.post(f"/api/instances/{a['id']}/sandbox/scan", headers=tenant_a.headers)
    assert scanned.status_code == 200, scanned.text
    view_a = await connected(client, tenant_a, a["id"])
    assert view_a["phoneId"] == a["phoneNumber"]
    after = await client.get(f"/api/instances/{a['id']}/qr", headers=tenant_a.headers)
    assert after.status_code == 409
    assert after.json() == {"error": "already connected", "code": "conflict"}  # the provider's, with its code

    await connection_is(client, tenant_b, b["id"], "qr")
    code = await client.post(
        f"/api/instances/{b['id']}/pair-code", json={"phone": b["phoneNumber"]}, headers=tenant_b.headers
    )
    assert code.status_code == 200, code.text
    entered = await client.post(
        f"/api/instances/{b['id']}/sandbox/scan", json={"code": code.json()["code"]}, headers=tenant_b.headers
    )
    assert entered.status_code == 200, entered.text
    await connected(client, tenant_b, b["id"])

    nc = await nats.connect(migrated["NATS_URL"])
    inbox = await nc.subscribe(subjects.instance_event(b["id"], "message"))
    try:
        sent = await client.post(
            f"/api/instances/{a['id']}/send", json={"to": b["phoneNumber"], "text": "hello B"}, headers=tenant_a.headers
        )
        assert sent.status_code == 200, sent.text
        assert sent.json()["status"] == "ok"
        received = msgspec.json.decode((await inbox.next_msg(timeout=30)).data, type=MessageReceived)
    finally:
        await nc.close()
    assert received.sender == a["phoneNumber"]
    assert received.recipient == b["phoneNumber"]
    assert received.content.text == "hello B"
    assert received.tenant_id == tenant_b.id
    message = await reaches(client, tenant_a, a["id"], sent.json()["id"], "read")
    assert {"sent", "delivered", "read"} <= {h["status"] for h in message["history"]}
    assert message["status"] == "read"

    for body in (
        {
            "to": b["phoneNumber"],
            "type": "image",
            "media": {"base64": TINY_PNG, "mimeType": "image/png"},
            "caption": "pic",
        },
        {
            "to": b["phoneNumber"],
            "type": "location",
            "location": {"latitude": 52.52, "longitude": 13.4, "name": "Berlin"},
        },
        {"to": b["phoneNumber"], "type": "reaction", "reaction": {"messageId": sent.json()["id"], "emoji": "👍"}},
        {
            "to": b["phoneNumber"],
            "type": "document",
            "media": {"url": "http://127.0.0.1/doc.pdf", "mimeType": "application/pdf"},
        },
    ):
        response = await client.post(f"/api/instances/{a['id']}/send", json=body, headers=tenant_a.headers)
        assert response.status_code == 200, response.text
        await reaches(client, tenant_a, a["id"], response.json()["id"], "delivered")


async def test_message_to_a_number_outside_the_sandbox_fails_with_a_reason(
    client: httpx.AsyncClient, pair: tuple[Tenant, dict, Tenant, dict]
) -> None:
    tenant_a, a, _, _ = pair
    await pair_up(client, tenant_a, a["id"])
    sent = await client.post(
        f"/api/instances/{a['id']}/send", json={"to": "15550001111", "text": "anyone?"}, headers=tenant_a.headers
    )
    assert sent.status_code == 200, sent.text
    message = await reaches(client, tenant_a, a["id"], sent.json()["id"], "failed")
    failed = next(h for h in message["history"] if h["status"] == "failed")
    assert "not on the sandbox network" in failed["reason"]
    # No sandbox instance has the number (the API's directory says so): it fails at once, and does
    # not hold up the instance's other events for the window a restarting recipient is waited for.
    at = {h["status"]: datetime.fromisoformat(h["at"]) for h in message["history"]}
    assert (at["failed"] - at["sent"]).total_seconds() < ROUTE_RETRY_SECONDS


async def test_concurrent_sends_go_together_and_each_is_answered_and_delivered(
    client: httpx.AsyncClient, paired: tuple[Tenant, dict, Tenant, dict], migrated: dict[str, str]
) -> None:
    """Sends waiting for one instance go to its agent as one request and to its provider as one call."""
    tenant_a, a, _, b = paired
    nc = await nats.connect(migrated["NATS_URL"])
    together = await nc.subscribe("wgs.rpc.node.*.sends")  # a copy of each request (it never answers)
    try:
        responses = await asyncio.gather(
            *(
                client.post(
                    f"/api/instances/{a['id']}/send",
                    json={"to": b["phoneNumber"], "text": f"n{i}"},
                    headers=tenant_a.headers,
                )
                for i in range(20)
            )
        )
        assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses]
        batch = decode((await together.next_msg(timeout=5)).data, ProviderSends)
        assert batch.instance_id == a["id"]
        assert len(batch.bodies) > 1
    finally:
        await nc.close()
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 20
    for message_id in ids:
        await reaches(client, tenant_a, a["id"], message_id, "delivered")


async def test_sends_for_an_instance_the_node_does_not_run_are_404_each(
    node_agent: Service, migrated: dict[str, str]
) -> None:
    nc = await nats.connect(migrated["NATS_URL"])
    try:
        sends = ProviderSends(instance_id=2_000_000_000, bodies=[b"{}", b"{}"])
        reply = await nc.request(subjects.provider_sends(NODE), encode(sends), timeout=10)
    finally:
        await nc.close()
    replies = decode(reply.data, ProviderSendsReply).replies
    assert [(r.status, json.loads(r.body)["error"]) for r in replies] == [
        (404, "instance is not running on this node")
    ] * 2


async def test_send_while_the_agent_is_down_is_queued_and_delivered_after(
    client: httpx.AsyncClient, paired: tuple[Tenant, dict, Tenant, dict], node_agent: Service
) -> None:
    tenant_a, a, _, b = paired
    await node_agent.kill9()
    try:
        queued = await client.post(
            f"/api/instances/{a['id']}/send", json={"to": b["phoneNumber"], "text": "queued"}, headers=tenant_a.headers
        )
        assert queued.status_code == 202, queued.text
        assert queued.json()["status"] == "queued"
        assert await history(client, tenant_a, a["id"], queued.json()["id"]) == ["queued"]
    finally:
        node_agent.start()
    message = await reaches(client, tenant_a, a["id"], queued.json()["id"], "delivered")
    assert message["history"][0]["status"] == "queued"


async def stop_by_hand(client: httpx.AsyncClient, engine: DockerEngine, tenant: Tenant, instance: dict) -> None:
    """Stop the instance's container by hand and wait until it is reported `stopped` (the agent's
    reconcile starts it again)."""
    async with aiodocker.Docker(url=engine.host) as docker:
        container = await docker.containers.get(f"wgs-instance-{instance['id']}")
        await container.stop(t=5)

    async def stopped() -> bool:
        view = (await client.get(f"/api/instances/{instance['id']}", headers=tenant.headers)).json()
        return bool(view["status"] == "stopped")

    await wait_until(stopped, timeout=20, what=f"instance {instance['id']} reported stopped")


async def test_send_while_the_container_is_down_is_queued_and_delivered_after_it_restarts(
    client: httpx.AsyncClient, paired: tuple[Tenant, dict, Tenant, dict], engines: list, node_agent: Service
) -> None:
    tenant_a, a, _, b = paired
    await stop_by_hand(client, engines[0], tenant_a, a)
    queued = await client.post(
        f"/api/instances/{a['id']}/send",
        json={"to": b["phoneNumber"], "text": "after restart"},
        headers=tenant_a.headers,
    )
    assert queued.status_code == 202, queued.text
    message = await reaches(client, tenant_a, a["id"], queued.json()["id"], "delivered")
    assert message["history"][0]["status"] == "queued"


async def test_a_message_to_a_phone_whose_container_is_down_is_delivered_when_it_runs_again(
    client: httpx.AsyncClient, paired: tuple[Tenant, dict, Tenant, dict], engines: list, js: JetStreamContext
) -> None:
    tenant_a, a, tenant_b, b = paired
    await stop_by_hand(client, engines[0], tenant_b, b)  # B's phone is off until the agent starts it again
    sent = await client.post(
        f"/api/instances/{a['id']}/send",
        json={"to": b["phoneNumber"], "text": "while you were away"},
        headers=tenant_a.headers,
    )
    assert sent.status_code == 200, sent.text  # A is connected: sent now, delivered when B is back

    message = await reaches(client, tenant_a, a["id"], sent.json()["id"], "read")
    assert [h["status"] for h in message["history"]] == ["sent", "delivered", "read"]  # never failed
    assert [m.message_id for m in await received_at(js, b["id"])] == [sent.json()["id"]]


async def received_at(js: JetStreamContext, instance_id: int) -> list[MessageReceived]:
    """Every message the instance received so far (its `message` events on JetStream)."""
    subscription = await js.subscribe(
        subjects.instance_event(instance_id, "message"), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    events: list[MessageReceived] = []
    try:
        while True:
            try:
                message = await subscription.next_msg(timeout=0.5)
            except nats.errors.TimeoutError:
                return events
            events.append(msgspec.json.decode(message.data, type=MessageReceived))
    finally:
        await subscription.unsubscribe()


async def test_a_send_retried_with_its_idempotency_key_is_delivered_once(
    client: httpx.AsyncClient, paired: tuple[Tenant, dict, Tenant, dict], migrated: dict[str, str]
) -> None:
    """Six tries with one key at once (some while the first is in flight), and one after it was read."""
    tenant_a, a, _, b = paired
    url, body = f"/api/instances/{a['id']}/send", {"to": b["phoneNumber"], "text": "exactly once"}
    keyed = {**tenant_a.headers, "Idempotency-Key": "invoice-7"}
    tries = await asyncio.gather(*(client.post(url, json=body, headers=keyed) for _ in range(6)))
    assert [t.status_code for t in tries] == [200] * 6, [t.text for t in tries]
    (message_id,) = {t.json()["id"] for t in tries}
    await reaches(client, tenant_a, a["id"], message_id, "read")
    late = await client.post(url, json=body, headers=keyed)
    assert (late.status_code, late.json()["id"]) == (200, message_id)
    # A message without a key after them: once B has it, B has whatever the tries delivered.
    marker = await client.post(url, json={**body, "text": "marker"}, headers=tenant_a.headers)
    await reaches(client, tenant_a, a["id"], marker.json()["id"], "delivered")
    nc = await nats.connect(migrated["NATS_URL"])
    try:
        texts = [e.content.text for e in await received_at(nc.jetstream(), b["id"])]
    finally:
        await nc.close()
    assert texts.count("exactly once") == 1


async def test_events_survive_a_kill_9_of_the_agent_without_loss_or_duplicates(
    client: httpx.AsyncClient, paired: tuple[Tenant, dict, Tenant, dict], node_agent: Service, migrated: dict[str, str]
) -> None:
    tenant_a, a, _, b = paired
    texts = [f"burst {i}" for i in range(20)]
    for index, text in enumerate(texts):
        if index == 10:
            await node_agent.kill9()
            node_agent.start()
        response = await client.post(
            f"/api/instances/{a['id']}/send", json={"to": b["phoneNumber"], "text": text}, headers=tenant_a.headers
        )
        assert response.status_code in (200, 202), response.text
    nc = await nats.connect(migrated["NATS_URL"])
    try:
        js = nc.jetstream()

        async def all_received() -> list[MessageReceived] | None:
            events = await received_at(js, b["id"])
            return events if {e.content.text for e in events} >= set(texts) else None

        events = await wait_until(all_received, timeout=60, interval=0.5, what="all 20 messages at B")
    finally:
        await nc.close()
    assert sorted(e.content.text or "" for e in events) == sorted(texts)  # none lost, none twice
    assert len({e.event_id for e in events}) == len(events)


async def test_message_reaches_b_webhook_signed_and_statuses_reach_a_webhook(
    client: httpx.AsyncClient, pair: tuple[Tenant, dict, Tenant, dict], webhooks: Service, receiver: Receiver
) -> None:
    tenant_a, a, tenant_b, b = pair
    endpoint_a = await client.post(
        f"/api/instances/{a['id']}/webhooks",
        json={"url": receiver.url("a"), "events": ["message.status"]},
        headers=tenant_a.headers,
    )
    endpoint_b = await client.post(
        f"/api/instances/{b['id']}/webhooks",
        json={"url": receiver.url("b"), "events": ["message"]},
        headers=tenant_b.headers,
    )
    assert endpoint_a.status_code == 201, endpoint_a.text
    assert endpoint_b.status_code == 201, endpoint_b.text
    for tenant, instance in ((tenant_a, a), (tenant_b, b)):
        await pair_up(client, tenant, instance["id"])
    sent = await client.post(
        f"/api/instances/{a['id']}/send",
        json={"to": b["phoneNumber"], "text": "hello webhook"},
        headers=tenant_a.headers,
    )
    assert sent.status_code == 200, sent.text
    message_id = sent.json()["id"]

    async def b_got_it() -> Hit | None:
        return next((h for h in receiver.requests("b") if h.json["data"].get("text") == "hello webhook"), None)

    hit = await wait_until(b_got_it, timeout=30, interval=0.2, what="message on B's webhook")
    verify_webhook(endpoint_b.json()["secret"], hit.headers, hit.body)
    assert hit.json["type"] == "message"
    assert hit.json["instance"] == b["id"]
    assert hit.json["data"]["from"] == a["phoneNumber"]
    assert hit.json["data"]["type"] == "text"

    async def a_got_statuses() -> set[str] | None:
        statuses = {h.json["data"]["status"] for h in receiver.requests("a") if h.json["data"]["id"] == message_id}
        return statuses if {"sent", "delivered", "read"} <= statuses else None

    await wait_until(a_got_statuses, timeout=30, interval=0.2, what="statuses on A's webhook")
    for status_hit in receiver.requests("a"):
        verify_webhook(endpoint_a.json()["secret"], status_hit.headers, status_hit.body)
        assert status_hit.json["type"] == "message.status"


async def test_logout_unlinks_the_phone_and_a_new_qr_pairs_it_again(
    client: httpx.AsyncClient, paired: tuple[Tenant, dict, Tenant, dict]
) -> None:
    tenant_a, a, _, b = paired
    logout = await client.post(f"/api/instances/{a['id']}/logout", headers=tenant_a.headers)
    assert logout.status_code == 200, logout.text
    assert logout.json() == {"state": "qr"}
    view = await connection_is(client, tenant_a, a["id"], "qr")
    assert view["phoneId"] is None
    refused = await client.post(
        f"/api/instances/{a['id']}/send", json={"to": b["phoneNumber"], "text": "hi"}, headers=tenant_a.headers
    )
    assert (refused.status_code, refused.json()["error"]) == (503, "Client not connected")
    await pair_up(client, tenant_a, a["id"])  # the new QR pairs it again
    sent = await client.post(
        f"/api/instances/{a['id']}/send", json={"to": b["phoneNumber"], "text": "back"}, headers=tenant_a.headers
    )
    assert sent.status_code == 200, sent.text
