"""Retention on real PostgreSQL: what each tenant's retention no longer covers is deleted, nothing else.

The rows are aged by hand (`created_at`, or a status's `at`, in the past). The webhook endpoints are disabled, so the
running webhooks service leaves their deliveries alone.
"""

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from wgs_db import retention
from wgs_db.retention import Swept
from wgs_devstack.services import Service
from wgs_kit.waiting import wait_until

from tests.support.api import ADMIN, Tenant, create_tenant, pending_instance

DEADLINE = 30.0


class Made:
    """The instances and webhook endpoints a test made; deleted after it, with all their rows."""

    def __init__(self, client: httpx.AsyncClient, db) -> None:
        self.client = client
        self.db = db
        self.instances: list[tuple[int, Tenant]] = []
        self.endpoints: list[int] = []

    async def instance(self, tenant: Tenant) -> int:
        instance_id = await pending_instance(self.client, tenant)
        self.instances.append((instance_id, tenant))
        return instance_id

    async def disabled_endpoint(self, tenant: Tenant) -> int:
        endpoint_id = await self.db.fetchval(
            "INSERT INTO webhook_endpoints (tenant_id, url, enabled) VALUES ($1, 'https://example.com/hook', false)"
            " RETURNING id",
            tenant.id,
        )
        self.endpoints.append(endpoint_id)
        return endpoint_id

    async def delete(self) -> None:
        for instance_id, tenant in self.instances:  # unplaced: deleted at once
            response = await self.client.delete(f"/api/instances/{instance_id}", headers=tenant.headers)
            assert response.status_code in (204, 404), response.text
        await self.db.execute("DELETE FROM webhook_endpoints WHERE id = ANY($1::int[])", self.endpoints)


@pytest.fixture
async def made(client: httpx.AsyncClient, db) -> AsyncIterator[Made]:
    things = Made(client, db)
    yield things
    await things.delete()


async def aged_message(db, tenant: Tenant, instance_id: int, age_days: float) -> str:
    """A sent message `age_days` old, with two statuses and an idempotency key."""
    message_id = uuid.uuid4().hex
    async with db.acquire() as connection, connection.transaction():
        await connection.execute(
            "INSERT INTO messages (id, instance_id, tenant_id, recipient, type, created_at)"
            " VALUES ($1, $2, $3, '491700000000', 'text', now() - $4 * interval '1 day')",
            message_id,
            instance_id,
            tenant.id,
            age_days,
        )
        await connection.execute(
            "INSERT INTO message_statuses (message_id, status) VALUES ($1, 'sent'), ($1, 'delivered')", message_id
        )
        await connection.execute(
            "INSERT INTO send_keys (instance_id, key, message_id, request_digest) VALUES ($1, $2, $2, repeat('0', 64))",
            instance_id,
            message_id,
        )
    return message_id


async def aged_delivery(db, endpoint_id: int, status: str, age_days: float) -> int:
    """A delivery `age_days` old in `status`, with one attempt."""
    delivery_id = await db.fetchval(
        "INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, payload, status, attempts, created_at)"
        " VALUES ($1, $2, 'message', '{}', $3, 1, now() - $4 * interval '1 day') RETURNING id",
        endpoint_id,
        uuid.uuid4().hex,
        status,
        age_days,
    )
    await db.execute(
        "INSERT INTO webhook_attempts (delivery_id, attempt, status_code) VALUES ($1, 1, 500)", delivery_id
    )
    return delivery_id


async def kept_messages(db, message_ids: list[str]) -> dict[str, tuple[int, int]]:
    """Of `message_ids`, those still stored, each with its number of statuses and of keys."""
    rows = await db.fetch(
        "SELECT m.id, (SELECT count(*) FROM message_statuses s WHERE s.message_id = m.id) AS statuses,"
        " (SELECT count(*) FROM send_keys k WHERE k.message_id = m.id) AS keys"
        " FROM messages m WHERE m.id = ANY($1::text[])",
        message_ids,
    )
    return {row["id"]: (row["statuses"], row["keys"]) for row in rows}


async def kept_deliveries(db, delivery_ids: list[int]) -> dict[int, int]:
    """Of `delivery_ids`, those still stored, each with its number of attempts."""
    rows = await db.fetch(
        "SELECT d.id, (SELECT count(*) FROM webhook_attempts a WHERE a.delivery_id = d.id) AS attempts"
        " FROM webhook_deliveries d WHERE d.id = ANY($1::bigint[])",
        delivery_ids,
    )
    return {row["id"]: row["attempts"] for row in rows}


async def test_a_sweep_deletes_only_what_each_tenants_retention_no_longer_covers(
    client: httpx.AsyncClient, db, api_pool, made: Made
) -> None:
    brief = await create_tenant(client, retentionDays=1)
    default = await create_tenant(client)  # 30 days
    brief_instance = await made.instance(brief)
    default_instance = await made.instance(default)
    brief_old = [await aged_message(db, brief, brief_instance, 2) for _ in range(3)]
    brief_new = await aged_message(db, brief, brief_instance, 0.5)
    default_kept = await aged_message(db, default, default_instance, 29)
    default_old = await aged_message(db, default, default_instance, 31)
    brief_hook = await made.disabled_endpoint(brief)
    default_hook = await made.disabled_endpoint(default)
    finished_old = [await aged_delivery(db, brief_hook, status, 2) for status in ("delivered", "dead")]
    open_old = [await aged_delivery(db, brief_hook, status, 2) for status in ("pending", "sending")]
    finished_new = await aged_delivery(db, brief_hook, "delivered", 0.5)
    default_finished = [await aged_delivery(db, default_hook, "dead", days) for days in (29, 31)]

    assert await retention.sweep(batch=2) == Swept(
        messages=4, deliveries=3, unclaimed_statuses=0, expired_secrets=0
    )  # several batches of 2

    messages = [*brief_old, brief_new, default_kept, default_old]
    assert await kept_messages(db, messages) == {brief_new: (2, 1), default_kept: (2, 1)}
    assert await db.fetchval("SELECT count(*) FROM message_statuses WHERE message_id = ANY($1::text[])", messages) == 4
    assert await db.fetchval("SELECT count(*) FROM send_keys WHERE message_id = ANY($1::text[])", messages) == 2
    deliveries = [*finished_old, *open_old, finished_new, *default_finished]
    assert await kept_deliveries(db, deliveries) == {
        **dict.fromkeys(open_old, 1),
        finished_new: 1,
        default_finished[0]: 1,
    }
    assert (
        await db.fetchval("SELECT count(*) FROM webhook_attempts WHERE delivery_id = ANY($1::bigint[])", deliveries)
        == 4
    )

    assert await retention.sweep(batch=2) == Swept(
        messages=0, deliveries=0, unclaimed_statuses=0, expired_secrets=0
    )  # nothing expired is left

    history = f"/api/instances/{brief_instance}/messages"
    assert (await client.get(f"{history}/{brief_old[0]}", headers=brief.headers)).status_code == 404
    kept = await client.get(f"{history}/{brief_new}", headers=brief.headers)
    assert {step["status"] for step in kept.json()["history"]} == {"sent", "delivered"}
    finished = await client.get(f"/api/webhooks/{brief_hook}/deliveries", headers=brief.headers)
    assert {d["id"] for d in finished.json()} == {*open_old, finished_new}


async def test_a_sweep_stops_at_its_budget_and_the_next_one_goes_on(
    client: httpx.AsyncClient, db, api_pool, made: Made
) -> None:
    tenant = await create_tenant(client, retentionDays=1)
    instance_id = await made.instance(tenant)
    messages = [await aged_message(db, tenant, instance_id, 3) for _ in range(3)]
    endpoint_id = await made.disabled_endpoint(tenant)
    deliveries = [await aged_delivery(db, endpoint_id, "delivered", 3) for _ in range(3)]

    assert await retention.sweep(batch=1, budget_seconds=0) == Swept(
        messages=1, deliveries=1, unclaimed_statuses=0, expired_secrets=0
    )  # one batch of each
    assert len(await kept_messages(db, messages)) == 2
    assert len(await kept_deliveries(db, deliveries)) == 2

    assert await retention.sweep(batch=1) == Swept(messages=2, deliveries=2, unclaimed_statuses=0, expired_secrets=0)
    assert await kept_messages(db, messages) == {}
    assert await kept_deliveries(db, deliveries) == {}


async def test_a_longer_retention_keeps_what_a_shorter_one_deleted(
    client: httpx.AsyncClient, db, api_pool, made: Made
) -> None:
    tenant = await create_tenant(client, retentionDays=1)
    instance_id = await made.instance(tenant)
    message_id = await aged_message(db, tenant, instance_id, 5)
    changed = await client.patch(f"/admin/tenants/{tenant.id}", json={"retentionDays": 7}, headers=ADMIN)
    assert changed.status_code == 200, changed.text

    assert await retention.sweep() == Swept(messages=0, deliveries=0, unclaimed_statuses=0, expired_secrets=0)
    assert await kept_messages(db, [message_id]) == {message_id: (2, 1)}

    await client.patch(f"/admin/tenants/{tenant.id}", json={"retentionDays": 4}, headers=ADMIN)
    assert await retention.sweep() == Swept(messages=1, deliveries=0, unclaimed_statuses=0, expired_secrets=0)
    assert await kept_messages(db, [message_id]) == {}


async def test_a_sweep_erases_rotated_out_webhook_secrets_once_their_grace_is_over(
    client: httpx.AsyncClient, db, api_pool, made: Made
) -> None:
    tenant = await create_tenant(client)
    over, running = await made.disabled_endpoint(tenant), await made.disabled_endpoint(tenant)
    for endpoint_id, seconds_left in ((over, -1), (running, 3600)):
        await db.execute(
            "UPDATE webhook_endpoints SET previous_secret = 'whsec_b2xk',"
            " previous_secret_expires_at = now() + $2 * interval '1 second' WHERE id = $1",
            endpoint_id,
            seconds_left,
        )

    assert (await retention.sweep()).expired_secrets == 1

    rows = await db.fetch(
        "SELECT id, previous_secret, previous_secret_expires_at IS NOT NULL AS expiring FROM webhook_endpoints"
        " WHERE id = ANY($1::int[])",
        [over, running],
    )
    assert {row["id"]: (row["previous_secret"], row["expiring"]) for row in rows} == {
        over: (None, False),
        running: ("whsec_b2xk", True),
    }


async def test_the_scheduler_leader_sweeps_when_it_is_elected(
    client: httpx.AsyncClient, db, scheduler: Service, made: Made
) -> None:
    tenant = await create_tenant(client, retentionDays=1)
    instance_id = await made.instance(tenant)
    expired = await aged_message(db, tenant, instance_id, 2)
    kept = await aged_message(db, tenant, instance_id, 0)

    await scheduler.stop()  # the next leader sweeps at once (then every WGS_RETENTION_SWEEP_SECONDS)
    scheduler.start()

    async def swept() -> bool:
        return expired not in await kept_messages(db, [expired])

    await wait_until(swept, timeout=DEADLINE, what="the new leader's retention sweep")
    assert await kept_messages(db, [expired, kept]) == {kept: (2, 1)}


async def test_deleting_an_instance_deletes_its_messages_with_their_statuses_and_keys(
    client: httpx.AsyncClient, db, made: Made
) -> None:
    tenant = await create_tenant(client)
    instance_id = await made.instance(tenant)
    message_id = await aged_message(db, tenant, instance_id, 0)

    assert (await client.delete(f"/api/instances/{instance_id}", headers=tenant.headers)).status_code == 204

    assert await kept_messages(db, [message_id]) == {}
    assert await db.fetchval("SELECT count(*) FROM message_statuses WHERE message_id = $1", message_id) == 0
    assert await db.fetchval("SELECT count(*) FROM send_keys WHERE message_id = $1", message_id) == 0


async def aged_statuses(db, message_id: str, age_seconds: float, statuses: tuple[str, ...]) -> None:
    """Statuses of `message_id` recorded `age_seconds` ago with no message row (as the API marks them)."""
    await db.execute(
        "INSERT INTO message_statuses (message_id, status, at, unclaimed)"
        " SELECT $1, s, now() - $2 * interval '1 second', true FROM unnest($3::text[]) AS s",
        message_id,
        age_seconds,
        list(statuses),
    )


async def test_unclaimed_statuses_are_deleted_after_their_grace_unless_their_message_came(
    client: httpx.AsyncClient, db, api_pool, made: Made
) -> None:
    tenant = await create_tenant(client)
    instance_id = await made.instance(tenant)
    old, new, late = (uuid.uuid4().hex for _ in range(3))
    await aged_statuses(db, old, 7200, ("sent", "delivered", "read"))
    await aged_statuses(db, new, 600, ("delivered",))
    await aged_statuses(db, late, 7200, ("delivered",))
    await db.execute(  # recorded after its status (decision 35 allows it): claimed, not deleted
        "INSERT INTO messages (id, instance_id, tenant_id, recipient, type)"
        " VALUES ($1, $2, $3, '491700000000', 'text')",
        late,
        instance_id,
        tenant.id,
    )
    try:
        swept = await retention.sweep(batch=2, unclaimed_grace_seconds=3600)  # several batches of 2
        assert swept == Swept(messages=0, deliveries=0, unclaimed_statuses=3, expired_secrets=0)

        rows = await db.fetch(
            "SELECT message_id, status, unclaimed FROM message_statuses WHERE message_id = ANY($1::text[])",
            [old, new, late],
        )
        assert {(r["message_id"], r["status"], r["unclaimed"]) for r in rows} == {
            (new, "delivered", True),  # within its grace
            (late, "delivered", False),
        }
        assert await retention.sweep(unclaimed_grace_seconds=3600) == Swept(0, 0, 0, 0)
    finally:
        await db.execute("DELETE FROM message_statuses WHERE message_id = $1", new)
