"""Requests while NATS or PostgreSQL is down: a gateway of the module's own (NATS, PostgreSQL, an API
process: `bench.stack.control_plane`), so that the tests can stop and start its parts, and a scripted node agent
(`test_send_outcomes.Agent`) for an instance row that says it runs on the agent's node.

A send that can neither reach its provider nor be queued is refused with a `503` that says so,
leaves no record and keeps its idempotency key, so that a retry with the key sends it once; any
other request that NATS or PostgreSQL fails is a `503` with `Retry-After`, never a `500`. An event
the API applies is held through a PostgreSQL outage and applied after it, never dead-lettered.
"""

import asyncio
import collections
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError
from wgs_contracts import streams, subjects
from wgs_contracts.instance_events import DeliveryStatus
from wgs_devstack.nats import EmbeddedNats
from wgs_devstack.postgres import EmbeddedPostgres
from wgs_kit.requests import RequestServer
from wgs_kit.waiting import wait_until

from bench.stack import control_plane
from tests.integration.test_api_events import message_status
from tests.integration.test_send_outcomes import TO, Agent, sent_reply
from tests.integration.test_webhooks_delivery import publish
from tests.support.api import ADMIN, Tenant, create_tenant, unique_phone

KEY = "through-an-outage"
EVENTS_MAX_DELIVER = 2  # deliveries of an instance event before the API dead-letters it
RESTARTS = 4  # of PostgreSQL, with reads in flight
CONCURRENT_CLIENTS = 8
MAX_READS_PER_CLIENT = 5_000  # a bound on each client's loop; the restarts end it long before
# An instance's send context, once leased by a send, serves its next sends for this long without a
# statement (`wgs_api.domain.messaging.leases`): they reach their provider or queue with PostgreSQL down.
LEASE_SECONDS = "60"


@dataclass
class Gateway:
    """The module's own gateway: its NATS and PostgreSQL (to stop), the API's client, the database."""

    nats: EmbeddedNats
    postgres: EmbeddedPostgres
    api: httpx.AsyncClient
    api_log: Path
    db: asyncpg.Pool


@pytest.fixture(scope="module")
async def gateway() -> AsyncIterator[Gateway]:
    """NATS, PostgreSQL and an API process of the module's own (`bench.stack.control_plane`)."""
    settings = {"WGS_API_EVENTS_MAX_DELIVER": str(EVENTS_MAX_DELIVER), "WGS_API_SEND_LEASE_SECONDS": LEASE_SECONDS}
    async with control_plane(settings=settings) as stack:
        db = await asyncpg.create_pool(stack.postgres.dsn, min_size=0, max_size=2)
        try:
            yield Gateway(stack.nats, stack.postgres, stack.client, stack.api.process.log_path, db)
        finally:
            await db.close()


@pytest.fixture
async def node(gateway: Gateway) -> str:
    """A registered node of the gateway; it never heartbeats, so nothing counts it lost."""
    name = f"outage-{uuid.uuid4().hex[:8]}"
    body = {"name": name, "dockerHost": "none", "publicHost": "none", "schedulable": False}
    response = await gateway.api.post("/admin/nodes", json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    return name


@pytest.fixture
async def agent(gateway: Gateway, node: str) -> AsyncIterator[tuple[Agent, NatsClient]]:
    """The node's agent, answering as scripted, and its NATS connection."""
    script = Agent({})
    nc = await nats.connect(gateway.nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    requests = RequestServer(nc)
    await requests.serve(subjects.provider_calls(node), script.on_call)
    await requests.serve(subjects.provider_sends(node), script.on_sends)
    await nc.flush()
    yield script, nc
    script.answering.set()
    await requests.close()
    await nc.close()


async def instance_on(gateway: Gateway, tenant: Tenant, node: str | None) -> int:
    """An instance of the tenant running on `node` (None: placed nowhere, so its sends are queued)."""
    return await gateway.db.fetchval(
        "INSERT INTO instances (tenant_id, phone_number, provider, cpu_limit, memory_limit, nano_cpus, memory_bytes,"
        " node_id, status) SELECT $1, $2, 'sandbox', '0.5', '512m', 500000000, 536870912, n.id,"
        " CASE WHEN n.id IS NULL THEN 'pending' ELSE 'running' END"
        " FROM (SELECT (SELECT id FROM nodes WHERE name = $3) AS id) n RETURNING id",
        tenant.id,
        unique_phone(),
        node,
    )


def assert_unavailable(response: httpx.Response, error: str) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == {"error": error, "code": "unavailable"}
    assert response.headers["retry-after"] == "1"


async def test_a_send_neither_answered_nor_queued_is_refused_and_a_retry_with_its_key_sends_it_once(
    gateway: Gateway, node: str, agent: tuple[Agent, NatsClient]
) -> None:
    script, agent_connection = agent
    tenant = await create_tenant(gateway.api)
    instance_id = await instance_on(gateway, tenant, node)
    script.replies[instance_id] = sent_reply(200, {"status": "sent"})
    script.answering.clear()  # the agent holds the request: NATS goes down before it answers
    url = f"/api/instances/{instance_id}/send"
    headers = {**tenant.headers, "Idempotency-Key": KEY}
    body = {"to": TO, "text": "through an outage"}
    sending = asyncio.ensure_future(gateway.api.post(url, json=body, headers=headers))
    try:

        async def at_agent() -> bool:
            return len(script.requests) == 1

        await wait_until(at_agent, timeout=10, what="the send's request at the agent")
        [[message_id]] = script.requests
        await gateway.nats.stop()
        refused = await sending

        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        error = refused.json()
        assert error["code"] == "unavailable"
        assert "could not be queued: NATS is unreachable" in error["error"]
        assert f"Message {message_id} may still go out" in error["error"]
        assert await gateway.db.fetchval("SELECT count(*) FROM messages WHERE id = $1", message_id) == 0
        kept = "SELECT message_id FROM send_keys WHERE instance_id = $1 AND key = $2"
        assert await gateway.db.fetchval(kept, instance_id, KEY) == message_id

        await gateway.nats.start()

        async def agent_back() -> bool:
            return bool(agent_connection.is_connected)

        await wait_until(agent_back, timeout=30, what="the agent connected again")
        await agent_connection.flush()  # its subscriptions are back on the server
        script.answering.set()
        retried = await gateway.api.post(url, json=body, headers=headers)
        assert retried.status_code == 200, retried.text
        assert retried.json() == {"status": "ok", "id": message_id}
        assert script.requests[-1] == [message_id]  # the same message again: the provider takes it once
        statuses = await gateway.db.fetch("SELECT status FROM message_statuses WHERE message_id = $1", message_id)
        assert [row["status"] for row in statuses] == ["sent"]
    finally:
        script.answering.set()
        await asyncio.gather(sending, return_exceptions=True)
        if not gateway.nats.running:  # an assertion failed during the outage: the next tests need NATS
            await gateway.nats.start()


async def test_a_send_to_queue_while_nats_is_down_is_a_503_and_leaves_nothing(gateway: Gateway) -> None:
    tenant = await create_tenant(gateway.api)
    instance_id = await instance_on(gateway, tenant, None)
    url = f"/api/instances/{instance_id}/send"
    await gateway.nats.stop()
    try:
        refused = await gateway.api.post(url, json={"to": TO, "text": "queued"}, headers=tenant.headers)
        assert_unavailable(refused, "The gateway's message bus (NATS) is unreachable; try again shortly.")
        assert await gateway.db.fetchval("SELECT count(*) FROM messages WHERE instance_id = $1", instance_id) == 0
    finally:
        await gateway.nats.start()
    queued = await gateway.api.post(url, json={"to": TO, "text": "queued"}, headers=tenant.headers)
    assert queued.status_code == 202, queued.text


async def test_requests_while_postgresql_is_down_are_a_503_and_work_again_after(gateway: Gateway) -> None:
    tenant = await create_tenant(gateway.api)
    instance_id = await instance_on(gateway, tenant, None)
    url = f"/api/instances/{instance_id}/send"
    await gateway.postgres.stop()
    try:
        for refused in (
            await gateway.api.post(url, json={"to": TO, "text": "queued"}, headers=tenant.headers),
            await gateway.api.get("/api/instances", headers=tenant.headers),
            await gateway.api.post("/admin/tenants", json={"name": f"t-{uuid.uuid4().hex[:8]}"}, headers=ADMIN),
        ):
            assert_unavailable(refused, "The gateway's database (PostgreSQL) is unavailable; try again shortly.")
    finally:
        await gateway.postgres.start()

    async def sends_again() -> httpx.Response | None:
        response = await gateway.api.post(url, json={"to": TO, "text": "queued"}, headers=tenant.headers)
        return response if response.status_code != 503 else None

    queued = await wait_until(sends_again, timeout=30, interval=0.2, what="the API using PostgreSQL again")
    assert queued.status_code == 202, queued.text
    assert await gateway.db.fetchval("SELECT count(*) FROM messages WHERE instance_id = $1", instance_id) == 1


async def test_sends_taken_while_postgresql_is_down_keep_their_history(
    gateway: Gateway, node: str, agent: tuple[Agent, NatsClient]
) -> None:
    """A send whose context is leased needs no statement before its record: with PostgreSQL down its
    provider takes it (`200`), or its queue does (`202`); the API keeps the record that failed and
    stores it once PostgreSQL is back (`wgs_api.domain.messaging.late_records`)."""
    script, _ = agent
    tenant = await create_tenant(gateway.api)
    running, waiting = await instance_on(gateway, tenant, node), await instance_on(gateway, tenant, None)
    script.replies[running] = sent_reply(200, {"status": "sent"})

    async def send(instance_id: int, answer: int) -> str:
        response = await gateway.api.post(
            f"/api/instances/{instance_id}/send", json={"to": TO, "text": "kept"}, headers=tenant.headers
        )
        assert response.status_code == answer, response.text
        message_id: str = response.json()["id"]
        return message_id

    await send(running, 200)  # leases the two instances' send contexts
    await send(waiting, 202)
    await gateway.postgres.stop()
    try:
        taken = {await send(running, 200): "sent", await send(waiting, 202): "queued"}
    finally:
        await gateway.postgres.start()

    for message_id, status in taken.items():
        instance_id = running if status == "sent" else waiting
        view = await wait_until(
            recorded(gateway, tenant, instance_id, message_id), timeout=30, interval=0.2, what=f"the {status} message"
        )
        assert [entry["status"] for entry in view["history"]] == [status]
    assert gateway.api_log.read_text().count("it is stored once PostgreSQL is back") == 2


def recorded(
    gateway: Gateway, tenant: Tenant, instance_id: int, message_id: str
) -> Callable[[], Awaitable[dict | None]]:
    """A probe for `wait_until`: the message's view, once the API finds its record."""

    async def probe() -> dict | None:
        view = await gateway.api.get(f"/api/instances/{instance_id}/messages/{message_id}", headers=tenant.headers)
        return view.json() if view.status_code == 200 else None

    return probe


async def test_requests_in_flight_while_postgresql_restarts_are_a_503_never_a_500(gateway: Gateway) -> None:
    """Restarts meet requests mid-statement too, on connections the server is terminating."""
    tenant = await create_tenant(gateway.api)
    reads = [("/admin/nodes", ADMIN), ("/api/instances", tenant.headers)]
    answers: collections.Counter[int] = collections.Counter()
    restarting = True

    async def read_until_restarted() -> None:
        for _ in range(MAX_READS_PER_CLIENT):
            if not restarting:
                return
            for url, headers in reads:
                answers[(await gateway.api.get(url, headers=headers, timeout=30)).status_code] += 1

    clients = [asyncio.ensure_future(read_until_restarted()) for _ in range(CONCURRENT_CLIENTS)]
    for _ in range(RESTARTS):
        await gateway.postgres.stop()
        await gateway.postgres.start()
    restarting = False
    await asyncio.gather(*clients)

    assert set(answers) <= {200, 503}, answers
    assert answers[503] > 0, answers


async def test_events_arriving_while_postgresql_is_down_are_applied_after_it_never_dead_lettered(
    gateway: Gateway,
) -> None:
    """The API's event consumer holds what a PostgreSQL outage stops (`wgs_kit.outages`): without
    that, the event would be dead-lettered at its second delivery, half a second after the first."""
    tenant = await create_tenant(gateway.api)
    instance_id = await instance_on(gateway, tenant, None)
    message_id = uuid.uuid4().hex
    nc = await nats.connect(gateway.nats.url)
    try:
        js = nc.jetstream()
        await gateway.postgres.stop()
        try:
            await publish(js, message_status(tenant.id, instance_id, message_id, DeliveryStatus.DELIVERED))

            async def held_twice() -> bool:  # tried again after 0.5 s and 1 s: past two deliveries' backoff
                lines = gateway.api_log.read_text().splitlines()
                return sum("api-instance-events: " in line and "holding" in line for line in lines) >= 2

            await wait_until(held_twice, timeout=30, what="the API holding the event through the outage")
        finally:
            await gateway.postgres.start()

        async def applied() -> bool:
            found = "SELECT count(*) FROM message_statuses WHERE message_id = $1 AND status = 'delivered'"
            return await gateway.db.fetchval(found, message_id) == 1

        await wait_until(applied, timeout=30, what="the status applied once PostgreSQL is back")
        consumer = await js.consumer_info(streams.EVENTS.name, "api-instance-events")
        assert consumer.num_redelivered == 0
        with pytest.raises(NotFoundError):
            await js.get_last_msg(streams.DEAD_LETTERS.name, subjects.dead_letter("api-instance-events"))
    finally:
        await nc.close()
