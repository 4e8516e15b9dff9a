"""Answering core-NATS requests concurrently: every request runs in its own task.

A request that fails is not answered (its requester times out): a malformed one (a body its
handler cannot decode) is logged as one warning line, any other failure with its traceback.

nats-py (and FastStream, with its default of one worker) handle a subscription's
messages one after the other; a request that waits on something slow (a provider
that fsyncs, a migration that waits for a node) would hold up every later one.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from wgs_contracts import headers

from wgs_kit.logs import new_trace_id, trace_id_var
from wgs_kit.messaging import UnsupportedSchemaVersion

log = logging.getLogger(__name__)
Handler = Callable[[bytes], Awaitable[bytes]]


class RequestServer:
    """Subscribes request handlers and runs each request in its own task until closed."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self._subscriptions: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self, subject: str, handler: Handler, *, queue: str = "") -> None:
        """Answer requests on `subject` with `handler(body) -> reply body` (a queue group shares them)."""

        async def on_request(msg: Msg) -> None:
            task = asyncio.create_task(self._answer(msg, handler))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._subscriptions.append(await self.nc.subscribe(subject, queue=queue, cb=on_request))

    @staticmethod
    async def _answer(msg: Msg, handler: Handler) -> None:
        token = trace_id_var.set((msg.headers or {}).get(headers.TRACE_ID, new_trace_id()))
        try:
            reply = await handler(msg.data)
            if msg.reply:
                await msg.respond(reply)
        except (msgspec.DecodeError, msgspec.ValidationError, UnsupportedSchemaVersion) as exc:
            log.warning("malformed request on %s, not answered (the requester times out): %s", msg.subject, exc)
        except Exception:
            log.exception("answering a request on %s failed (the requester times out)", msg.subject)
        finally:
            trace_id_var.reset(token)

    async def close(self) -> None:
        """Stop taking requests and cancel those still running."""
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        self._subscriptions.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
