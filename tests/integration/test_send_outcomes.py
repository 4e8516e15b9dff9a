"""What a send leaves in PostgreSQL for each answer of its provider (decision 35), and what a retry
with its idempotency key gets (`send_keys`), on real NATS and
PostgreSQL: the message is recorded with a provisional `sent` while the provider is asked, kept
when it answers 200, forgotten when it refuses, and put back to `queued` when nobody answers.
The node agent is a scripted responder; the send runs in this process (`services.send`) with a
leased context, so no scheduler or node is involved."""

import asyncio
import contextlib
import functools
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import msgspec
import nats
import pytest
from nats.aio.client import Client as NatsClient
from wgs_api.domain.messaging import schemas, services
from wgs_api.domain.messaging.leases import LEASES, SendContext
from wgs_api.domain.messaging.services import REQUEUE_MESSAGE, MessageRecord, ProviderAnswer, record_messages, send
from wgs_api.errors import Invalid, Unavailable
from wgs_api.events import record_message_statuses
from wgs_api.messaging import ApiMessaging
from wgs_contracts import streams, subjects
from wgs_contracts.instance_events import (
    DeliveryStatus,
    ProviderCall,
    ProviderReply,
    ProviderSends,
    ProviderSendsReply,
)
from wgs_db.engine import fetch
from wgs_kit.messaging import decode, encode
from wgs_kit.requests import RequestServer
from wgs_kit.waiting import wait_until
from wgs_node_agent.agent import NOT_HERE
from wgs_node_agent.session import PROVIDER_NOT_ANSWERING

from tests.integration.test_api_events import message_status
from tests.support.api import Tenant, create_tenant, pending_instance

TO = "491701234567"


@dataclass
class Agent:
    """Answers every send with the reply scripted for its instance, once `answering` is set;
    remembers the message ids of each request."""

    replies: dict[int, ProviderReply]
    requests: list[list[str]] = field(default_factory=list)
    answering: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.answering.set()

    async def on_call(self, data: bytes) -> bytes:
        call = decode(data, ProviderCall)
        self.requests.append([json.loads(call.body or b"{}")["id"]])
        await self.answering.wait()
        return encode(self.replies[call.instance_id])

    async def on_sends(self, data: bytes) -> bytes:
        sends = decode(data, ProviderSends)
        self.requests.append([json.loads(body)["id"] for body in sends.bodies])
        await self.answering.wait()
        return encode(ProviderSendsReply(replies=[self.replies[sends.instance_id]] * len(sends.bodies)))


@pytest.fixture(autouse=True)
def leases_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """The leases these tests grant stay: the session's scheduler, when one runs, announces the
    status of their instances (no node offers their provider), which would end them."""
    monkeypatch.setattr(LEASES, "end", lambda instance_id: None)


@pytest.fixture
async def agent(migrated: dict[str, str], api_pool) -> AsyncIterator[tuple[ApiMessaging, Agent, str]]:
    messaging = ApiMessaging(migrated["NATS_URL"])
    await messaging.broker.start()  # the connection only: this test consumes no events
    node = f"outcomes-{uuid.uuid4().hex[:8]}"
    agent = Agent({})
    nc: NatsClient = await nats.connect(migrated["NATS_URL"])
    requests = RequestServer(nc)
    await requests.serve(subjects.provider_calls(node), agent.on_call)
    await requests.serve(subjects.provider_sends(node), agent.on_sends)
    await nc.flush()
    yield messaging, agent, node
    await requests.close()
    await nc.close()
    await messaging.broker.stop()


async def leased_instance(client: httpx.AsyncClient, tenant: Tenant, node: str | None, tokens: int = 10) -> int:
    """An instance whose sends this process takes from a lease saying it runs on `node`."""
    instance_id = await pending_instance(client, tenant)
    running = SendContext(status="running", desired_state="running", node=node, rate_per_second=100.0, retry_after=None)
    LEASES.grant((instance_id, tenant.id), running, tokens, limit=tokens)
    return instance_id


async def stored(message_id: str) -> tuple[int, list[tuple[str, bool]]]:
    """(rows in `messages`, [(status, provisional)] in the order reached)."""
    messages = await fetch("SELECT count(*) AS n FROM messages WHERE id = $1", message_id)
    statuses = await fetch(
        "SELECT status, provisional FROM message_statuses WHERE message_id = $1 ORDER BY at, status", message_id
    )
    return messages[0]["n"], [(row["status"], row["provisional"]) for row in statuses]


async def last_queued_id(messaging: ApiMessaging, instance_id: int) -> str:
    """The id of the send queued last for the instance (its durable queue on `WGS_OUTBOUND`)."""
    queued = await messaging.broker.connection.jetstream().get_last_msg(
        streams.OUTBOUND.name, subjects.outbound(instance_id)
    )
    return json.loads(queued.data or b"{}")["id"]


def sent_reply(status: int, body: dict) -> ProviderReply:
    return ProviderReply(status=status, body=msgspec.json.encode(body))


async def test_a_sent_message_is_recorded_provisionally_and_confirmed_by_the_providers_event(
    client: httpx.AsyncClient, agent: tuple[ApiMessaging, Agent, str], db
) -> None:
    messaging, script, node = agent
    tenant = await create_tenant(client)
    instance_id = await leased_instance(client, tenant, node)
    script.replies[instance_id] = sent_reply(200, {"status": "sent"})
    try:
        result, sent = await send(messaging, tenant.id, instance_id, schemas.SendBody(to=TO, text="hi"))
        assert (result.status, sent) == ("ok", True)
        assert await stored(result.id) == (1, [("sent", True)])
        confirmation = message_status(tenant.id, instance_id, result.id, DeliveryStatus.SENT)
        await record_message_statuses([confirmation, confirmation])  # a batch may repeat an event
        assert await stored(result.id) == (1, [("sent", False)])
    finally:
        LEASES.end_all()
        await db.execute("DELETE FROM instances WHERE id = $1", instance_id)


async def test_the_sends_of_one_relay_request_are_recorded_by_one_statement(
    client: httpx.AsyncClient, agent: tuple[ApiMessaging, Agent, str], db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sends arriving one by one while their instance's requests are in flight are relayed together
    and recorded together: their rows are written by one transaction."""
    messaging, script, node = agent
    monkeypatch.setattr(LEASES, "lease_seconds", 60.0)  # the lease serves every send of the test, unrenewed
    tenant = await create_tenant(client)
    instance_id = await leased_instance(client, tenant, node, tokens=100)
    script.replies[instance_id] = sent_reply(200, {"status": "sent"})
    script.answering.clear()  # the provider holds its answers: the first request stays in flight

    def start_send() -> asyncio.Future[tuple[schemas.SendResult, bool]]:
        return asyncio.ensure_future(send(messaging, tenant.id, instance_id, schemas.SendBody(to=TO, text="hi")))

    async def requests_at_agent(count: int) -> bool:
        return len(script.requests) == count

    async def queued_sends(count: int) -> bool:
        return services.SENDS.waiting(messaging, node, instance_id) == count

    sends: list[asyncio.Future[tuple[schemas.SendResult, bool]]] = []
    try:
        sends.append(start_send())
        await wait_until(functools.partial(requests_at_agent, 1), timeout=10, what="a request at the agent")
        for waiting in range(1, 5):  # each alone, while the first waits for the provider
            sends.append(start_send())
            await wait_until(functools.partial(queued_sends, waiting), timeout=10, what="the send in its queue")
        script.answering.set()
        results = [result for result, _ in await asyncio.gather(*sends)]
        later = [result.id for result in results[1:]]
        assert script.requests[1:] == [later]
        transactions = await fetch("SELECT DISTINCT xmin::text FROM messages WHERE id = ANY($1::text[])", later)
        assert len(transactions) == 1
        assert [await stored(message_id) for message_id in later] == [(1, [("sent", True)])] * 4
    finally:
        script.answering.set()
        await asyncio.gather(*sends, return_exceptions=True)
        LEASES.end_all()
        await db.execute("DELETE FROM instances WHERE id = $1", instance_id)


@contextlib.asynccontextmanager
async def inserts_refused(db, table: str, when: str) -> AsyncIterator[None]:
    """PostgreSQL refuses the rows of `table` that match `when` (a trigger raising) while the block runs."""
    await db.execute(
        "CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql"
        " AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
    )
    await db.execute(
        f"CREATE TRIGGER test_refuse BEFORE INSERT ON {table} FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION test_refuse()"
    )
    try:
        yield
    finally:
        await db.execute(f"DROP TRIGGER test_refuse ON {table}")
        await db.execute("DROP FUNCTION test_refuse()")


@pytest.fixture
async def message_refused(db) -> AsyncIterator[uuid.UUID]:
    """A message id whose row PostgreSQL refuses, for this test only."""
    message_id = uuid.uuid4()
    async with inserts_refused(db, "messages", f"NEW.id = '{message_id.hex}'"):
        yield message_id


async def test_a_send_the_provider_took_is_ok_even_when_its_record_fails(
    client: httpx.AsyncClient,
    agent: tuple[ApiMessaging, Agent, str],
    db,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    message_refused: uuid.UUID,
) -> None:
    """The message was sent: answering an error would make the client send it again."""
    messaging, script, node = agent
    tenant = await create_tenant(client)
    instance_id = await leased_instance(client, tenant, node)
    script.replies[instance_id] = sent_reply(200, {"status": "sent"})
    monkeypatch.setattr(services, "uuid4", lambda: message_refused)
    try:
        result, sent = await send(messaging, tenant.id, instance_id, schemas.SendBody(to=TO, text="hi"))
        assert (result.status, result.id, sent) == ("ok", message_refused.hex, True)
        assert "recording it failed" in caplog.text
        assert await stored(result.id) == (0, [])  # only its history is missing
    finally:
        LEASES.end_all()
        await db.execute("DELETE FROM instances WHERE id = $1", instance_id)


@pytest.fixture
async def queued_status_refused(db) -> AsyncIterator[uuid.UUID]:
    """A message id whose `queued` status PostgreSQL refuses, for this test only."""
    message_id = uuid.uuid4()
    async with inserts_refused(
        db, "message_statuses", f"NEW.message_id = '{message_id.hex}' AND NEW.status = 'queued'"
    ):
        yield message_id


@pytest.mark.parametrize("path", ["queued at once", "queued after no answer"])
async def test_a_queued_send_is_202_even_when_its_record_fails(
    client: httpx.AsyncClient,
    agent: tuple[ApiMessaging, Agent, str],
    db,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    queued_status_refused: uuid.UUID,
    path: str,
) -> None:
    """The send is in the instance's queue and will go out: answering an error would make the client send it again."""
    messaging, script, node = agent
    monkeypatch.setattr(services, "uuid4", lambda: queued_status_refused)
    tenant = await create_tenant(client)
    instance_id = await leased_instance(client, tenant, node if path == "queued after no answer" else None)
    script.replies[instance_id] = PROVIDER_NOT_ANSWERING
    try:
        result, sent = await send(messaging, tenant.id, instance_id, schemas.SendBody(to=TO, text="hi"))
        assert (result.status, result.id, sent) == ("queued", queued_status_refused.hex, False)
        assert "recording it failed" in caplog.text
        assert await last_queued_id(messaging, instance_id) == result.id
    finally:
        LEASES.end_all()
        await db.execute("DELETE FROM instances WHERE id = $1", instance_id)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (sent_reply(503, {"error": "Client not connected"}), Unavailable),
        (sent_reply(422, {"error": "no such recipient", "field": "to"}), Invalid),
        (sent_reply(400, {"error": "media too large"}), ProviderAnswer),
    ],
)
async def test_a_send_the_provider_refuses_leaves_nothing(
    client: httpx.AsyncClient,
    agent: tuple[ApiMessaging, Agent, str],
    db,
    monkeypatch: pytest.MonkeyPatch,
    reply: ProviderReply,
    error: type,
) -> None:
    messaging, script, node = agent
    message_id = uuid.uuid4()
    monkeypatch.setattr(services, "uuid4", lambda: message_id)
    tenant = await create_tenant(client)
    instance_id = await leased_instance(client, tenant, node)
    script.replies[instance_id] = reply
    try:
        with pytest.raises(error):
            await send(messaging, tenant.id, instance_id, schemas.SendBody(to=TO, text="hi"))
        assert await stored(message_id.hex) == (0, [])
    finally:
        LEASES.end_all()
        await db.execute("DELETE FROM instances WHERE id = $1", instance_id)


@pytest.mark.parametrize("answer", ["not here", "no answer from the provider", "no agent"])
async def test_a_send_nobody_answered_is_queued_without_its_provisional_sent(
    client: httpx.AsyncClient, agent: tuple[ApiMessaging, Agent, str], db, answer: str
) -> None:
    messaging, script, node = agent
    tenant = await create_tenant(client)
    instance_id = await leased_instance(client, tenant, node if answer != "no agent" else f"gone-{node}")
    script.replies[instance_id] = {
        "not here": NOT_HERE,
        "no answer from the provider": PROVIDER_NOT_ANSWERING,
    }.get(answer, sent_reply(200, {}))
    try:
        result, sent = await send(messaging, tenant.id, instance_id, schemas.SendBody(to=TO, text="hi"))
        assert (result.status, sent) == ("queued", False)
        assert await stored(result.id) == (1, [("queued", False)])
        assert await last_queued_id(messaging, instance_id) == result.id
    finally:
        LEASES.end_all()
        await db.execute("DELETE FROM instances WHERE id = $1", instance_id)


async def test_a_requeue_keeps_a_sent_the_provider_confirmed_meanwhile(client: httpx.AsyncClient, api_pool, db) -> None:
    """A provider that did not answer in time may still have sent: its own event wins over the take-back."""
    tenant = await create_tenant(client)
    instance_id = await pending_instance(client, tenant)
    confirmed, unconfirmed = f"c-{uuid.uuid4().hex}", f"u-{uuid.uuid4().hex}"
    try:
        await record_messages(
            [MessageRecord(m, instance_id, tenant.id, TO, "text", "sent") for m in (confirmed, unconfirmed)]
        )
        await record_message_statuses([message_status(tenant.id, instance_id, confirmed, DeliveryStatus.SENT)])
        for message_id in (confirmed, unconfirmed):
            await fetch(REQUEUE_MESSAGE, message_id)
        assert await stored(confirmed) == (1, [("sent", False), ("queued", False)])
        assert await stored(unconfirmed) == (1, [("queued", False)])
        # The provider's event arriving after the take-back is recorded as it always was.
        await record_message_statuses([message_status(tenant.id, instance_id, unconfirmed, DeliveryStatus.SENT)])
        assert await stored(unconfirmed) == (1, [("queued", False), ("sent", False)])
    finally:
        await db.execute("DELETE FROM instances WHERE id = $1", instance_id)
        await db.execute("DELETE FROM message_statuses WHERE message_id = ANY($1::text[])", [confirmed, unconfirmed])


# --- idempotency keys (`send_keys`) -------------------------------------------------------------


@dataclass
class Sending:
    """An instance whose sends the scripted agent answers (`200 sent` unless told otherwise)."""

    messaging: ApiMessaging
    script: Agent
    tenant: Tenant
    instance_id: int

    async def send(self, body: schemas.SendBody, key: str) -> tuple[schemas.SendResult, bool]:
        return await send(self.messaging, self.tenant.id, self.instance_id, body, key)


@pytest.fixture
async def sending(client: httpx.AsyncClient, agent: tuple[ApiMessaging, Agent, str], db) -> AsyncIterator[Sending]:
    messaging, script, node = agent
    tenant = await create_tenant(client)
    instance_id = await leased_instance(client, tenant, node)
    script.replies[instance_id] = sent_reply(200, {"status": "sent"})
    try:
        yield Sending(messaging, script, tenant, instance_id)
    finally:
        LEASES.end_all()
        await db.execute("DELETE FROM instances WHERE id = $1", instance_id)


async def test_a_retry_with_its_key_gets_the_sent_message_without_sending_it_again(sending: Sending) -> None:
    body = schemas.SendBody(to=TO, text="hi")
    result, sent = await sending.send(body, "order-17")
    assert (result.status, sent) == ("ok", True)
    await record_message_statuses(
        [message_status(sending.tenant.id, sending.instance_id, result.id, DeliveryStatus.SENT)]
    )
    assert await sending.send(body, "order-17") == (result, True)
    assert sending.script.requests == [[result.id]]  # the retry was answered from the record
    assert await stored(result.id) == (1, [("sent", False)])


async def test_a_retry_before_the_first_send_was_confirmed_sends_the_same_message_again(
    sending: Sending, caplog: pytest.LogCaptureFixture
) -> None:
    """Its `sent` is still provisional (the first request may yet be taken back): the retry asks the
    provider again under the same id, which a provider takes once."""
    body = schemas.SendBody(to=TO, text="hi")
    first = await sending.send(body, "order-18")
    assert await sending.send(body, "order-18") == first
    assert sending.script.requests == [[first[0].id], [first[0].id]]
    assert await stored(first[0].id) == (1, [("sent", True)])
    assert "recording it failed" not in caplog.text  # the retry's record adds nothing, and fails nothing


async def test_a_key_used_for_another_request_is_422_and_changes_nothing(sending: Sending) -> None:
    result, _ = await sending.send(schemas.SendBody(to=TO, text="hi"), "k")
    for other in (schemas.SendBody(to=TO, text="bye"), schemas.SendBody(to="491700000009", text="hi")):
        with pytest.raises(Invalid) as refused:
            await sending.send(other, "k")
        assert refused.value.field == "Idempotency-Key"
    assert sending.script.requests == [[result.id]]
    assert await stored(result.id) == (1, [("sent", True)])


async def test_a_queued_send_retried_with_its_key_is_queued_once(sending: Sending) -> None:
    nobody = SendContext("running", "running", f"gone-{uuid.uuid4().hex[:8]}", rate_per_second=100.0, retry_after=None)
    LEASES.end_all()
    LEASES.grant((sending.instance_id, sending.tenant.id), nobody, 10, limit=10)  # no agent answers for its node
    body = schemas.SendBody(to=TO, text="later")
    result, sent = await sending.send(body, "order-19")
    assert (result.status, sent) == ("queued", False)
    assert await sending.send(body, "order-19") == (result, False)
    subject = subjects.outbound(sending.instance_id)
    info = await sending.messaging.broker.connection.jetstream().stream_info(
        streams.OUTBOUND.name, subjects_filter=subject
    )
    assert (info.state.subjects or {}).get(subject) == 1
    assert await stored(result.id) == (1, [("queued", False)])


async def test_a_send_the_provider_refused_releases_its_key(sending: Sending, db) -> None:
    sending.script.replies[sending.instance_id] = sent_reply(503, {"error": "Client not connected"})
    body = schemas.SendBody(to=TO, text="hi")
    with pytest.raises(Unavailable):
        await sending.send(body, "order-20")
    [[refused]] = sending.script.requests
    assert await stored(refused) == (0, [])
    assert await db.fetchval("SELECT count(*) FROM send_keys WHERE instance_id = $1", sending.instance_id) == 0
    sending.script.replies[sending.instance_id] = sent_reply(200, {"status": "sent"})
    result, sent = await sending.send(body, "order-20")
    assert sent
    assert result.id != refused  # nothing was sent: the key was free again
    assert await stored(result.id) == (1, [("sent", True)])


async def test_a_key_belongs_to_its_instance(client: httpx.AsyncClient, sending: Sending, db) -> None:
    other = await leased_instance(client, sending.tenant, f"outcomes-{uuid.uuid4().hex[:8]}")
    try:
        first, _ = await sending.send(schemas.SendBody(to=TO, text="hi"), "same-key")
        queued, _ = await send(
            sending.messaging, sending.tenant.id, other, schemas.SendBody(to=TO, text="hi"), "same-key"
        )
        assert queued.id != first.id
    finally:
        await db.execute("DELETE FROM instances WHERE id = $1", other)
