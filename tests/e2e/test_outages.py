"""Restarts of NATS and of PostgreSQL while sandbox instance A sends to B, on a gateway of the test's
own (`bench.stack.control_plane`: NATS, PostgreSQL, API; a Docker engine with the sandbox image,
the scheduler, state and webhooks services and a node agent), so that the test can restart them.

Every send the API accepted (`200` or `202`) reaches B once, and both webhooks get its events once
each (by `webhook-id`): accepted sends are never lost (ARCHITECTURE.md section 8). A send that a
PostgreSQL outage refused is a `503`, never a `500`, and never reaches B.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from wgs_devstack.docker_engine import DockerEngine
from wgs_devstack.images import copy_image
from wgs_kit.waiting import wait_until

from bench.send import paired_sandbox
from bench.stack import Stack, control_plane
from tests.support.api import unique_phone
from tests.support.sandbox import SANDBOX_IMAGE
from tests.support.webhooks import Receiver

SENDS_PER_PHASE = 60
RESTART_AFTER = 20  # sends started before the restart; the rest go out during and after it
PACE_SECONDS = 0.02  # between the starts of two sends: 50/s, a bounded loop
UNLIMITED = {"sendRatePerSecond": 1000, "sendBurst": 1000}


@pytest.fixture
async def gateway(engines: list[DockerEngine]) -> AsyncIterator[Stack]:
    async with control_plane(tenant=UNLIMITED, settings={"WGS_WEBHOOKS_ALLOW_PRIVATE": "1"}) as stack:
        engine = await stack.start_engine("outages")
        await copy_image(engines[0].host, engine.host, SANDBOX_IMAGE)
        for name, module in (("scheduler", "wgs_scheduler"), ("state", "wgs_state"), ("webhooks", "wgs_webhooks")):
            stack.start_service(name, module)
        await stack.register_node("outages-n1", engine)
        yield stack


async def send_through(
    stack: Stack, instance_id: int, to: str, phase: str, restart: Callable[[], Awaitable[None]]
) -> dict[str, tuple[int, dict]]:
    """SENDS_PER_PHASE sends, `restart` started after RESTART_AFTER of them: {text: (status, body)}."""
    answers: dict[str, tuple[int, dict]] = {}

    async def one(text: str) -> None:
        response = await stack.client.post(
            f"/api/instances/{instance_id}/send", json={"to": to, "text": text}, headers=stack.headers, timeout=60
        )
        answers[text] = (response.status_code, response.json())

    sends, restarting = [], None
    for index in range(SENDS_PER_PHASE):
        if index == RESTART_AFTER:
            restarting = asyncio.ensure_future(restart())
        sends.append(asyncio.ensure_future(one(f"{phase} {index}")))
        await asyncio.sleep(PACE_SECONDS)
    await asyncio.gather(*sends)
    assert restarting is not None
    await restarting
    return answers


async def test_accepted_sends_and_their_events_survive_restarts_of_nats_and_postgresql(
    gateway: Stack, receiver: Receiver
) -> None:
    stack = gateway
    phone_a, phone_b = unique_phone(), unique_phone()
    a = await paired_sandbox(stack, phone_a)
    b = await paired_sandbox(stack, phone_b)
    for instance_id, name, events in ((a, "a", ["message.status"]), (b, "b", ["message"])):
        response = await stack.client.post(
            f"/api/instances/{instance_id}/webhooks",
            json={"url": receiver.url(name), "events": events},
            headers=stack.headers,
        )
        assert response.status_code == 201, response.text

    async def restart_nats() -> None:
        await stack.nats.stop()
        await stack.nats.start()

    async def restart_postgres() -> None:
        await stack.postgres.stop()
        await stack.postgres.start()

    through_nats = await send_through(stack, a, phone_b, "nats", restart_nats)
    through_postgres = await send_through(stack, a, phone_b, "postgres", restart_postgres)

    assert {status for status, _ in through_nats.values()} <= {200, 202}, through_nats
    assert {status for status, _ in through_postgres.values()} <= {200, 202, 503}, through_postgres
    refused = [body for status, body in through_postgres.values() if status == 503]
    assert refused, "no send met the PostgreSQL outage"
    assert all(body["code"] == "unavailable" for body in refused), refused
    accepted = {text: body["id"] for text, (status, body) in (through_nats | through_postgres).items() if status != 503}

    def texts_at_b() -> dict[str, set[str]]:
        """Each text B's webhook received, with the event ids it came under."""
        seen: dict[str, set[str]] = {}
        for hit in receiver.requests("b"):
            seen.setdefault(hit.json["data"]["text"], set()).add(hit.event_id)
        return seen

    def delivered_at_a() -> set[str]:
        return {h.json["data"]["id"] for h in receiver.requests("a") if h.json["data"]["status"] == "delivered"}

    async def everything_arrived() -> bool:
        return set(accepted) <= set(texts_at_b()) and set(accepted.values()) <= delivered_at_a()

    await wait_until(everything_arrived, timeout=120, interval=0.5, what="every accepted send and its status")
    at_b = texts_at_b()
    assert all(len(at_b[text]) == 1 for text in accepted), {t: ids for t, ids in at_b.items() if len(ids) > 1}
    assert set(at_b) == set(accepted)  # a send refused for PostgreSQL was refused before its provider
