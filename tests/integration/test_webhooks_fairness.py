"""A tenant's slow endpoints hold at most its share of the webhooks service's worker slots
(`WGS_WEBHOOKS_TENANT_CONCURRENCY`), so another tenant's deliveries keep going: real NATS, PostgreSQL,
API, a webhooks process of few slots, and a local receiver."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from nats.js.client import JetStreamContext
from wgs_devstack.services import Service
from wgs_kit.waiting import wait_until

from tests.conftest import WEBHOOK_TIMEOUT_SECONDS as TIMEOUT_SECONDS
from tests.integration.conftest import InstanceRows
from tests.integration.test_webhooks_delivery import (
    DEADLINE,
    endpoint,
    instance_endpoint,
    message,
    publish,
    received,
    received_requests,
)
from tests.support.api import create_tenant
from tests.support.webhooks import Behaviour, Hit, Receiver

SLOTS = 4
TENANT_SLOTS = 2
SLOW_SECONDS = TIMEOUT_SECONDS * 0.9  # answered just before the timeout: slow, yet delivered


def started_up(service: Service) -> int:
    """How many times the service's log says it is up."""
    path = service.process.log_path
    return path.read_text(errors="replace").count("webhooks up") if path.exists() else 0


@pytest.fixture
async def small_webhooks(webhooks: Service, work_dir: Path) -> AsyncIterator[Service]:
    """A webhooks process of `SLOTS` worker slots, `TENANT_SLOTS` per tenant, alone: the session's
    process (32 slots) would serve the test's deliveries too, so it is stopped meanwhile, and started
    again after (once up)."""
    await webhooks.stop()
    env = {**webhooks.env, "WGS_WEBHOOKS_CONCURRENCY": str(SLOTS), "WGS_WEBHOOKS_TENANT_CONCURRENCY": str(TENANT_SLOTS)}
    service = Service("webhooks-small", "wgs_webhooks", env, work_dir / "logs")
    ups = started_up(service)
    service.start()
    try:

        async def up() -> bool:
            return started_up(service) > ups

        await wait_until(up, DEADLINE, what="the small webhooks process up")
        yield service
    finally:
        await service.stop()
        ups = started_up(webhooks)
        webhooks.start()

        async def back() -> bool:
            return started_up(webhooks) > ups

        await wait_until(back, DEADLINE, what="the session's webhooks process up again")


async def test_a_tenant_s_slow_endpoints_do_not_delay_another_tenant(
    client: httpx.AsyncClient,
    instance_rows: InstanceRows,
    js: JetStreamContext,
    small_webhooks: Service,
    receiver: Receiver,
) -> None:
    slow_tenant = await create_tenant(client)
    slow_instance = await instance_rows.add(slow_tenant.id)
    slow = [f"slow-{n}" for n in range(SLOTS + 1)]  # more slow endpoints than the process has slots
    for name in slow:
        receiver.behaviours[name] = Behaviour(delay=SLOW_SECONDS)
        await endpoint(client, slow_tenant, receiver.url(name), slow_instance)
    tenant, instance_id, _ = await instance_endpoint(client, instance_rows, receiver, "other")

    await publish(js, message(slow_instance, slow_tenant.id))

    def slow_requests() -> list[Hit]:
        return [h for h in receiver.hits if h.path in slow]

    async def slow_in_flight() -> list[Hit] | None:
        hits = slow_requests()
        return hits if len(hits) >= TENANT_SLOTS else None

    first = await wait_until(slow_in_flight, DEADLINE, what="the slow tenant's attempts in flight")
    answered_from = min(h.at for h in first) + SLOW_SECONDS  # when the first of them is answered
    event = message(instance_id, tenant.id)
    await publish(js, event)
    [hit] = await received_requests(receiver, "other", 1)

    assert hit.event_id == event.event_id
    # Sent while the slow tenant's first attempts were still waiting for their answers, on the slots
    # they left free: they were its share, none answered yet.
    assert hit.at < answered_from, f"the other tenant waited {hit.at - answered_from:.2f}s past a slow answer"
    in_flight = [h for h in slow_requests() if h.at <= hit.at]
    assert len(in_flight) == TENANT_SLOTS
    assert all(h.status == 0 for h in in_flight)

    for name in slow:  # the rest answer at once: every slow endpoint gets its event
        receiver.behaviours[name].delay = 0
    for name in slow:
        assert len(await received(receiver, name, 1)) == 1
