"""Instance status: applying events to the rows, and waiting for them inside a request.

Node agents and the scheduler publish `InstanceStatusChanged` on JetStream. A
durable consumer shared by the API processes applies them to the instance rows;
separately, every API process watches the same subjects on core NATS so that a
request (create, delete) can wait for its instance's next state.
"""

import asyncio
from collections import defaultdict
from collections.abc import Container, Iterator
from contextlib import contextmanager

from wgs_contracts.messages import InstanceStatus, InstanceStatusChanged
from wgs_db.tables import Instance


async def apply_status(event: InstanceStatusChanged) -> None:
    """Record an event on its instance row; stale, duplicate or out-of-order events change nothing."""
    if event.status is InstanceStatus.REMOVED:
        await Instance.raw(
            "DELETE FROM instances WHERE id = {} AND desired_state = 'deleted' AND generation <= {}",
            event.instance_id,
            event.generation,
        )
    elif event.status is InstanceStatus.UNSCHEDULABLE:
        await Instance.raw(
            "UPDATE instances SET status_reason = {}, updated_at = now() WHERE id = {} AND node_id IS NULL",
            event.reason,
            event.instance_id,
        )
    else:
        await Instance.raw(
            "UPDATE instances SET status = {}, status_reason = {}, status_at = {}, updated_at = now()"
            " WHERE id = {} AND generation = {} AND desired_state = 'running'"
            " AND (status_at IS NULL OR status_at <= {})",
            event.status.value,
            event.reason,
            event.at,
            event.instance_id,
            event.generation,
            event.at,
        )


class StatusBoard:
    """Hands status events received by this process to the requests waiting for them."""

    def __init__(self) -> None:
        self._watchers: dict[int, list[asyncio.Queue[InstanceStatusChanged]]] = defaultdict(list)

    @contextmanager
    def watch(self, instance_id: int) -> Iterator[asyncio.Queue[InstanceStatusChanged]]:
        """A queue receiving the instance's events while the block runs."""
        queue: asyncio.Queue[InstanceStatusChanged] = asyncio.Queue()
        self._watchers[instance_id].append(queue)
        try:
            yield queue
        finally:
            self._watchers[instance_id].remove(queue)
            if not self._watchers[instance_id]:
                del self._watchers[instance_id]

    def dispatch(self, event: InstanceStatusChanged) -> None:
        """Deliver an event to the watchers of its instance."""
        for queue in self._watchers.get(event.instance_id, ()):
            queue.put_nowait(event)


async def next_status(
    queue: asyncio.Queue[InstanceStatusChanged],
    wanted: Container[InstanceStatus],
    deadline: float,
) -> InstanceStatusChanged | None:
    """The first event in `wanted` arriving before the loop time `deadline`, else None."""
    loop = asyncio.get_running_loop()
    while (remaining := deadline - loop.time()) > 0:
        try:
            event = await asyncio.wait_for(queue.get(), remaining)
        except TimeoutError:
            return None
        if event.status in wanted:
            return event
    return None
