"""The API's HTTP protocol sends a response's head and body in one write (`wgs_api.http_server`),
driven as uvicorn drives it, with a transport that records what is written."""

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState
from wgs_api import __main__ as api_main
from wgs_api.http_server import OneWriteHttpToolsProtocol
from wgs_kit.waiting import wait_until


class RecordingTransport(asyncio.Transport):
    """A connection's transport that keeps each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def json_app(scope: dict, receive: Any, send: Any) -> None:
    """Answers `{"ok":true}` after reading the request's body."""
    while (await receive()).get("more_body"):
        pass
    body = b'{"ok":true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def streaming_app(scope: dict, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    for chunk in (b"one", b"two"):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def abandoning_app(scope: dict, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    raise RuntimeError("the app fails after starting its response")


def connect(app: Any) -> tuple[OneWriteHttpToolsProtocol, RecordingTransport, ServerState]:
    """A connection of the protocol serving `app`, as uvicorn makes it."""
    config = Config(app=app, http=OneWriteHttpToolsProtocol, log_config=None, lifespan="off")
    config.load()
    state = ServerState()
    protocol = OneWriteHttpToolsProtocol(config=config, server_state=state, app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport, state


async def exchange(app: Any, request: bytes, responses: int = 1) -> RecordingTransport:
    """Feed `request` to the protocol and wait until `responses` have completed (or the connection closed)."""
    protocol, transport, state = connect(app)
    protocol.data_received(request)

    async def answered() -> bool:
        return state.total_requests >= responses or transport.closed

    await wait_until(answered, timeout=5, what="the response")
    return transport


async def test_a_response_leaves_in_one_write() -> None:
    transport = await exchange(json_app, b"POST /send HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    [write] = transport.writes
    assert write.startswith(b"HTTP/1.1 200 OK\r\n")
    assert write.endswith(b'\r\n\r\n{"ok":true}')


async def test_pipelined_requests_each_leave_in_one_write() -> None:
    request = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    transport = await exchange(json_app, request * 2, responses=2)
    assert len(transport.writes) == 2
    assert all(w.startswith(b"HTTP/1.1 200 OK") and w.endswith(b'{"ok":true}') for w in transport.writes)


async def test_100_continue_goes_out_before_the_body_is_read() -> None:
    request = b"POST /send HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    protocol, transport, _ = connect(json_app)
    protocol.data_received(request)

    async def continued() -> bool:
        return bool(transport.writes)

    await wait_until(continued, timeout=5, what="100 Continue")
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    protocol.data_received(b"{}")

    async def answered() -> bool:
        return len(transport.writes) == 2

    await wait_until(answered, timeout=5, what="the response")
    assert transport.writes[1].startswith(b"HTTP/1.1 200 OK")
    assert transport.writes[1].endswith(b'{"ok":true}')


async def test_a_head_response_is_written_without_waiting_for_a_body() -> None:
    transport = await exchange(json_app, b"HEAD /send HTTP/1.1\r\nHost: x\r\n\r\n")
    [write] = transport.writes
    assert write.startswith(b"HTTP/1.1 200 OK\r\n")
    assert write.endswith(b"\r\n\r\n")


async def test_a_streamed_response_sends_its_head_with_the_first_chunk() -> None:
    transport = await exchange(streaming_app, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK")
    assert transport.writes[0].endswith(b"\r\n3\r\none\r\n")
    assert transport.writes[1:] == [b"3\r\ntwo\r\n", b"0\r\n\r\n"]


async def test_a_response_abandoned_after_its_start_still_writes_its_head_before_closing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = await exchange(abandoning_app, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    [write] = transport.writes
    assert write.startswith(b"HTTP/1.1 200 OK")
    assert write.endswith(b"\r\n\r\n")
    assert transport.closed
    assert "Exception in ASGI application" in caplog.text


def test_the_api_process_serves_with_this_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    served: dict[str, Any] = {}
    monkeypatch.setattr(api_main, "configure_logging", lambda service: None)
    monkeypatch.setattr(api_main, "get_settings", lambda: SimpleNamespace(host="127.0.0.1", port=0))
    monkeypatch.setattr(api_main, "create_app", lambda settings: "the app")
    monkeypatch.setattr(api_main.uvicorn, "run", lambda app, **options: served.update(options, app=app))
    api_main.main()
    assert served["app"] == "the app"
    assert served["http"] is OneWriteHttpToolsProtocol
