"""`bench.webhooks`' receiver: a bare HTTP/1.1 protocol on loopback, fed by a real client and by
raw bytes in pieces."""

import asyncio

import aiohttp

from bench.webhooks import Receiver


async def test_a_client_posting_deliveries_gets_200_and_each_id_is_noted_once() -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        async with aiohttp.ClientSession() as session:
            for event_id in ("e1", "e2", "e1"):
                async with session.post(
                    f"http://127.0.0.1:{receiver.port}/hook", data=b'{"x": 1}', headers={"webhook-id": event_id}
                ) as response:
                    assert response.status == 200
                    assert await response.text() == "ok"
    finally:
        await receiver.stop()
    assert sorted(receiver.arrived) == ["e1", "e2"]


async def test_requests_split_across_reads_or_sent_back_to_back_are_each_answered() -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
        first = b"POST /hook HTTP/1.1\r\nwebhook-id: a\r\nContent-Length: 5\r\n\r\nhello"
        second = b"POST /hook HTTP/1.1\r\nWebhook-Id: b\r\ncontent-length: 2\r\n\r\n{}"
        writer.write(first[:20])
        await writer.drain()
        writer.write(first[20:-2])
        await writer.drain()
        writer.write(first[-2:] + second)
        await writer.drain()
        answers = [await reader.readuntil(b"\r\n\r\n") + await reader.readexactly(2) for _ in range(2)]
        writer.close()
        await writer.wait_closed()
    finally:
        await receiver.stop()
    assert all(answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"ok") for answer in answers)
    assert sorted(receiver.arrived) == ["a", "b"]
