"""Send requests the API answers without a running provider: validation, queueing, rate limits."""

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import nats
import pytest
from wgs_api.domain.messaging.leases import LEASES
from wgs_api.domain.messaging.rate_limit import TokenAsk, send_context, take_send_contexts
from wgs_api.domain.messaging.services import MessageRecord, record_messages
from wgs_contracts import subjects
from wgs_contracts.messages import InstanceStatus, InstanceStatusChanged
from wgs_devstack.processes import free_port
from wgs_devstack.services import ApiService
from wgs_kit.messaging import encode
from wgs_kit.waiting import wait_until

from tests.support.api import ADMIN, create_tenant, pending_instance


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"to": "12ab", "text": "hi"}, "to"),
        ({"text": "hi"}, "to"),
        ({"to": "491701234567"}, "text"),
        ({"to": "491701234567", "text": ""}, "text"),
        ({"to": "491701234567", "type": "sticker"}, "type"),
        ({"to": "491701234567", "type": "image"}, "media"),
        ({"to": "491701234567", "type": "image", "media": {"base64": "!!notbase64"}}, "media.base64"),
        ({"to": "491701234567", "type": "image", "media": {"url": "ftp://x/y.png"}}, "media.url"),
        ({"to": "491701234567", "type": "location", "location": {"latitude": 95, "longitude": 0}}, "location.latitude"),
        ({"to": "491701234567", "type": "reaction"}, "reaction"),
    ],
)
async def test_invalid_sends_are_422_naming_the_field(client: httpx.AsyncClient, db, body: dict, field: str) -> None:
    tenant = await create_tenant(client)
    instance_id = await pending_instance(client, tenant)
    try:
        await refused_with_nothing_stored(client, db, instance_id, field, body, tenant.headers)
    finally:
        await db.execute("DELETE FROM instances WHERE id = $1", instance_id)


async def refused_with_nothing_stored(
    client: httpx.AsyncClient, db, instance_id: int, field: str, body: dict, headers: Mapping[Any, Any]
) -> None:
    """The send is 422 naming `field`, and the instance has no message."""
    response = await client.post(f"/api/instances/{instance_id}/send", json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert await db.fetchval("SELECT count(*) FROM messages WHERE instance_id = $1", instance_id) == 0


async def test_send_to_an_instance_that_is_not_running_is_queued(client: httpx.AsyncClient, db) -> None:
    tenant = await create_tenant(client)
    instance_id = await pending_instance(client, tenant)
    try:
        response = await client.post(
            f"/api/instances/{instance_id}/send", json={"to": "491701234567", "text": "later"}, headers=tenant.headers
        )
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "queued"
        message_id = response.json()["id"]
        view = await client.get(f"/api/instances/{instance_id}/messages/{message_id}", headers=tenant.headers)
        assert view.status_code == 200
        assert view.json()["status"] == "queued"
        assert [h["status"] for h in view.json()["history"]] == ["queued"]
        missing = await client.get(f"/api/instances/{instance_id}/messages/nope", headers=tenant.headers)
        assert missing.status_code == 404
        stranger = await create_tenant(client)
        other = await client.get(f"/api/instances/{instance_id}/messages/{message_id}", headers=stranger.headers)
        assert other.status_code == 404
    finally:
        await db.execute("DELETE FROM instances WHERE id = $1", instance_id)


@pytest.mark.parametrize("key", ["", "k" * 256, "two words", "caf\u00e9"])
async def test_an_invalid_idempotency_key_is_422_naming_the_header(client: httpx.AsyncClient, db, key: str) -> None:
    tenant = await create_tenant(client)
    instance_id = await pending_instance(client, tenant)
    headers = {name.encode(): value.encode() for name, value in tenant.headers.items()}
    headers[b"Idempotency-Key"] = key.encode()  # as bytes: it may carry what is not ASCII
    try:
        body = {"to": "491701234567", "text": "hi"}
        await refused_with_nothing_stored(client, db, instance_id, "Idempotency-Key", body, headers)
    finally:
        await db.execute("DELETE FROM instances WHERE id = $1", instance_id)


async def test_a_send_retried_with_its_idempotency_key_gets_the_same_message(client: httpx.AsyncClient, db) -> None:
    tenant = await create_tenant(client)
    instance_id = await pending_instance(client, tenant)
    url, body = f"/api/instances/{instance_id}/send", {"to": "491701234567", "text": "later"}
    try:
        answers = [
            await client.post(url, json=body, headers={**tenant.headers, "Idempotency-Key": "order-1"})
            for _ in range(2)
        ]
        assert [a.status_code for a in answers] == [202, 202]
        assert answers[0].json() == answers[1].json()
        other = await client.post(url, json=body, headers={**tenant.headers, "Idempotency-Key": "order-2"})
        assert other.json()["id"] != answers[0].json()["id"]
        assert await db.fetchval("SELECT count(*) FROM messages WHERE instance_id = $1", instance_id) == 2
    finally:
        await db.execute("DELETE FROM instances WHERE id = $1", instance_id)


async def test_a_keyed_send_to_another_tenants_instance_is_404_and_claims_nothing(
    client: httpx.AsyncClient, db
) -> None:
    owner, stranger = await create_tenant(client), await create_tenant(client)
    instance_id = await pending_instance(client, owner)
    try:
        response = await client.post(
            f"/api/instances/{instance_id}/send",
            json={"to": "491701234567", "text": "hi"},
            headers={**stranger.headers, "Idempotency-Key": "order-1"},
        )
        assert response.status_code == 404, response.text
        assert await db.fetchval("SELECT count(*) FROM send_keys WHERE instance_id = $1", instance_id) == 0
    finally:
        await db.execute("DELETE FROM instances WHERE id = $1", instance_id)


async def test_rate_limit_holds_across_two_api_processes(client: httpx.AsyncClient, second_api: ApiService, db) -> None:
    tenant = await create_tenant(client)
    updated = await client.patch(
        f"/admin/tenants/{tenant.id}", json={"sendRatePerSecond": 0.2, "sendBurst": 3}, headers=ADMIN
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["sendBurst"] == 3
    instance_id = await pending_instance(client, tenant)
    try:
        async with httpx.AsyncClient(base_url=second_api.url, timeout=30) as other:
            codes = []
            for index in range(6):
                api = client if index % 2 == 0 else other
                response = await api.post(
                    f"/api/instances/{instance_id}/send",
                    json={"to": "491701234567", "text": "x"},
                    headers=tenant.headers,
                )
                codes.append(response.status_code)
                if response.status_code == 429:
                    assert int(response.headers["Retry-After"]) >= 1
                    assert response.json()["code"] == "rate_limited"
        assert codes[:3] == [202, 202, 202]
        assert codes[3:] == [429, 429, 429]
        assert await db.fetchval("SELECT count(*) FROM messages WHERE instance_id = $1", instance_id) == 3
    finally:
        await db.execute("DELETE FROM instances WHERE id = $1", instance_id)


async def test_concurrent_sends_get_exactly_the_burst_across_two_api_processes(
    client: httpx.AsyncClient, second_api: ApiService, db
) -> None:
    """Sends waiting together share one rate-limit statement: the bucket still grants each token once."""
    tenant = await create_tenant(client)
    limits = {"sendRatePerSecond": 0.01, "sendBurst": 5}
    assert (await client.patch(f"/admin/tenants/{tenant.id}", json=limits, headers=ADMIN)).status_code == 200
    instance_id = await pending_instance(client, tenant)
    try:
        async with httpx.AsyncClient(base_url=second_api.url, timeout=30) as other:
            responses = await asyncio.gather(
                *(
                    (client if index % 2 else other).post(
                        f"/api/instances/{instance_id}/send",
                        json={"to": "491701234567", "text": "x"},
                        headers=tenant.headers,
                    )
                    for index in range(16)
                )
            )
        codes = sorted(r.status_code for r in responses)
        assert codes == [202] * 5 + [429] * 11
        assert all(int(r.headers["Retry-After"]) >= 1 for r in responses if r.status_code == 429)
        assert await db.fetchval("SELECT count(*) FROM messages WHERE instance_id = $1", instance_id) == 5
    finally:
        await db.execute("DELETE FROM instances WHERE id = $1", instance_id)


async def test_one_rate_limit_statement_serves_a_batch_in_order(client: httpx.AsyncClient, api_pool, db) -> None:
    """The batch function itself: repeated instances in order, another tenant's and unknown instances
    not found; a lease renewal asked in the same batch takes no send's token."""
    tenant = await create_tenant(client)
    limits = {"sendRatePerSecond": 0.5, "sendBurst": 2}
    assert (await client.patch(f"/admin/tenants/{tenant.id}", json=limits, headers=ADMIN)).status_code == 200
    first, second = await pending_instance(client, tenant), await pending_instance(client, tenant)
    try:
        renewal = TokenAsk(first, tenant.id, renewal=True)
        batch = [TokenAsk(i, tenant.id) for i in (first, second, first, first, first)]
        unknown = [TokenAsk(first, tenant.id + 1_000_000), TokenAsk(2_000_000_000, tenant.id)]
        answers = await take_send_contexts([renewal, *batch, *unknown])
        assert answers[0] is not None
        contexts = answers[1:]
        allowed = [c.retry_after is None for c in contexts[:5] if c is not None]
        assert allowed == [True, True, True, False, False]
        waits = [c.retry_after or 0.0 for c in contexts[3:5] if c is not None]
        assert 0 < waits[0] < waits[1] <= 4.0
        assert contexts[5:] == [None, None]
        assert await db.fetchval("SELECT granted FROM rate_buckets WHERE instance_id = $1", first) == 2
    finally:
        await db.execute("DELETE FROM instances WHERE id = ANY($1::int[])", [first, second])


async def bucket_taken_at(db, instance_id: int) -> object:
    """When the instance's rate bucket was last drawn from (each rate-limit statement sets it)."""
    return await db.fetchval("SELECT updated_at FROM rate_buckets WHERE instance_id = $1", instance_id)


async def test_spare_tokens_serve_the_next_sends_without_a_statement(
    client: httpx.AsyncClient, api_pool, db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statement leases half the burst at most; those sends skip PostgreSQL, and the send that
    finds the lease half spent renews it in the background, up to half the burst again."""
    monkeypatch.setattr(LEASES, "lease_seconds", 30.0)
    tenant = await create_tenant(client)
    limits = {"sendRatePerSecond": 100, "sendBurst": 20}
    assert (await client.patch(f"/admin/tenants/{tenant.id}", json=limits, headers=ADMIN)).status_code == 200
    instance_id = await pending_instance(client, tenant)
    key = (instance_id, tenant.id)
    try:
        first = await send_context(instance_id, tenant.id)
        assert first is not None
        assert first.retry_after is None
        assert await db.fetchval("SELECT granted FROM rate_buckets WHERE instance_id = $1", instance_id) == 11
        taken_at = await bucket_taken_at(db, instance_id)
        leased = [await send_context(instance_id, tenant.id) for _ in range(4)]
        assert all(c is not None and c.retry_after is None and c.status == "pending" for c in leased)
        assert await bucket_taken_at(db, instance_id) == taken_at
        assert await send_context(instance_id, tenant.id) == first  # the 5th of 10: half spent, renewed
        assert LEASES.renewing(key)

        async def renewal_ended() -> bool:
            return not LEASES.renewing(key)

        await wait_until(renewal_ended, timeout=10, what="the lease renewed")
        assert await bucket_taken_at(db, instance_id) != taken_at
        held = 0
        while LEASES.take(key) is not None:
            held += 1
        assert held == 10  # 5 left + what the renewal got, held up to half the burst
    finally:
        LEASES.end_all()
        await db.execute("DELETE FROM instances WHERE id = $1", instance_id)


@pytest.fixture
async def leasing_api(migrated: dict[str, str], work_dir: Path) -> AsyncIterator[ApiService]:
    """An API process whose send leases last 30 s: only a status event can end one within a test."""
    env = {**migrated, "WGS_API_SEND_LEASE_SECONDS": "30"}
    service = ApiService(env, work_dir / "logs", free_port(), name="api-leasing")
    await service.ready()
    yield service
    await service.stop()


async def test_a_status_event_ends_the_send_lease_in_every_api_process(
    client: httpx.AsyncClient, leasing_api: ApiService, migrated: dict[str, str], db
) -> None:
    """An instance's status may have changed: its next sends read the row again, in every API process."""
    tenant = await create_tenant(client)
    limits = {"sendRatePerSecond": 1000, "sendBurst": 1000}
    assert (await client.patch(f"/admin/tenants/{tenant.id}", json=limits, headers=ADMIN)).status_code == 200
    instance_id = await pending_instance(client, tenant)
    # Out of the scheduler's periodic pass over pending instances (each pass announces them again).
    await db.execute("UPDATE instances SET created_at = now() + interval '1 hour' WHERE id = $1", instance_id)
    connection = await nats.connect(migrated["NATS_URL"])
    try:
        async with httpx.AsyncClient(base_url=leasing_api.url, timeout=30) as leasing:

            async def send() -> None:
                response = await leasing.post(
                    f"/api/instances/{instance_id}/send",
                    json={"to": "491701234567", "text": "x"},
                    headers=tenant.headers,
                )
                assert response.status_code == 202, response.text

            async def leased() -> bool:
                """Two sends in a row, the second served from the lease (none is given out for 2 s
                after the instance's last status event: here, `unschedulable` when it was created)."""
                await send()
                before = await bucket_taken_at(db, instance_id)
                await send()
                return await bucket_taken_at(db, instance_id) == before

            await wait_until(leased, timeout=15, interval=0.2, what="a send served from the lease")
            taken_at = await bucket_taken_at(db, instance_id)
            again = InstanceStatusChanged(  # the state the row already has: only the lease can change
                instance_id=instance_id, tenant_id=tenant.id, generation=1, node=None, status=InstanceStatus.PENDING
            )
            await connection.publish(subjects.instance_status(instance_id), encode(again))

            async def statement_ran() -> bool:
                await send()
                return await bucket_taken_at(db, instance_id) != taken_at

            await wait_until(statement_ran, timeout=10, interval=0.1, what="a send after the event runs the statement")
    finally:
        await connection.close()
        await db.execute("DELETE FROM instances WHERE id = $1", instance_id)


async def test_a_message_of_an_instance_deleted_meanwhile_does_not_fail_its_batch(
    client: httpx.AsyncClient, api_pool, db
) -> None:
    tenant = await create_tenant(client)
    kept, deleted = await pending_instance(client, tenant), await pending_instance(client, tenant)
    await db.execute("DELETE FROM instances WHERE id = $1", deleted)
    records = [
        MessageRecord(f"kept-{uuid4().hex}", kept, tenant.id, "491701234567", "text", "sent"),
        MessageRecord(f"gone-{uuid4().hex}", deleted, tenant.id, "491701234567", "text", "sent"),
    ]
    try:
        assert await record_messages(records) == [None, None]
        stored = await db.fetch("SELECT id FROM messages WHERE id = ANY($1::text[])", [r.message_id for r in records])
        assert [row["id"] for row in stored] == [records[0].message_id]
        history = await db.fetch("SELECT status FROM message_statuses WHERE message_id = $1", records[0].message_id)
        assert [row["status"] for row in history] == ["sent"]
    finally:
        await db.execute("DELETE FROM instances WHERE id = $1", kept)
        await db.execute(
            "DELETE FROM message_statuses WHERE message_id = ANY($1::text[])", [r.message_id for r in records]
        )


async def test_bad_tenant_limits_are_422(client: httpx.AsyncClient) -> None:
    tenant = await create_tenant(client)
    response = await client.patch(f"/admin/tenants/{tenant.id}", json={"sendRatePerSecond": 0}, headers=ADMIN)
    assert response.status_code == 422
    assert response.json()["field"] == "sendRatePerSecond"
    burst = await client.patch(f"/admin/tenants/{tenant.id}", json={"sendBurst": 0}, headers=ADMIN)
    assert burst.status_code == 422


async def test_qr_and_pairing_of_an_instance_that_is_not_running_is_503(client: httpx.AsyncClient, db) -> None:
    tenant = await create_tenant(client)
    instance_id = await pending_instance(client, tenant)
    try:
        qr = await client.get(f"/api/instances/{instance_id}/qr", headers=tenant.headers)
        assert qr.status_code == 503
        assert "not running" in qr.json()["error"]
        code = await client.post(
            f"/api/instances/{instance_id}/pair-code", json={"phone": "491701234567"}, headers=tenant.headers
        )
        assert code.status_code == 503
        scan = await client.post(f"/api/instances/{instance_id}/sandbox/scan", headers=tenant.headers)
        assert scan.status_code == 409  # not a sandbox instance
    finally:
        await db.execute("DELETE FROM instances WHERE id = $1", instance_id)
