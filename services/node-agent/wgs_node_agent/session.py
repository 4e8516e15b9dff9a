"""What the agent runs beside each started instance.

- the event pump: pulls the provider's outbox (`GET /events`), publishes each
  event on JetStream with `Nats-Msg-Id = {instance}:{generation}:{seq}`, and only
  then acks the outbox, so a crash replays (deduplicated) instead of losing events.
  Once it has read the outbox empty it lingers (`event_linger_seconds`) before it
  asks again: under steady traffic the next events gather into one page, so a page's
  fixed cost (the read, the publish, the routing calls, the ack and their journal
  writes) is paid for many events instead of one or two (decision 38). The first
  event after a quiet spell is not held back: the pump is already waiting for it;
- the outbound drain: sends queued while the instance was away (stream
  `WGS_OUTBOUND`, one ordered consumer per instance) are handed to the provider
  once it takes them;
- for the sandbox provider, its phone on the simulated network, and the phone's mailbox: what
  was carried to the phone while it was away (stream `WGS_SANDBOX_MAIL`, one ordered consumer
  per phone), handed to the provider once it answers, with the delivery receipts going back to
  the senders.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

import msgspec
from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.js.errors import NotFoundError
from wgs_contracts import streams, subjects
from wgs_contracts.instance_events import (
    EVENT_KINDS,
    ConnectionChanged,
    ConnectionState,
    DeliveryStatus,
    MessageStatusChanged,
    OutboundMessage,
    ProviderEvent,
    ProviderReply,
    SandboxEnvelope,
)
from wgs_contracts.messages import InstanceSpec, Provider, utcnow
from wgs_contracts.provider_api import (
    BatchResults,
    DeliverBatch,
    DeliverRequest,
    EventsPage,
    OutboxEvent,
    ReceiptBatch,
    ReceiptRequest,
    SandboxOutbound,
    SandboxReceipt,
    SendRequest,
    not_ready,
)
from wgs_kit.coalescing import Coalescer
from wgs_kit.messaging import decode, encode, publish_durable, publish_durable_all, redelivery_delay
from wgs_kit.outages import log_failure

from wgs_node_agent.config import EVENT_LINGER_SECONDS
from wgs_node_agent.network import NOT_ANSWERING_STATUS, SandboxNetwork
from wgs_node_agent.outbox import to_contract_event
from wgs_node_agent.provider_client import ProviderClient, ProviderUnavailable
from wgs_node_agent.queue_drain import LONG_POLL_SECONDS, QueueDrain
from wgs_node_agent.runtime.base import InstancePaths

log = logging.getLogger(__name__)
RETRY_SECONDS = 0.2
PROVIDER_WAIT_SECONDS = 1.0  # longest pause before a queued send or mail is offered again to a provider not answering


PROVIDER_NOT_ANSWERING: Final = ProviderReply(
    status=NOT_ANSWERING_STATUS, body=b'{"error": "provider is not answering"}', relayed=False
)
MAX_SEND_BATCH = 100  # sends of one `POST /messages` batch call
MAILBOX_IDLE_SECONDS = 7 * 24 * 3600.0  # a phone's mail consumer nobody drained for this long is removed
SEND_CALLS_IN_FLIGHT = 1  # per instance: sends arriving meanwhile wait and go in the next call (decision 39)


def batch_results(reply: ProviderReply, count: int) -> list[ProviderReply] | None:
    """Each item's answer from a batch call's `200 {"results": [...]}`; None when it is not that answer."""
    if reply.status != 200:
        return None
    try:
        results = msgspec.json.decode(reply.body, type=BatchResults).results
    except msgspec.DecodeError:  # not JSON, or not that shape
        return None
    if len(results) != count:
        return None
    return [ProviderReply(status=r.status, body=bytes(r.body)) for r in results]


def failed(message_ids: list[str], reason: str) -> list[ReceiptRequest]:
    """A `failed` receipt with `reason` for each message."""
    return [ReceiptRequest(id=message_id, status=DeliveryStatus.FAILED, reason=reason) for message_id in message_ids]


def delivery_receipts(message_ids: list[str], to: str, reply: ProviderReply) -> list[ReceiptRequest]:
    """The receipt of each message of a delivery the phone `to` answered: `delivered`, or `failed` with why."""
    if reply.status != 200:
        return failed(message_ids, f"recipient {to} refused the message ({reply.status}: {reply.body.decode()[:200]})")
    results = msgspec.json.decode(reply.body, type=BatchResults).results
    receipts = []
    for message_id, result in zip(message_ids, results, strict=True):
        if result.status == 200:
            receipts.append(ReceiptRequest(id=message_id, status=DeliveryStatus.DELIVERED))
        else:
            reason = f"recipient {to} refused the message ({result.status}: {bytes(result.body).decode()[:200]})"
            receipts.append(ReceiptRequest(id=message_id, status=DeliveryStatus.FAILED, reason=reason))
    return receipts


class PageRouting:
    """The sandbox traffic of one page of events, grouped by recipient phone (in event order)."""

    def __init__(self) -> None:
        self.outbound: dict[str, list[SandboxOutbound]] = {}
        self.receipts: dict[str, list[SandboxReceipt]] = {}

    def take(self, event: OutboxEvent) -> bool:
        """Keep a `sandbox.*` event for routing (True), or leave a public one to publish (False)."""
        if event.type == "sandbox.outbound":
            outbound = msgspec.json.decode(event.data, type=SandboxOutbound)
            self.outbound.setdefault(outbound.to, []).append(outbound)
            return True
        if event.type == "sandbox.receipt":
            receipt = msgspec.json.decode(event.data, type=SandboxReceipt)
            self.receipts.setdefault(receipt.to, []).append(receipt)
            return True
        return False


class InstanceSession:
    """The pump, drain and sandbox phone of one instance at one generation."""

    def __init__(
        self,
        spec: InstanceSpec,
        generation: int,
        paths: InstancePaths,
        broker: NatsBroker,
        network: SandboxNetwork,
        *,
        on_paired: Callable[[], None] | None = None,
        event_linger_seconds: float = EVENT_LINGER_SECONDS,
    ) -> None:
        self.spec = spec
        self.generation = generation
        self.broker = broker
        self.network = network
        self.client = ProviderClient(paths.socket)
        self.on_paired = on_paired
        self.event_linger_seconds = event_linger_seconds
        self._tasks: list[asyncio.Task[None]] = []
        self._phone: Subscription | None = None
        # Held while events are published and acked, so that stopping never cuts between the two.
        self._publishing = asyncio.Lock()
        self._sends: Coalescer[bytes, ProviderReply] = Coalescer(
            self._send_together, max_batch=MAX_SEND_BATCH, max_in_flight=SEND_CALLS_IN_FLIGHT
        )
        self._batches_refused = False

    @property
    def instance_id(self) -> int:
        """The instance this session serves."""
        return self.spec.instance_id

    @property
    def sends_waiting(self) -> int:
        """Sends waiting for the provider's call in flight to end, to go together in the next one."""
        return self._sends.waiting

    async def start(self) -> None:
        """Start pumping, draining and (sandbox) answering for the phone and taking its mail."""
        outbound = QueueDrain(
            self.broker, streams.OUTBOUND, subjects.outbound(self.instance_id), self._drain_name, self._send_queued
        )
        self._tasks = [asyncio.create_task(self._pump_forever()), asyncio.create_task(outbound.forever())]
        if self._phone_number is not None:
            self._phone = await self.network.join(self._phone_number, self)
            phone = self._phone_number
            mail = QueueDrain(
                self.broker,
                streams.SANDBOX_MAIL,
                subjects.sandbox_mail(phone),
                mailbox_name(phone),
                self._take_mail,
                expire_after_idle=MAILBOX_IDLE_SECONDS,
            )
            self._tasks.append(asyncio.create_task(mail.forever()))

    async def stop(self) -> None:
        """Stop everything this session runs (after the pump finished publishing what it read)."""
        async with self._publishing:
            for task in self._tasks:
                task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._phone is not None and self._phone_number is not None:
            await self.network.leave(self._phone_number, self, self._phone)
        await self.client.close()

    @property
    def _phone_number(self) -> str | None:
        """The phone this instance holds on the sandbox network (None: not a sandbox, or no number)."""
        return self.spec.phone_number if self.spec.provider is Provider.SANDBOX and self.spec.phone_number else None

    async def forget_queued(self) -> None:
        """Drop the instance's queued sends and its phone's mail, with their consumers (the instance is deleted)."""
        js = self.broker.connection.jetstream()
        queues = [(streams.OUTBOUND, self._drain_name, subjects.outbound(self.instance_id))]
        if self._phone_number is not None:
            phone = self._phone_number
            queues.append((streams.SANDBOX_MAIL, mailbox_name(phone), subjects.sandbox_mail(phone)))
        for stream, consumer, subject in queues:
            with contextlib.suppress(NotFoundError):
                await js.delete_consumer(stream.name, consumer)
            await js.purge_stream(stream.name, subject=subject)

    async def relay(self, method: str, path: str, body: bytes | None) -> ProviderReply:
        """Forward one HTTP call to the provider; sends waiting meanwhile go together (`_send_together`)."""
        if method == "POST" and path == "/messages" and body is not None and not self._batches_refused:
            return await self._sends.submit(body)
        return await self._call(method, path, body)

    async def _call(self, method: str, path: str, body: bytes | None) -> ProviderReply:
        try:
            status, content, content_type = await self.client.call(method, path, body)
        except ProviderUnavailable:
            return PROVIDER_NOT_ANSWERING
        return ProviderReply(status=status, body=content, content_type=content_type)

    async def _send_together(self, bodies: list[bytes]) -> list[ProviderReply]:
        """Sends that waited together: one `POST /messages` batch call, each send its own result.

        A lone send is one plain call, as is every send to a provider that refused a batch (4xx:
        it takes no batches). A batch answered otherwise than per item is sent one by one (sends
        are idempotent by id); one the provider did not answer is not sent again.
        """
        if len(bodies) == 1 or self._batches_refused:
            return list(await asyncio.gather(*(self._call("POST", "/messages", body) for body in bodies)))
        reply = await self._call("POST", "/messages", b'{"batch":[' + b",".join(bodies) + b"]}")
        if reply is PROVIDER_NOT_ANSWERING:
            return [reply] * len(bodies)
        results = batch_results(reply, len(bodies))
        if results is not None:
            return results
        if 400 <= reply.status < 500:
            log.info(
                "instance %d: the provider takes no batch of sends (%d); one per call", self.instance_id, reply.status
            )
            self._batches_refused = True
        return list(await asyncio.gather(*(self._call("POST", "/messages", body) for body in bodies)))

    # --- event pump -------------------------------------------------------------------------

    async def _pump_forever(self) -> None:
        # The provider's outbox keeps what was not acked yet, so after a restart reading from 0
        # re-publishes only events that may not have been acked (deduplicated by Nats-Msg-Id).
        cursor = 0
        failures = 0
        while True:
            try:
                cursor, emptied = await self._pump_once(cursor)
                failures = 0
                if emptied:
                    await asyncio.sleep(self.event_linger_seconds)
            except ProviderUnavailable:
                failures += 1
                await asyncio.sleep(min(RETRY_SECONDS * failures, 2.0))
            except Exception as exc:
                failures += 1
                log_failure(log, exc, "event pump of instance %d", self.instance_id)
                await asyncio.sleep(redelivery_delay(failures))

    async def _pump_once(self, cursor: int) -> tuple[int, bool]:
        """Read, publish, route and ack one page; the new cursor, and whether the page emptied the outbox."""
        status, body, _ = await self.client.call(
            "GET", f"/events?after={cursor}&wait={LONG_POLL_SECONDS}", timeout=LONG_POLL_SECONDS + 5
        )
        if status != 200:
            raise ProviderUnavailable(f"GET /events answered {status}")
        page = msgspec.json.decode(body, type=EventsPage)
        if page.last_seq < cursor:  # the provider lost its state: its sequence starts over
            log.warning("instance %d: provider sequence restarted (%d < %d)", self.instance_id, page.last_seq, cursor)
            cursor = 0
        async with self._publishing:
            routing = PageRouting()
            public: list[ProviderEvent] = []
            for event in page.events:
                if event.seq <= cursor:
                    continue
                try:
                    if not routing.take(event):
                        public.extend(self._contract_event(event))
                except msgspec.DecodeError as exc:  # retrying would stall every event behind it
                    log.error(
                        "instance %d: provider event %d (%s) does not match the contract, skipped: %s",
                        self.instance_id,
                        event.seq,
                        event.type,
                        exc,
                    )
                cursor = event.seq
            await self._publish(public)
            await self._route_page(routing)
            if page.events:
                await self.client.call("POST", "/events/ack", msgspec.json.encode({"seq": cursor}))
        return cursor, bool(page.events) and cursor >= page.last_seq

    def _contract_event(self, event: OutboxEvent) -> list[ProviderEvent]:
        """The public event of an outbox entry (none for an unknown type, which is logged and skipped)."""
        contract_event = to_contract_event(
            event, instance_id=self.instance_id, tenant_id=self.spec.tenant_id, generation=self.generation
        )
        if contract_event is None:
            log.warning("instance %d: unknown provider event type %r skipped", self.instance_id, event.type)
            return []
        return [contract_event]

    async def _publish(self, events: list[ProviderEvent]) -> None:
        """Publish a page's public events on JetStream, in order, deduplicated by event id.

        As one fast-ingest batch (`publish_durable_all`): one write and one answer for the page instead
        of a round trip per event, and the stream never holds an event without those before it.
        """
        if not events:
            return
        await publish_durable_all(
            self.broker,
            [(self._event_subject(event), event, event.event_id) for event in events],
            stream=streams.EVENTS,
        )
        paired = any(isinstance(e, ConnectionChanged) and e.state is ConnectionState.CONNECTED for e in events)
        if paired and self.on_paired is not None:
            self.on_paired()

    def _event_subject(self, event: ProviderEvent) -> str:
        return subjects.instance_event(self.instance_id, EVENT_KINDS[type(event).__struct_config__.tag])  # type: ignore[index]

    # --- simulated network --------------------------------------------------------------------

    async def _route_page(self, routing: PageRouting) -> None:
        """Carry a page's messages and receipts: one envelope per recipient phone, recipients in parallel.

        The delivery (or failure) receipts of the messages go back to this instance's provider
        in one call; the receipts this instance emitted go out to their senders.
        """
        if routing.outbound:
            answers = await asyncio.gather(*(self._deliver(to, messages) for to, messages in routing.outbound.items()))
            own = ReceiptBatch(batch=[receipt for receipts in answers for receipt in receipts])
            if own.batch:
                await self.client.call("POST", "/sandbox/receipt", encode(own))
        if routing.receipts:
            await asyncio.gather(*(self._send_receipts(to, receipts) for to, receipts in routing.receipts.items()))

    async def _deliver(self, to: str, messages: list[SandboxOutbound]) -> list[ReceiptRequest]:
        """Deliver messages to the instance holding phone `to`; the receipt of each (delivered or failed).

        None yet for messages to a phone that is away: they wait in its mailbox, and their receipts
        come back when it takes them.
        """
        batch = DeliverBatch(batch=[DeliverRequest(id=m.id, from_=m.from_, content=m.content) for m in messages])
        envelope = SandboxEnvelope(kind="message", sender=messages[0].from_, recipient=to, body=encode(batch))
        message_ids = [m.id for m in messages]
        try:
            reply = await self.network.carry_or_park(envelope)
        except NoRespondersError:
            return failed(message_ids, f"recipient {to} is not on the sandbox network")
        return [] if reply is None else delivery_receipts(message_ids, to, reply)

    async def _send_receipts(self, to: str, receipts: list[SandboxReceipt]) -> None:
        """Carry the receipts this instance's provider emitted back to the phone `to` that sent the messages."""
        requests = [ReceiptRequest(id=r.id, status=r.status, reason=r.reason) for r in receipts]
        await self._carry_receipts(receipts[0].from_, to, requests)

    async def _carry_receipts(self, sender: str, to: str, receipts: list[ReceiptRequest]) -> None:
        """Carry receipts from phone `sender` to phone `to`: at once, or through its mailbox when it is away."""
        envelope = SandboxEnvelope(
            kind="receipt", sender=sender, recipient=to, body=encode(ReceiptBatch(batch=receipts))
        )
        try:
            await self.network.carry_or_park(envelope)
        except NoRespondersError:
            log.info("%d receipt(s): %s is not on the sandbox network", len(receipts), to)

    async def take_envelope(self, envelope: SandboxEnvelope) -> ProviderReply:
        """Hand an envelope of the simulated network (a message or receipts) to this instance's provider."""
        path = "/sandbox/deliver" if envelope.kind == "message" else "/sandbox/receipt"
        return await self.relay("POST", path, envelope.body)

    async def _take_mail(self, message: Msg) -> None:
        """An envelope that waited in this phone's mailbox, handed to the provider once it answers.

        A message's delivery receipts go back to its sender as live ones do; whatever else the
        provider answers is final, as it is for an envelope carried live.
        """
        envelope = decode(message.data, SandboxEnvelope)
        reply = await self.take_envelope(envelope)
        if reply.status == NOT_ANSWERING_STATUS:
            await message.nak(delay=min(redelivery_delay(message.metadata.num_delivered), PROVIDER_WAIT_SECONDS))
            return
        if envelope.kind == "message":
            message_ids = [m.id for m in msgspec.json.decode(envelope.body, type=DeliverBatch).batch]
            receipts = delivery_receipts(message_ids, envelope.recipient, reply)
            await self._carry_receipts(envelope.recipient, envelope.sender, receipts)
        await message.ack()

    async def _report_refused(self, message_id: str, reason: str) -> None:
        """A queued send the provider refused: its status becomes `failed` with the provider's reason."""
        event = MessageStatusChanged(
            event_id=f"{self.instance_id}:{self.generation}:outbound:{message_id}",
            instance_id=self.instance_id,
            tenant_id=self.spec.tenant_id,
            generation=self.generation,
            seq=0,
            at=utcnow(),
            message_id=message_id,
            status=DeliveryStatus.FAILED,
            reason=reason,
        )
        await publish_durable(
            self.broker,
            subjects.instance_event(self.instance_id, EVENT_KINDS["message.status"]),
            event,
            msg_id=event.event_id,
            stream=streams.EVENTS,
        )

    # --- outbound drain -----------------------------------------------------------------------

    @property
    def _drain_name(self) -> str:
        return f"outbound-{self.instance_id}"

    async def _send_queued(self, message: Msg) -> None:
        queued = decode(message.data, OutboundMessage)
        request = SendRequest(id=queued.id, to=queued.to, content=queued.content)
        attempt = message.metadata.num_delivered
        status: int | None
        try:
            status, body, _ = await self.client.call("POST", "/messages", encode(request))
        except ProviderUnavailable:
            status, body = None, b""
        if status is None or not_ready(status, body):
            # The provider is starting again, or restoring its session: not the send's fault, so no long backoff.
            await message.nak(delay=min(redelivery_delay(attempt), PROVIDER_WAIT_SECONDS))
            return
        if 400 <= status < 500:
            await self._report_refused(queued.id, body.decode(errors="replace")[:300])
        if status == 200 or 400 <= status < 500:
            await message.ack()
            return
        await message.nak(delay=redelivery_delay(attempt))


def mailbox_name(phone: str) -> str:
    """The durable consumer of a phone's mailbox."""
    return f"mail-{phone}"
