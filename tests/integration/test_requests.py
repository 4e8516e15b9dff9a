"""wgs_kit.requests on a real NATS server: requests answered concurrently, a failing one answered by
nobody, a malformed one logged as one warning line."""

import asyncio
import logging

import nats
import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from wgs_contracts.messages import SandboxPhoneLookup
from wgs_devstack.nats import EmbeddedNats
from wgs_kit.messaging import decode, encode
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


async def test_a_malformed_request_is_one_warning_line_and_the_next_is_answered(
    nats_server: EmbeddedNats, caplog: pytest.LogCaptureFixture
) -> None:
    nc = await nats.connect(nats_server.url)
    server = RequestServer(nc)

    async def handler(body: bytes) -> bytes:
        return encode(decode(body, SandboxPhoneLookup))

    try:
        await server.serve("test.requests.lookup", handler)
        with caplog.at_level(logging.WARNING, logger="wgs_kit.requests"), pytest.raises(NatsTimeoutError):
            await nc.request("test.requests.lookup", b'{"type": "nope"}', timeout=0.5)
        warning = next(r for r in caplog.records if r.name == "wgs_kit.requests")
        assert warning.levelno == logging.WARNING
        assert "malformed request on test.requests.lookup" in warning.getMessage()
        assert warning.exc_info is None  # one line, no traceback
        good = encode(SandboxPhoneLookup(phone="491700000001"))
        assert (await nc.request("test.requests.lookup", good, timeout=5)).data == good
    finally:
        await server.close()
        await nc.close()
