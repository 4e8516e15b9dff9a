"""The API's NATS side: commands, relayed provider calls, queued sends, following instance events."""

import logging
from typing import TypeVar

import msgspec
from faststream.nats import NatsBroker, NatsMessage
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from wgs_contracts import streams, subjects
from wgs_contracts.instance_events import InstanceEvent, OutboundMessage, ProviderCall, ProviderReply
from wgs_contracts.messages import ControlCommand, InstanceStatusChanged
from wgs_kit.messaging import (
    decode,
    durable_subscriber,
    encode,
    guarded_delivery,
    make_broker,
    publish_durable,
    trace_headers,
)

from wgs_api.domain.instances.status import StatusBoard
from wgs_api.errors import TimedOut, Unavailable
from wgs_api.events import apply_event

log = logging.getLogger(__name__)
R = TypeVar("R")
EVENTS_CONSUMER = "api-instance-events"
EVENTS_MAX_DELIVER = 8


class ApiMessaging:
    """Owns the broker of one API process; started and stopped by the app lifespan."""

    def __init__(self, nats_url: str) -> None:
        self.broker: NatsBroker = make_broker(nats_url, "wgs-api")
        self.board = StatusBoard()
        self._register_subscribers()

    def _register_subscribers(self) -> None:
        broker = self.broker
        board = self.board

        @durable_subscriber(
            broker,
            stream=streams.EVENTS,
            subject=subjects.ALL_INSTANCE_EVENTS,
            durable=EVENTS_CONSUMER,
            max_deliver=EVENTS_MAX_DELIVER,
        )
        async def record_event(body: bytes, msg: NatsMessage) -> None:
            async with guarded_delivery(broker, msg, consumer=EVENTS_CONSUMER, max_deliver=EVENTS_MAX_DELIVER):
                await apply_event(decode(body, InstanceEvent))  # type: ignore[arg-type]

        @broker.subscriber(subjects.ALL_INSTANCE_STATUS, no_reply=True)
        async def watch_status(body: bytes) -> None:
            board.dispatch(decode(body, InstanceStatusChanged))

    async def start(self) -> None:
        """Connect and start consuming."""
        await self.broker.start()

    async def stop(self) -> None:
        """Drain and disconnect."""
        await self.broker.stop()

    async def send_command(self, command: ControlCommand, *, msg_id: str) -> None:
        """Publish a control-plane command durably; a repeat with the same `msg_id` is dropped."""
        subject = {
            "instance.create": subjects.INSTANCE_CREATE,
            "instance.delete": subjects.INSTANCE_DELETE,
        }[type(command).__struct_config__.tag]  # type: ignore[index]
        await publish_durable(self.broker, subject, command, msg_id=msg_id, stream=streams.COMMANDS)

    async def call_provider(self, node: str, call: ProviderCall, *, timeout: float = 10.0) -> ProviderReply | None:
        """Relay an HTTP call to an instance's provider via its node agent; None when nobody answers."""
        try:
            response = await self.broker.request(
                encode(call), subjects.provider_calls(node), headers=trace_headers(), timeout=timeout
            )
        except (NoRespondersError, NatsTimeoutError, TimeoutError):
            return None
        return decode(response.body, ProviderReply)

    async def ask_scheduler(self, subject: str, request: msgspec.Struct, reply_type: type[R], *, timeout: float) -> R:
        """A request to the scheduler leader and its reply; 503 when no scheduler leads, 504 after `timeout`."""
        try:
            response = await self.broker.request(encode(request), subject, headers=trace_headers(), timeout=timeout)
        except NoRespondersError:
            raise Unavailable("No scheduler is leading right now; try again shortly.") from None
        except (NatsTimeoutError, TimeoutError):
            raise TimedOut(f"The scheduler did not finish within {timeout:g} s.") from None
        return decode(response.body, reply_type)

    async def enqueue_send(self, message: OutboundMessage) -> None:
        """Queue a send durably until its instance takes it (deduplicated by message id)."""
        await publish_durable(
            self.broker, subjects.outbound(message.instance_id), message, msg_id=message.id, stream=streams.OUTBOUND
        )
