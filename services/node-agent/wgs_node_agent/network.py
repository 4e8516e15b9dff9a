"""The simulated WhatsApp network of sandbox instances, as one node agent carries it.

Each sandbox instance with a phone number answers `wgs.rpc.sandbox.{phone}` (NATS
request-reply), so any agent can reach it. An envelope for a phone held on this same node is
handed to its holder directly: the same answer without four NATS hops (request, delivery,
reply, delivery back).

A phone nobody answers for is either not on the network (a number no sandbox instance has) or
away (its instance restarting, moving or stopped). The directory the API answers
(`SANDBOX_DIRECTORY`) tells them apart: an unknown number fails at once, so that one message to
a wrong number does not hold up its sender's event pump for the whole retry window; a known one
is asked again until the window ends. Without an answer from the directory, every phone is
treated as known, and fails when the window ends.

A phone the directory knows that is still away when the window ends, or whose provider does not
answer, gets its envelope later, as WhatsApp's servers keep a message for a phone that is off:
the envelope waits in the phone's mailbox (stream `WGS_SANDBOX_MAIL`), which the phone's session
empties once its provider answers (`wgs_node_agent.session`).
"""

import asyncio
import contextlib
import hashlib
from collections.abc import Callable
from typing import Protocol

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from wgs_contracts import streams, subjects
from wgs_contracts.instance_events import ProviderReply, SandboxEnvelope
from wgs_contracts.messages import SandboxPhoneKnown, SandboxPhoneLookup
from wgs_kit.messaging import decode, encode, trace_headers

ROUTE_TIMEOUT_SECONDS = 5.0
ROUTE_RETRY_SECONDS = 6.0  # how long a known phone is asked again (restarting, migrating) before its mail waits
DIRECTORY_TIMEOUT_SECONDS = 1.0
NOT_ANSWERING_STATUS = 504  # a holder's answer when its provider does not answer (stopped, restarting)


class PhoneAway(Exception):
    """The directory knows the phone, and nobody answered for it during the whole retry window."""


class PhoneHolder(Protocol):
    """What answers for a phone: the session of the sandbox instance with that number."""

    async def take_envelope(self, envelope: SandboxEnvelope) -> ProviderReply:
        """Hand the envelope to the instance's provider; its answer."""
        ...


class SandboxNetwork:
    """The phones this node holds, and the way to every other phone."""

    def __init__(
        self,
        connection: Callable[[], NatsClient],
        *,
        timeout_seconds: float = ROUTE_TIMEOUT_SECONDS,
        retry_seconds: float = ROUTE_RETRY_SECONDS,
        directory_subject: str = subjects.SANDBOX_DIRECTORY,
    ) -> None:
        self._connection = connection
        self.timeout_seconds = timeout_seconds
        self.retry_seconds = retry_seconds
        self.directory_subject = directory_subject
        self._local: dict[str, PhoneHolder] = {}

    async def join(self, phone: str, holder: PhoneHolder) -> Subscription:
        """Answer for `phone` (this node directly, other nodes over NATS) until `leave`."""

        async def answer(msg: Msg) -> None:
            await msg.respond(encode(await holder.take_envelope(decode(msg.data, SandboxEnvelope))))

        subscription = await self._connection().subscribe(subjects.sandbox_phone(phone), cb=answer)
        self._local[phone] = holder
        return subscription

    async def leave(self, phone: str, holder: PhoneHolder, subscription: Subscription) -> None:
        """Stop answering for `phone` (a newer holder of the same phone keeps it)."""
        if self._local.get(phone) is holder:
            del self._local[phone]
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()

    async def carry(self, envelope: SandboxEnvelope) -> ProviderReply:
        """The answer of the phone the envelope is addressed to.

        An unanswered phone the directory does not know fails at once (NoRespondersError). A
        known one is unreachable for a moment while its instance restarts or migrates, so it is
        asked again until `retry_seconds`, then PhoneAway; one the directory did not answer for,
        NoRespondersError then. TimeoutError when the holder takes longer than `timeout_seconds`.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_seconds
        attempt = 0
        known: bool | None = None
        while True:
            holder = self._local.get(envelope.recipient)
            if holder is not None:
                async with asyncio.timeout(self.timeout_seconds):
                    return await holder.take_envelope(envelope)
            try:
                reply = await self._connection().request(
                    subjects.sandbox_phone(envelope.recipient), encode(envelope), timeout=self.timeout_seconds
                )
            except NoRespondersError:
                if attempt == 0:
                    known = await self.directory_knows(envelope.recipient)
                    if known is False:
                        raise
                attempt += 1
                if loop.time() >= deadline:
                    if known:
                        raise PhoneAway(envelope.recipient) from None
                    raise
                await asyncio.sleep(min(0.1 * attempt, 1.0))
                continue
            return decode(reply.data, ProviderReply)

    async def carry_or_park(self, envelope: SandboxEnvelope) -> ProviderReply | None:
        """The answer of the envelope's phone, or None when the phone is away or its provider does
        not answer: the envelope then waits in the phone's mailbox. NoRespondersError as `carry`.
        """
        try:
            reply = await self.carry(envelope)
        except (PhoneAway, NatsTimeoutError, TimeoutError):
            reply = None
        if reply is None or reply.status == NOT_ANSWERING_STATUS:
            await self.park(envelope)
            return None
        return reply

    async def park(self, envelope: SandboxEnvelope) -> None:
        """Keep the envelope in its phone's mailbox (durably: JetStream has stored it on return).

        Its id is a digest of the envelope, so parking the same envelope again (a page routed
        again after a crash) keeps one copy; and taking one twice is harmless anyway, since
        deliveries and receipts are idempotent.
        """
        data = encode(envelope)
        js = self._connection().jetstream()
        await js.publish(
            subjects.sandbox_mail(envelope.recipient),
            data,
            timeout=self.timeout_seconds,
            stream=streams.SANDBOX_MAIL.name,
            headers=trace_headers(hashlib.sha256(data).hexdigest()),
        )

    async def directory_knows(self, phone: str) -> bool | None:
        """Whether a sandbox instance has `phone`, as the directory answers; None without an answer."""
        try:
            reply = await self._connection().request(
                self.directory_subject, encode(SandboxPhoneLookup(phone=phone)), timeout=DIRECTORY_TIMEOUT_SECONDS
            )
            return decode(reply.data, SandboxPhoneKnown).known
        except (NoRespondersError, NatsTimeoutError, TimeoutError, ValueError):
            return None
