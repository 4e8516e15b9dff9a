"""The API's NATS side: publishing commands and following instance status events."""

import logging

from faststream.nats import NatsBroker, NatsMessage
from wgs_contracts import streams, subjects
from wgs_contracts.messages import ControlCommand, InstanceStatusChanged
from wgs_kit.messaging import (
    decode,
    durable_subscriber,
    guarded_delivery,
    make_broker,
    publish_durable,
)

from wgs_api.domain.instances.status import StatusBoard, apply_status

log = logging.getLogger(__name__)
STATUS_CONSUMER = "api-instance-status"
STATUS_MAX_DELIVER = 8


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
            subject=subjects.ALL_INSTANCE_STATUS,
            durable=STATUS_CONSUMER,
            max_deliver=STATUS_MAX_DELIVER,
        )
        async def record_status(body: bytes, msg: NatsMessage) -> None:
            async with guarded_delivery(broker, msg, consumer=STATUS_CONSUMER, max_deliver=STATUS_MAX_DELIVER):
                await apply_status(decode(body, InstanceStatusChanged))

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
