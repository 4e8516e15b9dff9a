"""Fan-out of events into deliveries in batches: stream order kept, one INSERT per batch, a poison event
holding back only itself. Real NATS, PostgreSQL, API and webhooks service.

Events are published while the webhooks service is stopped, so that it finds them waiting and takes
them in one fetch, as it does with any backlog.
"""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import httpx
from nats.js.client import JetStreamContext
from wgs_contracts import subjects
from wgs_contracts.instance_events import InstanceEvent
from wgs_devstack.services import Service
from wgs_kit.messaging import encode

from tests.integration.conftest import InstanceRows
from tests.integration.test_webhooks_delivery import endpoint, message, publish, qr, received
from tests.support.api import create_tenant
from tests.support.webhooks import Receiver


@asynccontextmanager
async def stopped(webhooks: Service) -> AsyncIterator[None]:
    """The webhooks service stopped (SIGTERM) inside the block, started again after it."""
    await webhooks.stop()
    try:
        yield
    finally:
        webhooks.start()


async def published_while_stopped(webhooks: Service, js: JetStreamContext, events: Sequence[InstanceEvent]) -> None:
    async with stopped(webhooks):
        for event in events:
            await publish(js, event)


async def test_a_backlog_fans_out_in_batches_in_stream_order(
    client: httpx.AsyncClient,
    db,
    js: JetStreamContext,
    webhooks: Service,
    receiver: Receiver,
    instance_rows: InstanceRows,
) -> None:
    tenant = await create_tenant(client)
    first, second = await instance_rows.add(tenant.id), await instance_rows.add(tenant.id)
    everything = await endpoint(client, tenant, receiver.url("backlog-all"))
    pairing = await endpoint(client, tenant, receiver.url("backlog-qr"), second, events=["qr"])
    events: list[InstanceEvent] = []
    for n in range(20):
        events.append(message(first, tenant.id, f"m{n}"))
        events.append(qr(second, tenant.id))
    await published_while_stopped(webhooks, js, events)

    assert await received(receiver, "backlog-all", len(events)) == [e.event_id for e in events]
    qrs = [e.event_id for e in events[1::2]]
    assert await received(receiver, "backlog-qr", len(qrs)) == qrs
    # Deliveries were created in stream order across endpoints: by event, then by endpoint.
    rows = await db.fetch(
        "SELECT endpoint_id, event_id, created_at FROM webhook_deliveries WHERE endpoint_id = ANY ($1) ORDER BY id",
        [everything["id"], pairing["id"]],
    )
    expected = []
    for event in events:
        expected.append((everything["id"], event.event_id))
        if event.event_id in qrs:
            expected.append((pairing["id"], event.event_id))
    assert [(r["endpoint_id"], r["event_id"]) for r in rows] == expected
    # In batches: rows of one INSERT share its transaction's now(); one statement per event would not.
    assert len({r["created_at"] for r in rows}) <= 3


async def test_a_poison_event_holds_back_only_itself(
    client: httpx.AsyncClient, instance_rows: InstanceRows, js: JetStreamContext, webhooks: Service, receiver: Receiver
) -> None:
    tenant = await create_tenant(client)
    instance_id = await instance_rows.add(tenant.id)
    await endpoint(client, tenant, receiver.url("poison"))
    good = [message(instance_id, tenant.id, f"m{n}") for n in range(4)]
    # Decodes, but its instance id does not fit the database: fanning it out fails every time.
    poison = message(2**40, tenant.id, "poison")
    async with stopped(webhooks):
        for event in good[:2]:
            await publish(js, event)
        poison_seq = (await js.publish(subjects.instance_event(poison.instance_id, "message"), encode(poison))).seq
        for event in good[2:]:
            await publish(js, event)

    assert await received(receiver, "poison", len(good)) == [e.event_id for e in good]
    assert poison.event_id not in receiver.delivered("poison")
    # The poison is not acknowledged (it is retried with backoff, then dead-lettered).
    info = await js.consumer_info("WGS_EVENTS", "webhooks-fanout")
    assert info.ack_floor is not None
    assert info.ack_floor.stream_seq is not None
    assert info.ack_floor.stream_seq < poison_seq
