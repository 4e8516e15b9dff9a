"""The API answers the sandbox network's directory (`wgs.rpc.directory.sandbox-phone`, real NATS and
PostgreSQL, the session's API process): a number is known while a sandbox instance that is not being
deleted has it."""

from collections.abc import AsyncIterator

import httpx
import nats
import pytest
from nats.aio.client import Client as NatsClient
from wgs_contracts import subjects
from wgs_contracts.messages import SandboxPhoneKnown, SandboxPhoneLookup
from wgs_kit.messaging import decode, encode

from tests.support.api import create_tenant, pending_instance, unique_phone


@pytest.fixture
async def nc(migrated: dict[str, str]) -> AsyncIterator[NatsClient]:
    connection = await nats.connect(migrated["NATS_URL"])
    yield connection
    await connection.close()


async def known(nc: NatsClient, phone: str) -> bool:
    reply = await nc.request(subjects.SANDBOX_DIRECTORY, encode(SandboxPhoneLookup(phone=phone)), timeout=5)
    return decode(reply.data, SandboxPhoneKnown).known


async def test_a_number_is_known_while_a_sandbox_instance_has_it(client: httpx.AsyncClient, db, nc) -> None:
    tenant = await create_tenant(client)
    instance_id = await pending_instance(client, tenant)  # a `waba` instance no node runs
    phone = await db.fetchval("SELECT phone_number FROM instances WHERE id = $1", instance_id)
    try:
        assert not await known(nc, phone)  # not a sandbox instance: not on the simulated network
        await db.execute("UPDATE instances SET provider = 'sandbox' WHERE id = $1", instance_id)  # stands for one
        assert await known(nc, phone)
        assert not await known(nc, unique_phone())
        await db.execute("UPDATE instances SET desired_state = 'deleted' WHERE id = $1", instance_id)
        assert not await known(nc, phone)
    finally:
        await db.execute("DELETE FROM instances WHERE id = $1", instance_id)
