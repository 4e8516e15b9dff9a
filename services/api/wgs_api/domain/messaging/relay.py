"""Sends to one instance, relayed together: one NATS request for the sends waiting meanwhile.

Each instance has its own queue in an API process (a `Coalescer`), so an instance whose provider
is slow holds up only its own sends. A lone send is one `ProviderCall`, as it always was; sends
that arrive while the instance's previous requests are in flight (at most two) go together as
one `ProviderSends` to its node agent, which hands them to the provider as one batch call when
the provider takes batches (`docs/provider-contract.md`). Each send gets its own answer; a
request nobody answered is None for each of its sends (they are then queued, and the provider's
idempotency by message id makes a send that did reach it harmless to repeat).
"""

import functools
from typing import Final

from wgs_contracts.instance_events import ProviderCall, ProviderReply, ProviderSends
from wgs_kit.coalescing import Coalescer

from wgs_api.messaging import ApiMessaging

MAX_SENDS_PER_REQUEST: Final = 100
MAX_QUEUES: Final = 1_000  # beyond this many instances with a queue, the idle queues are dropped


async def relay_sends(
    messaging: ApiMessaging, node: str, instance_id: int, bodies: list[bytes]
) -> list[ProviderReply | None]:
    """Each send's provider answer (None: nobody answered): one request for all of them."""
    if len(bodies) == 1:
        call = ProviderCall(instance_id=instance_id, method="POST", path="/messages", body=bodies[0])
        return [await messaging.call_provider(node, call)]
    answer = await messaging.call_provider_sends(node, ProviderSends(instance_id=instance_id, bodies=bodies))
    if answer is None or len(answer.replies) != len(bodies):
        return [None] * len(bodies)
    return list(answer.replies)


class SendRelay:
    """This process's queue of sends per (connection, node, instance)."""

    def __init__(self, *, max_queues: int = MAX_QUEUES) -> None:
        self.max_queues = max_queues
        self._queues: dict[tuple[ApiMessaging, str, int], Coalescer[bytes, ProviderReply | None]] = {}

    async def send(self, messaging: ApiMessaging, node: str, instance_id: int, body: bytes) -> ProviderReply | None:
        """The provider's answer to one send (`POST /messages` body), relayed with the sends around it."""
        key = (messaging, node, instance_id)
        queue = self._queues.get(key)
        if queue is None:
            if len(self._queues) >= self.max_queues:
                self._queues = {k: q for k, q in self._queues.items() if not q.idle}
            batch = functools.partial(relay_sends, messaging, node, instance_id)
            queue = self._queues[key] = Coalescer(batch, max_batch=MAX_SENDS_PER_REQUEST)
        return await queue.submit(body)


SENDS: Final = SendRelay()  # this process's
