"""The simulated WhatsApp network of sandbox instances, as one node agent carries it.

Each sandbox instance with a phone number answers `wgs.rpc.sandbox.{phone}` (NATS
request-reply), so any agent can reach it. An envelope for a phone held on this same node is
handed to its holder directly: the same answer without four NATS hops (request, delivery,
reply, delivery back).

A phone nobody answers for is either not on the network (a number no sandbox instance has) or
away for a moment (its instance restarting or moving). The directory the API answers
(`SANDBOX_DIRECTORY`) tells them apart: an unknown number fails at once, so that one message to
a wrong number does not hold up its sender's event pump for the whole retry window; a known one
is asked again until the window ends. Without an answer from the directory, every phone is
treated as known.
"""

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from wgs_contracts import subjects
from wgs_contracts.instance_events import ProviderReply, SandboxEnvelope
from wgs_contracts.messages import SandboxPhoneKnown, SandboxPhoneLookup
from wgs_kit.messaging import decode, encode

ROUTE_TIMEOUT_SECONDS = 5.0
ROUTE_RETRY_SECONDS = 6.0  # how long a known phone may be unreachable (restarting, migrating) before it fails
DIRECTORY_TIMEOUT_SECONDS = 1.0


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
        asked again until `retry_seconds`, then fails the same way. TimeoutError when the
        holder takes longer than `timeout_seconds`.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_seconds
        attempt = 0
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
                if attempt == 0 and not await self.in_directory(envelope.recipient):
                    raise
                attempt += 1
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(min(0.1 * attempt, 1.0))
                continue
            return decode(reply.data, ProviderReply)

    async def in_directory(self, phone: str) -> bool:
        """False only when the directory answers that no sandbox instance has `phone`."""
        try:
            reply = await self._connection().request(
                self.directory_subject, encode(SandboxPhoneLookup(phone=phone)), timeout=DIRECTORY_TIMEOUT_SECONDS
            )
            return decode(reply.data, SandboxPhoneKnown).known
        except (NoRespondersError, NatsTimeoutError, TimeoutError, ValueError):
            return True
