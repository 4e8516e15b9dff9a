"""Sends to one instance, relayed together: one NATS request for the sends waiting meanwhile.

Each instance has its own queue in an API process (a `Coalescer`), so an instance whose provider
is slow holds up only its own sends. A lone send is one `ProviderCall`, as it always was; sends
that arrive while the instance's request is in flight wait for it, and then go together as one
`ProviderSends` to its node agent, which hands them to the provider as one batch call when the
provider takes batches (`docs/provider-contract.md`). One request in flight per instance, not
more: a provider takes an instance's sends one call at a time anyway (one connection, one
journal), so a second request would only split the batch and double the work per send
(decision 39). Each send gets its own answer; a
request nobody answered is None for each of its sends (they are then queued, and the provider's
idempotency by message id makes a send that did reach it harmless to repeat).

What a queue's batch does is its owner's (`SendRelay(run_batch)`): `relay_sends` alone, or, for
the API's sends, that and their records at the same time (`services.relay_and_record`).
"""

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Generic, TypeVar

from wgs_contracts.instance_events import ProviderCall, ProviderReply, ProviderSends
from wgs_kit.coalescing import Coalescer

from wgs_api.messaging import ApiMessaging

MAX_SENDS_PER_REQUEST: Final = 100
REQUESTS_IN_FLIGHT: Final = 1  # per instance and API process (see the module)
MAX_QUEUES: Final = 1_000  # beyond this many instances with a queue, the idle queues are dropped

Item = TypeVar("Item")
Answer = TypeVar("Answer")
# run_batch(messaging, node, instance id, items) -> one answer per item, in order
BatchRun = Callable[[ApiMessaging, str, int, list[Item]], Awaitable[Sequence[Answer]]]


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


class SendRelay(Generic[Item, Answer]):
    """This process's queue of sends per (connection, node, instance), each batch run by `run_batch`."""

    def __init__(self, run_batch: BatchRun[Item, Answer], *, max_queues: int = MAX_QUEUES) -> None:
        self.run_batch = run_batch
        self.max_queues = max_queues
        self._queues: dict[tuple[ApiMessaging, str, int], Coalescer[Item, Answer]] = {}

    def waiting(self, messaging: ApiMessaging, node: str, instance_id: int) -> int:
        """Sends waiting in the instance's queue for a batch to take them."""
        queue = self._queues.get((messaging, node, instance_id))
        return 0 if queue is None else queue.waiting

    async def send(self, messaging: ApiMessaging, node: str, instance_id: int, item: Item) -> Answer:
        """The answer to one send, run in a batch with the sends around it."""
        key = (messaging, node, instance_id)
        queue = self._queues.get(key)
        if queue is None:
            if len(self._queues) >= self.max_queues:
                self._queues = {k: q for k, q in self._queues.items() if not q.idle}
            batch = functools.partial(self.run_batch, messaging, node, instance_id)
            queue = self._queues[key] = Coalescer(
                batch, max_batch=MAX_SENDS_PER_REQUEST, max_in_flight=REQUESTS_IN_FLIGHT
            )
        return await queue.submit(item)
