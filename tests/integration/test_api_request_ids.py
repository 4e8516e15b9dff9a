"""Request ids: the API answers each request with its `X-Request-Id`, runs it under that trace id
(what it publishes on NATS carries it), and logs in the services' format."""

import re
from collections.abc import AsyncIterator
from uuid import uuid4

import httpx
import nats
import pytest
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from wgs_contracts import headers, subjects
from wgs_devstack.services import ApiService

from tests.support.api import Tenant, create_tenant, pending_instance

GENERATED_ID = re.compile(r"[0-9a-f]{16}")
LOG_RECORD = re.compile(r"^(\d|DEBUG|INFO|WARNING|ERROR|CRITICAL)")  # a record's first line, in any format
SERVICE_LINE = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) api\[\d+\] trace=\S+ \S+: ")


@pytest.fixture
async def queued_sends(
    client: httpx.AsyncClient, migrated: dict[str, str], db
) -> AsyncIterator[tuple[Tenant, int, Subscription]]:
    """A tenant, its instance that is not running (its sends are queued on NATS) and a subscription to that queue."""
    tenant = await create_tenant(client)
    instance_id = await pending_instance(client, tenant)
    connection = await nats.connect(migrated["NATS_URL"])
    try:
        yield tenant, instance_id, await connection.subscribe(subjects.outbound(instance_id))
    finally:
        await connection.close()
        await db.execute("DELETE FROM instances WHERE id = $1", instance_id)


async def queue_one(
    client: httpx.AsyncClient, queued: tuple[Tenant, int, Subscription], request_headers: list[tuple[bytes, bytes]]
) -> tuple[str, Msg]:
    """Send to the instance that is not running: the answer's request id and the queued message."""
    tenant, instance_id, subscription = queued
    response = await client.post(
        f"/api/instances/{instance_id}/send",
        json={"to": "491701234567", "text": "later"},
        headers=[(name.encode(), value.encode()) for name, value in tenant.headers.items()] + request_headers,
    )
    assert response.status_code == 202, response.text
    return response.headers["x-request-id"], await subscription.next_msg(timeout=10)


async def test_a_request_id_given_is_answered_and_travels_with_what_the_request_publishes(
    client: httpx.AsyncClient, queued_sends: tuple[Tenant, int, Subscription]
) -> None:
    given = f"req-{uuid4().hex}:1.a_b"
    answered, queued = await queue_one(client, queued_sends, [(b"X-Request-Id", given.encode())])
    assert answered == given
    assert (queued.headers or {})[headers.TRACE_ID] == given


@pytest.mark.parametrize(
    "request_headers",
    [[], [(b"X-Request-Id", b"has spaces")], [(b"X-Request-Id", b"x" * 65)], [(b"X-Request-Id", "ünïcode".encode())]],
    ids=["none", "spaces", "too long", "not ascii"],
)
async def test_without_a_usable_request_id_a_new_one_is_made(
    client: httpx.AsyncClient,
    queued_sends: tuple[Tenant, int, Subscription],
    request_headers: list[tuple[bytes, bytes]],
) -> None:
    answered, queued = await queue_one(client, queued_sends, request_headers)
    assert GENERATED_ID.fullmatch(answered), answered
    assert (queued.headers or {})[headers.TRACE_ID] == answered


async def test_errors_are_answered_with_their_request_id_too(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/instances/1", headers={"X-Request-Id": "lost-1"})
    assert response.status_code == 401
    assert response.headers["x-request-id"] == "lost-1"


async def test_the_api_logs_in_the_services_format(client: httpx.AsyncClient, api: ApiService) -> None:
    assert (await client.get("/")).status_code == 200  # the API is up: its start-up lines are written
    lines = [line for line in api.process.log_path.read_text().splitlines() if LOG_RECORD.match(line)]
    assert any("wgs_kit.lifecycle: start-up heap frozen" in line for line in lines)
    assert all(SERVICE_LINE.match(line) for line in lines), [line for line in lines if not SERVICE_LINE.match(line)]
