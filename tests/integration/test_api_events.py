"""The API's durable consumer of instance events (`api-instance-events`): only the kinds it applies
reach it, batches are applied in stream order with one INSERT of message statuses, a poison event
holds back only itself and is dead-lettered after `max_deliver`, and a consumer left by an earlier
release (one filter `wgs.evt.instance.>`) is migrated in place when the API starts.

Real NATS, PostgreSQL and API process. The module runs its own NATS server (a fresh WGS_EVENTS
stream, so that the old-release consumer can exist before an API ever started) and its own API
process on it, with `WGS_API_EVENTS_MAX_DELIVER=3` (dead letters after about 1.5 s of backoff),
sharing the session's PostgreSQL. Events are published while that API is stopped, so that it finds
them waiting and takes them in one fetch, as it does with any backlog.
"""

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import ConsumerConfig, ConsumerInfo, RawStreamMsg
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from wgs_contracts import headers, streams, subjects
from wgs_contracts.instance_events import (
    ConnectionChanged,
    ConnectionState,
    DeliveryStatus,
    InstanceEvent,
    MessageStatusChanged,
)
from wgs_contracts.messages import InstanceStatus, InstanceStatusChanged, utcnow
from wgs_devstack.nats import EmbeddedNats
from wgs_devstack.processes import free_port
from wgs_devstack.services import ApiService
from wgs_kit.messaging import encode, ensure_streams
from wgs_kit.waiting import wait_until

from tests.integration.conftest import InstanceRows
from tests.integration.test_webhooks_delivery import message, publish, qr
from tests.support.api import create_tenant

CONSUMER = "api-instance-events"
MAX_DELIVER = 3
DEADLINE = 30.0
APPLIED = {subjects.ALL_INSTANCE_STATUS, subjects.ALL_INSTANCE_CONNECTION, subjects.ALL_MESSAGE_STATUS}


@dataclass
class EventsApi:
    """The module's NATS server, its API process, and what the old-release consumer had acknowledged."""

    nats: EmbeddedNats
    nc: NatsClient
    js: JetStreamContext
    api: ApiService
    acked_before_upgrade: int

    async def info(self) -> ConsumerInfo:
        return await self.js.consumer_info(streams.EVENTS.name, CONSUMER)

    async def settled(self, past_seq: int = 0) -> ConsumerInfo:
        """Consumer info once everything up to `past_seq` was delivered and nothing is pending or unacked."""

        async def probe() -> ConsumerInfo | None:
            info = await self.info()
            delivered = info.delivered.stream_seq if info.delivered and info.delivered.stream_seq else 0
            done = info.num_pending == 0 and info.num_ack_pending == 0 and delivered >= past_seq
            return info if done else None

        return await wait_until(probe, DEADLINE, what=f"consumer {CONSUMER} settled")

    async def published_while_stopped(self, events: Sequence[InstanceEvent | tuple[str, bytes]]) -> int:
        """Publish events (or raw subject, body pairs) with the API stopped, start it again; the last seq."""
        await self.api.stop()
        last = 0
        try:
            for event in events:
                if isinstance(event, tuple):
                    last = (await self.js.publish(event[0], event[1])).seq
                else:
                    await publish(self.js, event)
                    last = (await self.js.stream_info(streams.EVENTS.name)).state.last_seq
        finally:
            await self.api.ready()
        return last


@pytest.fixture(scope="module")
async def events_api(migrated: dict[str, str], work_dir: Path) -> AsyncIterator[EventsApi]:
    """A fresh NATS with the contract streams and an old-release `api-instance-events` (one filter on every
    instance event, 2 events acknowledged), then an API process started on it."""
    server = EmbeddedNats(work_dir / "nats-api-events")
    await server.start()
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    api: ApiService | None = None
    try:
        await ensure_streams(js)
        old = ConsumerConfig(
            durable_name=CONSUMER, max_deliver=8, ack_wait=30.0, filter_subject=subjects.ALL_INSTANCE_EVENTS
        )
        await js.add_consumer(streams.EVENTS.name, config=old)
        await publish(js, message(999_999, 1, "before the upgrade"))
        await publish(js, qr(999_999, 1))
        sub = await js.pull_subscribe_bind(durable=CONSUMER, stream=streams.EVENTS.name)
        for msg in await sub.fetch(2, timeout=5):
            await msg.ack_sync()
        await sub.unsubscribe()
        env = {**migrated, "NATS_URL": server.url, "WGS_API_EVENTS_MAX_DELIVER": str(MAX_DELIVER)}
        api = ApiService(env, work_dir / "logs", free_port(), name="api-events")
        await api.ready()
        yield EventsApi(nats=server, nc=nc, js=js, api=api, acked_before_upgrade=2)
    finally:
        if api is not None:
            await api.stop()
        await nc.close()
        await server.stop()


@pytest.fixture
async def instance(client: httpx.AsyncClient, db: asyncpg.Pool, instance_rows: InstanceRows) -> tuple[int, int]:
    """(tenant id, instance id) of an instance row at generation 1, nothing published (on a node that
    never heartbeats, so that a scheduler running in the same test session leaves it alone)."""
    tenant = await create_tenant(client)
    instance_id = await instance_rows.add(tenant.id)
    await db.execute("UPDATE instances SET generation = 1 WHERE id = $1", instance_id)
    return tenant.id, instance_id


def status(tenant_id: int, instance_id: int, value: InstanceStatus, at_offset: float, reason: str | None = None):
    return InstanceStatusChanged(
        event_id=uuid.uuid4().hex,
        instance_id=instance_id,
        tenant_id=tenant_id,
        generation=1,
        node="n-events",
        status=value,
        reason=reason,
        at=utcnow() + timedelta(seconds=at_offset),
    )


def connection(tenant_id: int, instance_id: int, state: ConnectionState) -> ConnectionChanged:
    return ConnectionChanged(
        event_id=uuid.uuid4().hex, instance_id=instance_id, tenant_id=tenant_id, generation=1, seq=1, at=utcnow(),
        state=state, phone_id="phone-1" if state is ConnectionState.CONNECTED else None,
    )  # fmt: skip


def message_status(tenant_id: int, instance_id: int, message_id: str, value: DeliveryStatus) -> MessageStatusChanged:
    return MessageStatusChanged(
        event_id=uuid.uuid4().hex, instance_id=instance_id, tenant_id=tenant_id, generation=1, seq=1, at=utcnow(),
        message_id=message_id, status=value,
    )  # fmt: skip


async def test_an_old_release_consumer_is_migrated_in_place(events_api: EventsApi) -> None:
    info = await events_api.info()
    assert set(info.config.filter_subjects or ()) == APPLIED
    assert not info.config.filter_subject
    assert info.config.max_deliver == MAX_DELIVER
    # The same consumer, updated: its position is kept (what it had acknowledged is not delivered again).
    assert info.ack_floor is not None
    assert info.ack_floor.stream_seq is not None
    assert info.ack_floor.stream_seq >= events_api.acked_before_upgrade
    assert info.delivered is not None
    assert info.delivered.consumer_seq is not None
    assert info.delivered.consumer_seq >= events_api.acked_before_upgrade


async def test_kinds_the_api_does_not_apply_never_reach_its_consumer(
    events_api: EventsApi, instance: tuple[int, int], db: asyncpg.Pool
) -> None:
    tenant_id, instance_id = instance
    before = await events_api.settled()
    assert before.delivered is not None
    delivered_before = before.delivered.consumer_seq or 0
    not_applied: list[InstanceEvent] = [message(instance_id, tenant_id, f"m{n}") for n in range(5)]
    not_applied.append(qr(instance_id, tenant_id))
    for event in not_applied:
        await publish(events_api.js, event)
    await publish(events_api.js, connection(tenant_id, instance_id, ConnectionState.QR))
    last = (await events_api.js.stream_info(streams.EVENTS.name)).state.last_seq

    after = await events_api.settled(last)
    assert after.delivered is not None
    assert (after.delivered.consumer_seq or 0) - delivered_before == 1  # the connection event only
    assert await db.fetchval("SELECT connection_state FROM instances WHERE id = $1", instance_id) == "qr"


async def test_a_batch_applies_statuses_in_stream_order_and_message_statuses_in_one_insert(
    events_api: EventsApi, instance: tuple[int, int], db: asyncpg.Pool
) -> None:
    tenant_id, instance_id = instance
    message_id = uuid.uuid4().hex
    events: list[InstanceEvent] = [
        connection(tenant_id, instance_id, ConnectionState.QR),
        status(tenant_id, instance_id, InstanceStatus.STARTING, 0),
        message_status(tenant_id, instance_id, message_id, DeliveryStatus.SENT),
        status(tenant_id, instance_id, InstanceStatus.RUNNING, 1),
        connection(tenant_id, instance_id, ConnectionState.CONNECTED),
        message_status(tenant_id, instance_id, message_id, DeliveryStatus.DELIVERED),
        # Same `at` as `running`: only the stream order says which one is last.
        status(tenant_id, instance_id, InstanceStatus.FAILED, 1, reason="crashed"),
        message_status(tenant_id, instance_id, message_id, DeliveryStatus.DELIVERED),  # a repeat: nothing new
        status(tenant_id, instance_id, InstanceStatus.STARTING, -5),  # older than what the row has: ignored
        message_status(tenant_id, instance_id, message_id, DeliveryStatus.READ),
    ]
    last = await events_api.published_while_stopped(events)
    await events_api.settled(last)

    row = await db.fetchrow(
        "SELECT status, status_reason, connection_state, phone_id FROM instances WHERE id = $1", instance_id
    )
    assert dict(row) == {"status": "failed", "status_reason": "crashed", "connection_state": "connected",
                         "phone_id": "phone-1"}  # fmt: skip
    history = await db.fetch(
        "SELECT status, xmin::text AS tx FROM message_statuses WHERE message_id = $1 ORDER BY at", message_id
    )
    assert [h["status"] for h in history] == ["sent", "delivered", "read"]  # stream order, each once
    assert len({h["tx"] for h in history}) == 1  # written by one statement


async def test_statuses_of_a_message_no_row_holds_are_marked_unclaimed(
    events_api: EventsApi, instance: tuple[int, int], db: asyncpg.Pool
) -> None:
    tenant_id, instance_id = instance
    recorded, unrecorded = uuid.uuid4().hex, uuid.uuid4().hex
    await db.execute(
        "INSERT INTO messages (id, instance_id, tenant_id, recipient, type)"
        " VALUES ($1, $2, $3, '491700000000', 'text')",
        recorded,
        instance_id,
        tenant_id,
    )
    events = [message_status(tenant_id, instance_id, m, DeliveryStatus.DELIVERED) for m in (recorded, unrecorded)]
    await events_api.settled(await events_api.published_while_stopped(events))

    rows = await db.fetch(
        "SELECT message_id, unclaimed FROM message_statuses WHERE message_id = ANY($1::text[])", [recorded, unrecorded]
    )
    assert {r["message_id"]: r["unclaimed"] for r in rows} == {recorded: False, unrecorded: True}
    await db.execute(
        "DELETE FROM message_statuses WHERE message_id = $1", unrecorded
    )  # the rest goes with its instance


async def test_a_poison_event_holds_back_only_itself_and_is_dead_lettered(
    events_api: EventsApi, instance: tuple[int, int], db: asyncpg.Pool
) -> None:
    tenant_id, instance_id = instance
    good = [uuid.uuid4().hex for _ in range(4)]
    # Decodes, but its message id does not fit the column: recording it fails every time.
    poison = message_status(tenant_id, instance_id, "p" * 60, DeliveryStatus.DELIVERED)
    poison_subject = subjects.instance_event(instance_id, "message_status")
    events: list[InstanceEvent | tuple[str, bytes]] = [
        message_status(tenant_id, instance_id, good[0], DeliveryStatus.SENT),
        message_status(tenant_id, instance_id, good[1], DeliveryStatus.SENT),
        (poison_subject, encode(poison)),
        connection(tenant_id, instance_id, ConnectionState.CONNECTED),
        message_status(tenant_id, instance_id, good[2], DeliveryStatus.SENT),
        (subjects.instance_event(instance_id, "connection"), b"not json at all"),
        message_status(tenant_id, instance_id, good[3], DeliveryStatus.SENT),
    ]
    last = await events_api.published_while_stopped(events)

    async def recorded() -> bool:
        count = await db.fetchval("SELECT count(*) FROM message_statuses WHERE message_id = ANY ($1)", good)
        return count == len(good)

    await wait_until(recorded, DEADLINE, what="the good events applied")
    assert await db.fetchval("SELECT connection_state FROM instances WHERE id = $1", instance_id) == "connected"

    async def dead_letters() -> list[RawStreamMsg] | None:
        found = []
        for seq in range(1, (await events_api.js.stream_info(streams.DEAD_LETTERS.name)).state.last_seq + 1):
            try:
                found.append(await events_api.js.get_msg(streams.DEAD_LETTERS.name, seq))
            except NotFoundError:
                continue
        return found if len(found) >= 2 else None

    parked = await wait_until(dead_letters, DEADLINE, what="two dead letters")
    assert all(m.subject == subjects.dead_letter(CONSUMER) for m in parked)
    by_body = {m.data: m.headers or {} for m in parked}
    assert set(by_body) == {encode(poison), b"not json at all"}
    assert by_body[encode(poison)][headers.DEAD_LETTER_SUBJECT] == poison_subject
    assert "StringDataRightTruncation" in by_body[encode(poison)][headers.DEAD_LETTER_REASON]
    assert "DecodeError" in by_body[b"not json at all"][headers.DEAD_LETTER_REASON]
    info = await events_api.settled(last)  # parked and acked: nothing left to redeliver
    assert info.num_redelivered == 0
