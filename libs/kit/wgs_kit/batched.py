"""Batched durable consumers: a plain nats-py pull loop taking a stream's messages up to N at a time.

Each fetch asks for up to `fetch_batch` messages and returns as soon as one is there, with
whatever else is already waiting (a `no_wait` pull request with an expiry: it lingers until the
first message, then answers with what is available), so a lone message is not held back to fill
a batch and a backlog goes `fetch_batch` at a time.

A batch is handed to the service's `handle(msgs)` in stream order, and only once it returned are
its messages acknowledged: on any failure nothing has been acknowledged, and the batch is handled
again one message at a time (`handle([msg])`), in order, so that one poison message holds back only
itself. A message that fails on its own is redelivered with backoff, and at its last delivery
(`max_deliver`) copied to `wgs.dlq.<consumer>` and acknowledged, so it is parked, visible and never
lost. A message handled on its own runs under the trace id it carries (`Wgs-Trace-Id`).

With `concurrent=True` the messages of a fetched batch are not handled together but each on its
own (`handle([msg])`, acknowledged, retried or dead-lettered by itself), all at once, and the next
batch is fetched once they are all done: for commands that are independent of each other and
slow (a node agent's container starts), where one must not wait for another.

With `outages`, a failure among them (a dependency down, not the messages' fault) is not a
failure of the messages: the batch, or message, is held and handled again once the dependency is
back (`wgs_kit.outages`), so that no outage dead-letters what it caught.

`handle` must therefore be idempotent (a batch may be handled again, in part or whole, after a
failure or a crash) and apply its messages in the order it gets them.

The durable consumer is created with the given filter subjects, or updated when it exists with
another configuration (an older release's filter, `max_deliver` or `ack_wait`): see
`ensure_pull_consumer`.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError, NotFoundError
from wgs_contracts import headers, streams, subjects
from wgs_contracts.streams import StreamSpec

from wgs_kit.lifecycle import cancel_all
from wgs_kit.logs import new_trace_id, trace_id_var
from wgs_kit.messaging import redelivery_delay
from wgs_kit.outages import through_outages

log = logging.getLogger(__name__)

Handler = Callable[[list[Msg]], Awaitable[None]]

# A fetch returns at the first message; this only bounds how long an idle fetch waits before asking again.
FETCH_WAIT_SECONDS = 5.0
# Pause after the connection failed under a fetch (NATS reconnects meanwhile).
FETCH_FAILURE_PAUSE = 1.0
# On shutdown, how long a batch being handled may take to finish (its messages are acked after).
STOP_GRACE_SECONDS = 10.0


def consumer_config(
    durable: str, filter_subjects: Sequence[str], *, max_deliver: int, ack_wait_seconds: float
) -> ConsumerConfig:
    """The configuration of a durable pull consumer with explicit acks on `filter_subjects`.

    One subject goes in `filter_subject` (what every server version knows), several in
    `filter_subjects` (nats-server 2.10+).
    """
    if not filter_subjects:
        raise ValueError("a consumer needs at least one filter subject")
    single = len(filter_subjects) == 1
    return ConsumerConfig(
        durable_name=durable,
        name=durable,
        max_deliver=max_deliver,
        ack_wait=ack_wait_seconds,
        filter_subject=filter_subjects[0] if single else None,
        filter_subjects=None if single else list(filter_subjects),
    )


def filters_of(config: ConsumerConfig) -> set[str]:
    """The subjects a consumer configuration selects (its one filter or its several)."""
    if config.filter_subjects:
        return set(config.filter_subjects)
    return {config.filter_subject} if config.filter_subject else set()


def differs(current: ConsumerConfig, wanted: ConsumerConfig) -> list[str]:
    """Names of the settings we manage that an existing consumer has otherwise than wanted."""
    changed = []
    if filters_of(current) != filters_of(wanted):
        changed.append("filter subjects")
    if current.max_deliver != wanted.max_deliver:
        changed.append("max_deliver")
    if abs((current.ack_wait or 0.0) - (wanted.ack_wait or 0.0)) > 0.001:
        changed.append("ack_wait")
    return changed


async def ensure_pull_consumer(js: JetStreamContext, stream: str, wanted: ConsumerConfig) -> ConsumerInfo:
    """Create the durable consumer, or bring an existing one to `wanted` keeping its position.

    An existing consumer (of an earlier release: one filter `wgs.evt.instance.>`, say) is updated
    in place: nats-server 2.10+ accepts new filter subjects, `max_deliver` and `ack_wait` on a
    durable consumer and keeps its delivered and acknowledged positions. A server that refuses the
    update gets the consumer recreated, starting right after the old one's acknowledged floor,
    so nothing acknowledged is redelivered and nothing unacknowledged is skipped.
    """
    durable = wanted.durable_name
    assert durable is not None
    try:
        info = await js.consumer_info(stream, durable)
    except NotFoundError:
        try:
            return await js.add_consumer(stream, config=wanted)
        except BadRequestError:
            # Another process created it meanwhile (with possibly another configuration): check again.
            info = await js.consumer_info(stream, durable)
    changed = differs(info.config, wanted)
    if not changed:
        return info
    log.warning(
        "consumer %s on %s has other %s (filters %s): updating it",
        durable,
        stream,
        ", ".join(changed),
        sorted(filters_of(info.config)),
    )
    try:
        return await js.add_consumer(stream, config=wanted)  # create-or-update on an existing durable
    except BadRequestError as exc:
        floor = info.ack_floor.stream_seq if info.ack_floor and info.ack_floor.stream_seq else 0
        log.warning("the server refused to update consumer %s (%s): recreating it after seq %d", durable, exc, floor)
        await js.delete_consumer(stream, durable)
        restart = wanted.evolve(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=floor + 1)
        return await js.add_consumer(stream, config=restart)


async def retry_or_dead_letter(
    js: JetStreamContext,
    msg: Msg,
    exc: Exception,
    *,
    consumer: str,
    max_deliver: int,
    retry_delay: Callable[[int], float] = redelivery_delay,
) -> None:
    """Before the last delivery: nack with a delay. At the last: copy to the dead-letter stream, then ack."""
    attempt = msg.metadata.num_delivered or 1
    if attempt < max_deliver:
        log.warning("attempt %d on %s failed (%r): will retry", attempt, msg.subject, exc)
        await msg.nak(delay=retry_delay(attempt))
        return
    log.error("giving up on %s after %d attempts: dead-lettered", msg.subject, attempt, exc_info=exc)
    dead_headers = dict(msg.headers or {})
    dead_headers.pop(headers.MSG_ID, None)
    dead_headers[headers.DEAD_LETTER_REASON] = repr(exc)[:500]
    dead_headers[headers.DEAD_LETTER_SUBJECT] = msg.subject
    await js.publish(
        subjects.dead_letter(consumer),
        msg.data,
        timeout=5.0,
        stream=streams.DEAD_LETTERS.name,
        headers=dead_headers,
    )
    await msg.ack()


class BatchedPullConsumer:
    """A durable pull consumer handing its messages to `handle` in batches, acking after (see module doc)."""

    def __init__(
        self,
        js: JetStreamContext,
        handle: Handler,
        *,
        stream: StreamSpec,
        durable: str,
        filter_subjects: Sequence[str],
        max_deliver: int = 8,
        ack_wait_seconds: float = 30.0,
        fetch_batch: int = 100,
        fetch_wait_seconds: float = FETCH_WAIT_SECONDS,
        retry_delay: Callable[[int], float] = redelivery_delay,
        stop_grace_seconds: float = STOP_GRACE_SECONDS,
        outages: tuple[type[BaseException], ...] = (),
        concurrent: bool = False,
    ) -> None:
        self.js = js
        self.handle = handle
        self.outages = outages
        self.stream = stream.name
        self.durable = durable
        self.config = consumer_config(
            durable, filter_subjects, max_deliver=max_deliver, ack_wait_seconds=ack_wait_seconds
        )
        self.max_deliver = max_deliver
        self.fetch_batch = fetch_batch
        self.fetch_wait_seconds = fetch_wait_seconds
        self.retry_delay = retry_delay
        self.stop_grace_seconds = stop_grace_seconds
        self.concurrent = concurrent
        self._sub: JetStreamContext.PullSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._handling = False
        self._stopping = False

    async def start(self) -> None:
        """Create (or update) the durable consumer, bind to it and start consuming (again, after `stop`)."""
        self._stopping = False
        await ensure_pull_consumer(self.js, self.stream, self.config)
        self._sub = await self.js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
        self._task = asyncio.create_task(self._consume(), name=f"consume-{self.durable}")

    async def stop(self) -> None:
        """Stop fetching; let a batch being handled finish (bounded), then stop."""
        self._stopping = True
        task = self._task
        if task is None:
            return
        if not self._handling:
            task.cancel()  # waiting in a fetch: nothing of ours is in flight
        await asyncio.wait({task}, timeout=self.stop_grace_seconds)
        await cancel_all([task])
        self._task = None
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _consume(self) -> None:
        assert self._sub is not None
        while not self._stopping:
            try:
                msgs = await self._sub.fetch(self.fetch_batch, timeout=self.fetch_wait_seconds)
            except TimeoutError:
                continue  # nothing for a while
            except Exception as exc:
                log.warning("fetching from %s failed (%r); retrying", self.durable, exc)
                await asyncio.sleep(FETCH_FAILURE_PAUSE)
                continue
            self._handling = True
            try:
                await self.handle_batch(msgs)
            except Exception:
                # Whatever was not acked is redelivered after ack_wait (handlers are idempotent).
                log.exception("%s: handling %d messages failed; unacknowledged ones come back", self.durable, len(msgs))
            finally:
                self._handling = False

    async def handle_batch(self, msgs: list[Msg]) -> None:
        """Handle a batch and ack it; on failure, one message at a time (`concurrent`: each on its own, at once)."""
        if self.concurrent:
            await asyncio.gather(*(self._handle_alone(msg) for msg in msgs))
            return
        try:
            await self._handle_held(msgs)
        except Exception as exc:
            if len(msgs) > 1:
                log.warning("%s: a batch of %d failed (%r): one at a time", self.durable, len(msgs), exc)
            for msg in msgs:
                await self._handle_alone(msg)
            return
        for msg in msgs:
            await msg.ack()

    async def _handle_alone(self, msg: Msg) -> None:
        """`handle_one`; when even its ack, nack or dead letter failed, the message comes back after the ack wait."""
        try:
            await self.handle_one(msg)
        except Exception:
            log.exception("handling %s failed; it comes back after the ack wait", msg.subject)

    async def _handle_held(self, msgs: list[Msg]) -> None:
        """`handle(msgs)`, the messages held through any of `outages`."""
        if not self.outages:
            await self.handle(msgs)
            return
        await through_outages(lambda: self.handle(msgs), msgs, outages=self.outages, what=self.durable)

    async def handle_one(self, msg: Msg) -> None:
        """Handle one message and ack it; on failure nack it with backoff, or dead-letter it at its last try."""
        token = trace_id_var.set((msg.headers or {}).get(headers.TRACE_ID, new_trace_id()))
        try:
            try:
                await self._handle_held([msg])
            except Exception as exc:
                await retry_or_dead_letter(
                    self.js, msg, exc, consumer=self.durable, max_deliver=self.max_deliver, retry_delay=self.retry_delay
                )
                return
            await msg.ack()
        finally:
            trace_id_var.reset(token)
