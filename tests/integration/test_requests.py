"""wgs_kit.requests on a real NATS server: requests answered concurrently, a failing one answered by nobody."""

import asyncio

import nats
import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from wgs_devstack.nats import EmbeddedNats
from wgs_kit.requests import RequestServer


async def test_a_request_waiting_on_a_later_one_is_answered(nats_server: EmbeddedNats) -> None:
    nc = await nats.connect(nats_server.url)
    server = RequestServer(nc)
    first_started, second_arrived = asyncio.Event(), asyncio.Event()

    async def handler(body: bytes) -> bytes:
        if body == b"first":
            first_started.set()
            await second_arrived.wait()  # served one after the other, this would never end
        else:
            second_arrived.set()
        return body.upper()

    async def failing(body: bytes) -> bytes:
        raise RuntimeError("boom")

    try:
        await server.serve("test.requests.echo", handler)
        await server.serve("test.requests.fail", failing)
        first = asyncio.create_task(nc.request("test.requests.echo", b"first", timeout=5))
        await asyncio.wait_for(first_started.wait(), 5)
        second = await nc.request("test.requests.echo", b"second", timeout=5)
        assert second.data == b"SECOND"
        assert (await first).data == b"FIRST"
        with pytest.raises(NatsTimeoutError):
            await nc.request("test.requests.fail", b"x", timeout=0.5)
        assert (await nc.request("test.requests.echo", b"still", timeout=5)).data == b"STILL"
    finally:
        await server.close()
        await nc.close()
