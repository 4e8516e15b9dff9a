"""What a tenant gets from a provider's own answer and from its node agent's (QR, pairing, sends): the
API process on the real NATS and PostgreSQL; the node agent's side is a scripted responder on the
node's subject."""

from collections.abc import AsyncIterator

import httpx
import msgspec
import nats
import pytest
from nats.js.client import JetStreamContext
from wgs_contracts import streams, subjects
from wgs_contracts.instance_events import ProviderCall, ProviderReply
from wgs_kit.messaging import decode, encode
from wgs_kit.requests import RequestServer
from wgs_node_agent.agent import NOT_HERE
from wgs_node_agent.session import PROVIDER_NOT_ANSWERING

from tests.integration.conftest import InstanceRows
from tests.support.api import Tenant, create_tenant

NO_QR_YET = ProviderReply(
    status=404, body=msgspec.json.encode({"error": "no QR yet", "reason": "provider is starting"})
)


@pytest.fixture
async def tenant(client: httpx.AsyncClient) -> Tenant:
    return await create_tenant(client)


@pytest.fixture
async def scripted_node(
    migrated: dict[str, str], instance_rows: InstanceRows
) -> AsyncIterator[dict[int, ProviderReply]]:
    """The rows' node answering each provider call with the reply scripted for its instance."""
    name = await instance_rows.db.fetchval("SELECT name FROM nodes WHERE id = $1", instance_rows.node_id)
    replies: dict[int, ProviderReply] = {}

    async def answer(data: bytes) -> bytes:
        return encode(replies[decode(data, ProviderCall).instance_id])

    nc = await nats.connect(migrated["NATS_URL"])
    server = RequestServer(nc)
    await server.serve(subjects.provider_calls(name), answer)
    await nc.flush()
    yield replies
    await server.close()
    await nc.close()


async def running(rows: InstanceRows, tenant: Tenant) -> int:
    instance_id = await rows.add(tenant.id)
    await rows.db.execute("UPDATE instances SET status = 'running' WHERE id = $1", instance_id)
    return instance_id


async def test_a_providers_no_qr_yet_reaches_the_tenant_as_404_with_its_reason(
    client: httpx.AsyncClient, tenant: Tenant, instance_rows: InstanceRows, scripted_node: dict[int, ProviderReply]
) -> None:
    instance_id = await running(instance_rows, tenant)
    scripted_node[instance_id] = NO_QR_YET
    for accept in ("image/png", "application/json"):
        qr = await client.get(f"/api/instances/{instance_id}/qr", headers={**tenant.headers, "Accept": accept})
        assert qr.status_code == 404, qr.text
        assert qr.json() == {"error": "no QR yet (provider is starting)", "code": "not_found"}


@pytest.mark.parametrize("agent_reply", [NOT_HERE, PROVIDER_NOT_ANSWERING], ids=["not-on-this-node", "provider-silent"])
async def test_the_agents_own_answers_are_503_unreachable(
    client: httpx.AsyncClient,
    tenant: Tenant,
    instance_rows: InstanceRows,
    scripted_node: dict[int, ProviderReply],
    agent_reply: ProviderReply,
) -> None:
    """A node that does not run the instance, or whose provider is silent, is not the provider's 404."""
    instance_id = await running(instance_rows, tenant)
    scripted_node[instance_id] = agent_reply
    qr = await client.get(f"/api/instances/{instance_id}/qr", headers=tenant.headers)
    assert qr.status_code == 503, qr.text
    assert qr.json()["code"] == "unavailable"
    code = await client.post(
        f"/api/instances/{instance_id}/pair-code", json={"phone": "491701234567"}, headers=tenant.headers
    )
    assert code.status_code == 503, code.text
    logout = await client.post(f"/api/instances/{instance_id}/logout", headers=tenant.headers)
    assert logout.status_code == 503, logout.text


@pytest.fixture
async def outbound(js: JetStreamContext) -> AsyncIterator[list[int]]:
    """Instances whose queued sends the test leaves in `WGS_OUTBOUND`: purged after it."""
    instances: list[int] = []
    yield instances
    for instance_id in instances:
        await js.purge_stream(streams.OUTBOUND.name, subject=subjects.outbound(instance_id))


async def test_a_send_a_linked_provider_cannot_take_yet_is_queued_not_refused(
    client: httpx.AsyncClient,
    db,
    js: JetStreamContext,
    tenant: Tenant,
    instance_rows: InstanceRows,
    scripted_node: dict[int, ProviderReply],
    outbound: list[int],
) -> None:
    """`503 not ready` (restoring its session after a restart or a move) is a `202`: queued, as for an
    instance not running; `503 Client not connected` (pairing needed) stays the original's `503`."""
    reconnecting, unpaired = await running(instance_rows, tenant), await running(instance_rows, tenant)
    outbound.append(reconnecting)
    scripted_node[reconnecting] = ProviderReply(
        status=503, body=msgspec.json.encode({"error": "not ready", "reason": "the linked session is starting"})
    )
    scripted_node[unpaired] = ProviderReply(status=503, body=b'{"error": "Client not connected"}')
    body = {"to": "491700000002", "text": "hi"}

    queued = await client.post(f"/api/instances/{reconnecting}/send", json=body, headers=tenant.headers)
    assert queued.status_code == 202, queued.text
    assert queued.json()["status"] == "queued"
    info = await js.stream_info(streams.OUTBOUND.name, subjects_filter=subjects.outbound(reconnecting))
    assert sum((info.state.subjects or {}).values()) == 1
    view = await client.get(f"/api/instances/{reconnecting}/messages/{queued.json()['id']}", headers=tenant.headers)
    assert [entry["status"] for entry in view.json()["history"]] == ["queued"]

    refused = await client.post(f"/api/instances/{unpaired}/send", json=body, headers=tenant.headers)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == "Client not connected"
    assert await db.fetchval("SELECT count(*) FROM messages WHERE instance_id = $1", unpaired) == 0
