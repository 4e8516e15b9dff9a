"""The API relays the sends waiting for one instance as one NATS request, per instance, on the real
NATS server; the node agent's side is a scripted responder counting what it is asked."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec
import nats
import pytest
from nats.aio.client import Client as NatsClient
from wgs_api.domain.messaging.relay import SendRelay, relay_sends
from wgs_api.messaging import ApiMessaging
from wgs_contracts import subjects
from wgs_contracts.instance_events import ProviderCall, ProviderReply, ProviderSends, ProviderSendsReply
from wgs_kit.messaging import decode, encode
from wgs_kit.requests import RequestServer
from wgs_kit.waiting import wait_until

SLOW_INSTANCE = 3


@dataclass
class Agent:
    """Answers a node's provider calls and sends: each send's reply echoes its id; counts the requests."""

    node: str
    calls: list[int] = field(default_factory=list)  # instance id of each plain call
    batches: list[tuple[int, int]] = field(default_factory=list)  # (instance id, sends) of each batch
    slow_released: asyncio.Event = field(default_factory=asyncio.Event)  # until set, SLOW_INSTANCE answers nothing

    async def reply(self, instance_id: int, body: bytes) -> ProviderReply:
        if instance_id == SLOW_INSTANCE:
            await self.slow_released.wait()  # a provider that takes its time (what this instance's sends share)
        return ProviderReply(status=200, body=msgspec.json.encode({"id": json.loads(body)["id"], "status": "sent"}))

    async def on_call(self, data: bytes) -> bytes:
        call = decode(data, ProviderCall)
        self.calls.append(call.instance_id)
        return encode(await self.reply(call.instance_id, call.body or b""))

    async def on_sends(self, data: bytes) -> bytes:
        sends = decode(data, ProviderSends)
        self.batches.append((sends.instance_id, len(sends.bodies)))
        replies = [await self.reply(sends.instance_id, body) for body in sends.bodies]
        return encode(ProviderSendsReply(replies=replies))


@pytest.fixture
async def relay(migrated: dict[str, str]) -> AsyncIterator[tuple[ApiMessaging, Agent, NatsClient]]:
    messaging = ApiMessaging(migrated["NATS_URL"])
    await messaging.broker.start()  # the connection only: this test consumes no events
    agent = Agent(node=f"relay-{uuid.uuid4().hex[:8]}")
    nc = await nats.connect(migrated["NATS_URL"])
    requests = RequestServer(nc)  # as the agent answers: each request in its own task
    await requests.serve(subjects.provider_calls(agent.node), agent.on_call)
    await requests.serve(subjects.provider_sends(agent.node), agent.on_sends)
    await nc.flush()

    async def answering() -> bool:  # both connections up and the agent's interest known to the server
        probe = ProviderCall(instance_id=0, method="POST", path="/messages", body=body("probe"))
        return await messaging.call_provider(agent.node, probe, timeout=2) is not None

    await wait_until(answering, timeout=30, what="the scripted agent answering")
    agent.calls.clear()
    yield messaging, agent, nc
    await requests.close()
    await nc.close()
    await messaging.broker.stop()


def body(message_id: str) -> bytes:
    return msgspec.json.encode({"id": message_id, "to": "491700000002", "content": {"type": "text", "text": "x"}})


async def test_sends_waiting_together_go_in_one_request_each_with_its_own_answer(relay) -> None:
    messaging, agent, _ = relay
    sends = SendRelay(relay_sends)
    replies = await asyncio.gather(
        *(sends.send(messaging, agent.node, 1, body(f"m{i}")) for i in range(10)),
        sends.send(messaging, agent.node, 2, body("other")),
    )
    assert [json.loads(r.body)["id"] for r in replies if r is not None] == [f"m{i}" for i in range(10)] + ["other"]
    assert agent.batches == [(1, 10)]
    assert agent.calls == [2]  # a lone send is a plain call
    assert await sends.send(messaging, agent.node, 1, body("later")) is not None
    assert agent.calls == [2, 1]


async def test_sends_arriving_while_the_instances_request_is_in_flight_wait_for_it_and_go_together(relay) -> None:
    """One request in flight per instance (decision 39): a second one would split the batch."""
    messaging, agent, _ = relay
    sends = SendRelay(relay_sends)
    first = asyncio.ensure_future(sends.send(messaging, agent.node, SLOW_INSTANCE, body("first")))

    async def first_call_arrived() -> bool:
        return agent.calls == [SLOW_INSTANCE]

    await wait_until(first_call_arrived, timeout=10, what="the first send at its agent")
    later: list[asyncio.Future[ProviderReply | None]] = []
    for waiting in range(1, 4):  # one by one: each finds the first request still in flight
        later.append(asyncio.ensure_future(sends.send(messaging, agent.node, SLOW_INSTANCE, body(f"later{waiting}"))))

        async def queued(count: int = waiting) -> bool:
            return sends.waiting(messaging, agent.node, SLOW_INSTANCE) == count

        await wait_until(queued, timeout=5, what=f"{waiting} send(s) waiting for the request in flight")
    agent.slow_released.set()
    replies = await asyncio.gather(first, *later)
    assert [json.loads(r.body)["id"] for r in replies if r is not None] == ["first", "later1", "later2", "later3"]
    assert (agent.calls, agent.batches) == ([SLOW_INSTANCE], [(SLOW_INSTANCE, 3)])


async def test_a_slow_instance_holds_up_only_its_own_sends(relay) -> None:
    messaging, agent, _ = relay
    sends = SendRelay(relay_sends)
    slow = asyncio.gather(*(sends.send(messaging, agent.node, SLOW_INSTANCE, body(f"s{i}")) for i in range(3)))

    async def slow_request_arrived() -> bool:
        return any(instance == SLOW_INSTANCE for instance, _ in agent.batches)

    await wait_until(slow_request_arrived, timeout=10, what="the slow instance's request at its agent")
    quick = await asyncio.wait_for(
        asyncio.gather(*(sends.send(messaging, agent.node, 4, body(f"q{i}")) for i in range(3))), timeout=10
    )
    assert not slow.done()  # the other instance's sends were answered while this one's provider still holds
    assert all(r is not None and r.status == 200 for r in quick)
    agent.slow_released.set()
    assert all(r is not None and r.status == 200 for r in await slow)


async def test_sends_nobody_answers_are_none_each(relay) -> None:
    messaging, _, _ = relay
    sends = SendRelay(relay_sends)
    replies = await asyncio.gather(*(sends.send(messaging, "no-such-node", 1, body(f"m{i}")) for i in range(3)))
    assert replies == [None, None, None]


async def test_idle_queues_are_dropped_beyond_the_bound(relay) -> None:
    messaging, agent, _ = relay
    sends = SendRelay(relay_sends, max_queues=2)
    for instance in (11, 12, 13):
        assert await sends.send(messaging, agent.node, instance, body(f"m{instance}")) is not None
    assert len(sends._queues) <= 2
