"""The node agent's sandbox network (real NATS): a phone held on the same node is handed its
envelopes directly, a phone on another node is reached over NATS, a number the directory does not
know fails at once, a known one is asked again until the retry window ends (as every phone is when
the directory does not answer), and leaving a phone stops both ways of reaching it. What a known
phone still away, or a phone whose provider does not answer, is sent waits in its mailbox.

Each test asks its own directory subject, answered by the test or by nobody, not the API's."""

import asyncio
import random
import time
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.js.client import JetStreamContext
from wgs_contracts import streams, subjects
from wgs_contracts.instance_events import ProviderReply, SandboxEnvelope
from wgs_kit.waiting import wait_until
from wgs_node_agent.network import NOT_ANSWERING_STATUS, PhoneAway, SandboxNetwork

from tests.support.sandbox_network import Directory, mailbox, no_directory

SHORT_RETRY = 0.3


class Phone:
    """A holder that answers with its name and remembers what it was handed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.taken: list[SandboxEnvelope] = []

    async def take_envelope(self, envelope: SandboxEnvelope) -> ProviderReply:
        self.taken.append(envelope)
        return ProviderReply(status=200, body=self.name.encode())


class NotAnswering(Phone):
    """A holder whose provider does not answer (its container stopped or restarting)."""

    async def take_envelope(self, envelope: SandboxEnvelope) -> ProviderReply:
        self.taken.append(envelope)
        return ProviderReply(status=NOT_ANSWERING_STATUS, body=b'{"error": "provider is not answering"}')


@pytest.fixture
async def connections(migrated: dict[str, str]) -> AsyncIterator[list[NatsClient]]:
    """Two NATS connections (two nodes) and a third that records every envelope sent over NATS."""
    opened = [await nats.connect(migrated["NATS_URL"]) for _ in range(3)]
    try:
        yield opened
    finally:
        for connection in opened:
            await connection.close()


def envelope_to(phone: str) -> SandboxEnvelope:
    return SandboxEnvelope(kind="message", sender="491700000000", recipient=phone, body=b'{"batch": []}')


async def over_nats(spy: NatsClient) -> Subscription:
    """Start recording the envelopes published on any phone subject (they wait in the
    subscription's queue: counted there, no callback task has to run first)."""
    recording = await spy.subscribe(subjects.sandbox_phone("*"))
    await spy.flush()
    return recording


async def settled(*connections: NatsClient) -> None:
    """Every message the connections published has reached the server and its subscribers (the
    server answers a flush after what it routed to that connection before)."""
    for connection in connections:
        await connection.flush()


async def test_a_phone_on_this_node_gets_its_envelope_directly(connections: list[NatsClient]) -> None:
    node, _, spy = connections
    network = SandboxNetwork(lambda: node, retry_seconds=SHORT_RETRY, directory_subject=no_directory())
    phone, holder = f"49170{random.randrange(10**7):07d}", Phone("local")
    subscription = await network.join(phone, holder)
    seen = await over_nats(spy)

    reply = await network.carry(envelope_to(phone))

    await settled(node, spy)
    assert reply.body == b"local"
    assert [e.recipient for e in holder.taken] == [phone]
    assert seen.pending_msgs == 0  # not one NATS message
    await network.leave(phone, holder, subscription)


async def test_a_phone_on_another_node_is_reached_over_nats(connections: list[NatsClient]) -> None:
    node_a, node_b, spy = connections
    here, there = (
        SandboxNetwork(lambda: node_a, directory_subject=no_directory()),
        SandboxNetwork(lambda: node_b, retry_seconds=SHORT_RETRY, directory_subject=no_directory()),
    )
    phone, holder = f"49171{random.randrange(10**7):07d}", Phone("remote")
    subscription = await here.join(phone, holder)
    seen = await over_nats(spy)

    reply = await there.carry(envelope_to(phone))

    await settled(node_b, spy)
    assert reply.body == b"remote"
    assert seen.pending_msgs == 1
    await here.leave(phone, holder, subscription)


async def test_without_a_directory_a_phone_nobody_holds_fails_after_the_retry_window(
    connections: list[NatsClient],
) -> None:
    network = SandboxNetwork(lambda: connections[0], retry_seconds=SHORT_RETRY, directory_subject=no_directory())
    with pytest.raises(NoRespondersError):
        await network.carry(envelope_to(f"49172{random.randrange(10**7):07d}"))


async def test_a_phone_left_is_no_longer_reached_either_way(connections: list[NatsClient]) -> None:
    node_a, node_b, _ = connections
    here = SandboxNetwork(lambda: node_a, retry_seconds=SHORT_RETRY, directory_subject=no_directory())
    there = SandboxNetwork(lambda: node_b, retry_seconds=SHORT_RETRY, directory_subject=no_directory())
    phone, holder = f"49173{random.randrange(10**7):07d}", Phone("gone")
    await here.leave(phone, holder, await here.join(phone, holder))

    for network in (here, there):
        with pytest.raises(NoRespondersError):
            await network.carry(envelope_to(phone))
    assert holder.taken == []


async def test_a_newer_holder_keeps_the_phone_when_the_older_one_leaves(connections: list[NatsClient]) -> None:
    network = SandboxNetwork(lambda: connections[0], retry_seconds=SHORT_RETRY, directory_subject=no_directory())
    phone, old, new = f"49174{random.randrange(10**7):07d}", Phone("old"), Phone("new")
    old_subscription = await network.join(phone, old)
    new_subscription = await network.join(phone, new)  # the instance restarted at a new generation
    await network.leave(phone, old, old_subscription)

    assert (await network.carry(envelope_to(phone))).body == b"new"
    await network.leave(phone, new, new_subscription)


async def test_a_number_the_directory_does_not_know_fails_at_once(connections: list[NatsClient]) -> None:
    node, directory_side, _ = connections
    directory = Directory(known=set())
    await directory.serve(directory_side)
    network = SandboxNetwork(lambda: node, retry_seconds=60.0, directory_subject=directory.subject)
    phone = f"49175{random.randrange(10**7):07d}"

    with pytest.raises(NoRespondersError):
        await asyncio.wait_for(network.carry(envelope_to(phone)), timeout=10)  # not the 60 s window
    assert directory.asked == [phone]


async def test_a_known_number_is_asked_again_until_its_instance_is_back(connections: list[NatsClient]) -> None:
    node_a, node_b, directory_side = connections
    phone, holder = f"49176{random.randrange(10**7):07d}", Phone("back")
    directory = Directory(known={phone})
    await directory.serve(directory_side)
    here = SandboxNetwork(lambda: node_a, directory_subject=directory.subject)
    there = SandboxNetwork(lambda: node_b, retry_seconds=30.0, directory_subject=directory.subject)
    carried = asyncio.ensure_future(there.carry(envelope_to(phone)))

    async def looked_up() -> bool:
        return directory.asked == [phone]

    await wait_until(looked_up, timeout=10, what="the directory lookup")
    subscription = await here.join(phone, holder)  # its instance is back (restarted, or moved here)
    reply = await asyncio.wait_for(carried, timeout=10)

    assert reply.body == b"back"
    assert directory.asked == [phone]  # asked once, at the first unanswered attempt
    await here.leave(phone, holder, subscription)


async def test_a_known_number_still_away_when_the_window_ends_is_away(connections: list[NatsClient]) -> None:
    node, directory_side, _ = connections
    phone = f"49177{random.randrange(10**7):07d}"
    directory = Directory(known={phone})
    await directory.serve(directory_side)
    network = SandboxNetwork(lambda: node, retry_seconds=SHORT_RETRY, directory_subject=directory.subject)
    started = time.monotonic()

    with pytest.raises(PhoneAway):
        await network.carry(envelope_to(phone))
    assert time.monotonic() - started >= SHORT_RETRY


async def test_an_envelope_for_a_known_phone_still_away_waits_in_its_mailbox_once(
    connections: list[NatsClient], js: JetStreamContext
) -> None:
    node, directory_side, _ = connections
    phone = f"49178{random.randrange(10**7):07d}"
    directory = Directory(known={phone})
    await directory.serve(directory_side)
    network = SandboxNetwork(lambda: node, retry_seconds=SHORT_RETRY, directory_subject=directory.subject)
    envelope = envelope_to(phone)

    assert await network.carry_or_park(envelope) is None
    assert await network.carry_or_park(envelope) is None  # the same page routed again, after a crash

    assert await mailbox(js, phone) == [envelope]
    await js.purge_stream(streams.SANDBOX_MAIL.name, subject=subjects.sandbox_mail(phone))


async def test_an_envelope_for_a_phone_whose_provider_does_not_answer_waits_in_its_mailbox(
    connections: list[NatsClient], js: JetStreamContext
) -> None:
    node_a, node_b, _ = connections
    here = SandboxNetwork(lambda: node_a, directory_subject=no_directory())
    there = SandboxNetwork(lambda: node_b, directory_subject=no_directory())
    phone = f"49179{random.randrange(10**7):07d}"
    holder = NotAnswering("stopped")
    subscription = await here.join(phone, holder)

    for network in (here, there):  # its own node, and another
        assert await network.carry_or_park(envelope_to(phone)) is None

    assert await mailbox(js, phone) == [envelope_to(phone)]  # one copy: the same envelope twice
    await here.leave(phone, holder, subscription)
    await js.purge_stream(streams.SANDBOX_MAIL.name, subject=subjects.sandbox_mail(phone))


async def test_an_unknown_number_fails_and_nothing_waits_for_it(
    connections: list[NatsClient], js: JetStreamContext
) -> None:
    node, directory_side, _ = connections
    directory = Directory(known=set())
    await directory.serve(directory_side)
    network = SandboxNetwork(lambda: node, retry_seconds=SHORT_RETRY, directory_subject=directory.subject)
    phone = f"49170{random.randrange(10**7):07d}"

    with pytest.raises(NoRespondersError):
        await network.carry_or_park(envelope_to(phone))
    assert await mailbox(js, phone) == []
