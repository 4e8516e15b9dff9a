"""Draining a JetStream subject through a durable pull consumer, one message at a time, in order.

A session drains two such queues: its instance's sends queued while it was away (`WGS_OUTBOUND`)
and, for a sandbox instance, its phone's mailbox (`WGS_SANDBOX_MAIL`). The consumer is durable and
named after what it drains, so the next holder of the instance (after a restart, or on the node
it moved to) carries on where this one stopped.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig
from wgs_contracts.streams import StreamSpec
from wgs_kit.messaging import redelivery_delay
from wgs_kit.outages import log_failure

log = logging.getLogger(__name__)
LONG_POLL_SECONDS = 20.0
ACK_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class QueueDrain:
    """Hands each message of `subject` (in `stream`) to `handle`, which acks or naks it.

    `expire_after_idle` (seconds): the server removes the consumer once nobody has drained it
    for that long (an instance deleted where no agent could remove it). Only for a work-queue
    stream, which keeps nothing already handled: a consumer made again takes what is left.
    """

    broker: NatsBroker
    stream: StreamSpec
    subject: str
    durable: str
    handle: Callable[[Msg], Awaitable[None]]
    expire_after_idle: float | None = None

    async def forever(self) -> None:
        """Drain until cancelled. A failure of the drain itself (NATS away, the consumer gone) is
        logged and the drain starts again after a growing pause."""
        failures = 0
        while True:
            try:
                await self._drain()
            except Exception as exc:
                failures += 1
                log_failure(log, exc, "drain %s", self.durable)
                await asyncio.sleep(redelivery_delay(failures))

    async def _drain(self) -> None:
        subscription = await self.broker.connection.jetstream().pull_subscribe(
            self.subject,
            durable=self.durable,
            stream=self.stream.name,
            config=ConsumerConfig(
                durable_name=self.durable,
                ack_policy=AckPolicy.EXPLICIT,
                max_ack_pending=1,
                ack_wait=ACK_WAIT_SECONDS,
                inactive_threshold=self.expire_after_idle,
            ),
        )
        try:
            while True:
                try:
                    messages = await subscription.fetch(1, timeout=LONG_POLL_SECONDS)
                except (NatsTimeoutError, TimeoutError):
                    continue
                for message in messages:
                    try:
                        await self.handle(message)
                    except asyncio.CancelledError:
                        # The session stops (hand-off, stop): give the message back at once, or the
                        # next holder of this consumer (max one unacked) would wait out ack_wait.
                        with contextlib.suppress(Exception):
                            await message.nak()
                        raise
        finally:
            # An abandoned pull subscription would block the broker's drain at shutdown.
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
