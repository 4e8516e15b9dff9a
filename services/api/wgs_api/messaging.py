"""The API's NATS side: commands, relayed provider calls, queued sends, following instance events.

Instance events reach the API twice:

- the durable consumer `api-instance-events` on WGS_EVENTS, shared by the API processes, applies
  them to the rows (`wgs_api.events`). It filters on the kinds the API applies (status,
  connection, message status: nats-server 2.10+ filter subjects), so inbound messages, QR codes
  and the like never reach it, and takes them in batches through a plain nats-py pull loop
  (`wgs_kit.batched`) on the broker's connection: fetch up to `EVENTS_FETCH_BATCH`, apply in
  stream order, ack; a failed batch is applied one by one with redelivery, `max_deliver` and
  dead letters on `wgs.dlq.api-instance-events`. A consumer left by an earlier release (one
  filter `wgs.evt.instance.>`) is updated in place when an API process starts.
- every API process also watches status events on core NATS (`watch_status`), so that a
  request can wait for its instance's next state (`StatusBoard`) and the instance's send lease
  ends (`wgs_api.domain.messaging.leases`), and revocations of API keys
  (`ApiKeysRevoked`), to forget the keys it remembers (`wgs_api.domain.accounts.key_cache`).

The API processes also answer the sandbox network's directory (`SANDBOX_DIRECTORY`, one of them
per request: a queue group), `wgs_api.domain.instances.directory`.
"""

import logging
from typing import TypeVar

import msgspec
from faststream.nats import NatsBroker
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from wgs_contracts import streams, subjects
from wgs_contracts.instance_events import (
    OutboundMessage,
    ProviderCall,
    ProviderReply,
    ProviderSends,
    ProviderSendsReply,
)
from wgs_contracts.messages import ApiKeysRevoked, ControlCommand, InstanceStatusChanged
from wgs_db.engine import DATABASE_OUTAGES
from wgs_kit.batched import BatchedPullConsumer
from wgs_kit.messaging import decode, encode, make_broker, publish_core, publish_durable, trace_headers
from wgs_kit.requests import RequestServer

from wgs_api.domain.accounts.key_cache import KEYS
from wgs_api.domain.instances.directory import answer_lookup
from wgs_api.domain.instances.status import StatusBoard
from wgs_api.domain.messaging.leases import LEASES
from wgs_api.errors import TimedOut, Unavailable
from wgs_api.events import APPLIED_EVENTS, apply_messages

log = logging.getLogger(__name__)
R = TypeVar("R")
EVENTS_CONSUMER = "api-instance-events"
EVENTS_MAX_DELIVER = 8
EVENTS_ACK_WAIT_SECONDS = 30.0
EVENTS_FETCH_BATCH = 100
DIRECTORY_QUEUE = "wgs-api"


class ApiMessaging:
    """Owns the broker of one API process; started and stopped by the app lifespan."""

    def __init__(self, nats_url: str, *, events_max_deliver: int = EVENTS_MAX_DELIVER) -> None:
        self.broker: NatsBroker = make_broker(nats_url, "wgs-api")
        self.board = StatusBoard()
        self.events_max_deliver = events_max_deliver
        self.events: BatchedPullConsumer | None = None
        self.requests: RequestServer | None = None
        self._register_subscribers()

    def _register_subscribers(self) -> None:
        board = self.board

        @self.broker.subscriber(subjects.ALL_INSTANCE_STATUS, no_reply=True)
        async def watch_status(body: bytes) -> None:
            event = decode(body, InstanceStatusChanged)
            LEASES.end(event.instance_id)
            board.dispatch(event)

        @self.broker.subscriber(subjects.ALL_TENANT_KEYS_REVOKED, no_reply=True)
        async def watch_revocations(body: bytes) -> None:
            KEYS.forget_tenant(decode(body, ApiKeysRevoked).tenant_id)

    async def start(self) -> None:
        """Connect, start watching status events, consuming the events the API applies and answering the directory."""
        await self.broker.start()
        self.requests = RequestServer(self.broker.connection)
        await self.requests.serve(subjects.SANDBOX_DIRECTORY, answer_lookup, queue=DIRECTORY_QUEUE)
        self.events = BatchedPullConsumer(
            self.broker.connection.jetstream(),
            apply_messages,
            stream=streams.EVENTS,
            durable=EVENTS_CONSUMER,
            filter_subjects=APPLIED_EVENTS,
            max_deliver=self.events_max_deliver,
            ack_wait_seconds=EVENTS_ACK_WAIT_SECONDS,
            fetch_batch=EVENTS_FETCH_BATCH,
            outages=DATABASE_OUTAGES,  # a PostgreSQL outage holds the events: it never dead-letters them
        )
        await self.events.start()

    async def stop(self) -> None:
        """Stop answering, finish the batch being applied (bounded), then drain and disconnect."""
        if self.requests is not None:
            await self.requests.close()
        if self.events is not None:
            await self.events.stop()
        await self.broker.stop()

    async def announce(self, subject: str, event: msgspec.Struct) -> None:
        """Publish an event on core NATS (at most once: for what a lost copy cannot harm for long)."""
        await publish_core(self.broker, subject, event)

    async def send_command(self, command: ControlCommand, *, msg_id: str) -> None:
        """Publish a control-plane command durably; a repeat with the same `msg_id` is dropped."""
        subject = {
            "instance.create": subjects.INSTANCE_CREATE,
            "instance.delete": subjects.INSTANCE_DELETE,
        }[type(command).__struct_config__.tag]  # type: ignore[index]
        await publish_durable(self.broker, subject, command, msg_id=msg_id, stream=streams.COMMANDS)

    async def call_provider(self, node: str, call: ProviderCall, *, timeout: float = 10.0) -> ProviderReply | None:
        """Relay an HTTP call to an instance's provider via its node agent; None when nobody answers."""
        return await self._ask_node(subjects.provider_calls(node), call, ProviderReply, timeout)

    async def call_provider_sends(
        self, node: str, sends: ProviderSends, *, timeout: float = 10.0
    ) -> ProviderSendsReply | None:
        """Relay several sends to an instance's provider via its node agent; None when nobody answers."""
        return await self._ask_node(subjects.provider_sends(node), sends, ProviderSendsReply, timeout)

    async def _ask_node(self, subject: str, request: msgspec.Struct, reply_type: type[R], timeout: float) -> R | None:
        try:  # plain nats-py: this is every send's hop, FastStream's request wrapper costs more than the call
            response = await self.broker.connection.request(
                subject, encode(request), timeout=timeout, headers=trace_headers()
            )
        except (NoRespondersError, NatsTimeoutError, TimeoutError):
            return None
        return decode(response.data, reply_type)

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
