"""The fan-out consumer: instance events from WGS_EVENTS, in batches, turned into delivery rows.

A plain nats-py pull subscription on the durable consumer `webhooks-fanout`. Each fetch
asks for up to `FETCH_BATCH` events and returns as soon as one is there, with whatever
else is already waiting (a `no_wait` pull request with an expiry: it lingers until the
first message, then answers with what is available), so a lone event is not held back
to fill a batch and a backlog goes 100 at a time.

A batch is fanned out by one multi-row INSERT in stream order (an endpoint's queue is
its deliveries in creation order), and only then are its messages acknowledged: on any
failure nothing has been acknowledged, and the batch is handled again one message at a
time, in order, so that one poison message holds back only itself. A message that fails
on its own is redelivered with backoff, and dead-lettered on `wgs.dlq.webhooks-fanout`
at its last delivery (the same rules as `wgs_kit.messaging.guarded_delivery`).
"""

import asyncio
import logging
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig
from nats.js.client import JetStreamContext
from wgs_contracts import headers, streams, subjects
from wgs_contracts.instance_events import InstanceEvent
from wgs_contracts.state import SnapshotFallback
from wgs_kit.lifecycle import cancel_all
from wgs_kit.logs import new_trace_id, trace_id_var
from wgs_kit.messaging import decode, redelivery_delay

from wgs_webhooks import store
from wgs_webhooks.envelope import envelope_body, event_type

log = logging.getLogger(__name__)
FANOUT_CONSUMER = "webhooks-fanout"
FANOUT_MAX_DELIVER = 8
# Fan-out is a couple of statements per batch; an event held by a process that died is fanned out again this soon.
FANOUT_ACK_WAIT_SECONDS = 10.0
FETCH_BATCH = 100
# A fetch returns at the first event; this only bounds how long an idle fetch waits before asking again.
FETCH_WAIT_SECONDS = 5.0
# Pause after the connection failed under a fetch (NATS reconnects meanwhile).
FETCH_FAILURE_PAUSE = 1.0
# On shutdown, how long a batch being fanned out may take to finish (its messages are acked after).
STOP_GRACE_SECONDS = 10.0


def delivery_event(msg: Msg) -> store.Event | None:
    """What fan-out stores of one stream message; None for events that are not tenants' (operators')."""
    event: InstanceEvent = decode(msg.data, InstanceEvent)  # type: ignore[arg-type]
    if isinstance(event, SnapshotFallback):
        return None
    return store.Event(
        event_id=event.event_id,
        event_type=event_type(event),
        tenant_id=event.tenant_id,
        instance_id=event.instance_id,
        at=event.at,
        payload=envelope_body(event).decode(),
    )


class FanOut:
    """Consumes WGS_EVENTS in batches and calls `created()` whenever new deliveries were written."""

    def __init__(self, js: JetStreamContext, created: Callable[[], None]) -> None:
        self.js = js
        self.created = created
        self._sub: JetStreamContext.PullSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._handling = False
        self._stopping = False

    async def start(self) -> None:
        """Bind to (or create) the durable consumer and start consuming."""
        self._sub = await self.js.pull_subscribe(
            subjects.ALL_INSTANCE_EVENTS,
            durable=FANOUT_CONSUMER,
            stream=streams.EVENTS.name,
            config=ConsumerConfig(
                durable_name=FANOUT_CONSUMER,
                max_deliver=FANOUT_MAX_DELIVER,
                ack_wait=FANOUT_ACK_WAIT_SECONDS,
                filter_subject=subjects.ALL_INSTANCE_EVENTS,
            ),
        )
        self._task = asyncio.create_task(self._consume())

    async def stop(self) -> None:
        """Stop fetching; let a batch being fanned out finish (bounded), then stop."""
        self._stopping = True
        task = self._task
        if task is None:
            return
        if not self._handling:
            task.cancel()  # waiting in a fetch: nothing of ours is in flight
        await asyncio.wait({task}, timeout=STOP_GRACE_SECONDS)
        await cancel_all([task])
        if self._sub is not None:
            await self._sub.unsubscribe()

    async def _consume(self) -> None:
        assert self._sub is not None
        while not self._stopping:
            try:
                msgs = await self._sub.fetch(FETCH_BATCH, timeout=FETCH_WAIT_SECONDS)
            except TimeoutError:
                continue  # nothing for a while
            except Exception as exc:
                log.warning("fetching events failed (%r); retrying", exc)
                await asyncio.sleep(FETCH_FAILURE_PAUSE)
                continue
            self._handling = True
            try:
                await self.handle(msgs)
            except Exception:
                # Whatever was not acked is redelivered after ack_wait (deliveries are idempotent).
                log.exception("fanning out %d events failed; unacknowledged ones come back", len(msgs))
            finally:
                self._handling = False

    async def handle(self, msgs: list[Msg]) -> None:
        """Fan a batch out in one INSERT and ack it; on failure, one message at a time."""
        try:
            events = [e for e in map(delivery_event, msgs) if e is not None]
            created = await store.fan_out(events)
        except Exception as exc:
            if len(msgs) > 1:
                log.warning("fanning out a batch of %d events failed (%r): one at a time", len(msgs), exc)
            for msg in msgs:
                try:
                    await self.handle_one(msg)
                except Exception:
                    log.exception("handling %s failed; it comes back after the ack wait", msg.subject)
            return
        if created:
            self.created()
        for msg in msgs:
            await msg.ack()

    async def handle_one(self, msg: Msg) -> None:
        """Fan one message out and ack it; on failure nack it with backoff, or dead-letter it at its last try."""
        token = trace_id_var.set((msg.headers or {}).get(headers.TRACE_ID, new_trace_id()))
        try:
            try:
                event = delivery_event(msg)
                created = await store.fan_out([event] if event is not None else [])
            except Exception as exc:
                await self.retry_or_dead_letter(msg, exc)
                return
            if created:
                self.created()
            await msg.ack()
        finally:
            trace_id_var.reset(token)

    async def retry_or_dead_letter(self, msg: Msg, exc: Exception) -> None:
        """Before the last delivery: nack with a delay. At the last: copy to the dead-letter stream, then ack."""
        attempt = msg.metadata.num_delivered or 1
        if attempt < FANOUT_MAX_DELIVER:
            log.warning("attempt %d on %s failed (%r): will retry", attempt, msg.subject, exc)
            await msg.nak(delay=redelivery_delay(attempt))
            return
        log.error("giving up on %s after %d attempts: dead-lettered", msg.subject, attempt, exc_info=exc)
        dead_headers = dict(msg.headers or {})
        dead_headers.pop(headers.MSG_ID, None)
        dead_headers[headers.DEAD_LETTER_REASON] = repr(exc)[:500]
        dead_headers[headers.DEAD_LETTER_SUBJECT] = msg.subject
        await self.js.publish(
            subjects.dead_letter(FANOUT_CONSUMER),
            msg.data,
            timeout=5.0,
            stream=streams.DEAD_LETTERS.name,
            headers=dead_headers,
        )
        await msg.ack()
