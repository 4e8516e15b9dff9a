"""Request ids: each request runs under a trace id, so that what it causes can be followed.

The id is the request's `X-Request-Id` when it is 1-64 letters, digits or `._:-` (an id the
client or a proxy in front already logs), a new one otherwise; the answer carries it back in
`X-Request-Id`. While the request runs it is the trace id (`wgs_kit.logs.trace_id_var`): the
API's log lines print it (`trace=`), and every NATS message the request publishes carries it as
`Wgs-Trace-Id`, which the scheduler and node agents log in turn. Sends relayed together carry
the id of the request that started their batch.
"""

import re

from litestar.types import ASGIApp, Message, Receive, Scope, Send
from wgs_kit.logs import new_trace_id, trace_id_var

REQUEST_ID_HEADER = b"x-request-id"
CLIENT_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


def request_id_of(scope: Scope) -> str:
    """The request's own id when it is a usable one, else a new one."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            return value.decode() if CLIENT_REQUEST_ID.fullmatch(value) else new_trace_id()
    return new_trace_id()


def trace_requests(app: ASGIApp) -> ASGIApp:
    """Middleware: run each HTTP request under its request id and answer with it."""

    async def traced(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        id_header = (REQUEST_ID_HEADER, request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        token = trace_id_var.set(request_id)
        try:
            await app(scope, receive, send_with_id)
        finally:
            trace_id_var.reset(token)

    return traced
