"""Natural batching: calls that arrive while a batch is being run go together in the next one.

A hot path that runs one small statement per request (a key lookup, a rate-limit token, a
record insert) spends most of its time in per-statement overhead, on both sides of the
connection. A `Coalescer` turns the requests that queue up meanwhile into one call of a
batch function:

- an idle coalescer starts a batch on the next turn of the event loop, so a lone call waits
  for nothing but that turn;
- up to `max_in_flight` batches run at once (default 2: a call arriving while one batch
  runs does not wait for it); beyond that, every call made meanwhile waits and goes into
  the next batch, so batches grow with the load and the number of statements stays near
  the number of round trips the connections can make.

Each caller gets its own result, or the batch's exception. With `alone_on_error`, a failed
batch of several items is run again one item at a time, so that an item that cannot be
done fails only its own caller.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    """Runs `run_batch(items) -> results` (one result per item, same order) for concurrent callers."""

    def __init__(
        self,
        run_batch: Callable[[list[Item]], Awaitable[Sequence[Result]]],
        *,
        max_batch: int = 256,
        max_in_flight: int = 2,
        alone_on_error: bool = False,
    ) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._alone_on_error = alone_on_error
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._workers: set[asyncio.Task[None]] = set()

    @property
    def idle(self) -> bool:
        """Nothing waits and no batch runs."""
        return not self._pending and all(worker.done() for worker in self._workers)

    @property
    def waiting(self) -> int:
        """Calls waiting for a batch to take them."""
        return len(self._pending)

    async def submit(self, item: Item) -> Result:
        """The result of `item`, computed in a batch with the calls around it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((item, future))
        self._workers = {w for w in self._workers if not w.done() and w.get_loop() is loop}
        if len(self._workers) < self._max_in_flight and len(self._pending) == 1:
            self._workers.add(loop.create_task(self._work()))
        return await future

    async def _work(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            live = [(item, future) for item, future in batch if not future.cancelled()]
            if not live:
                continue
            if self._alone_on_error and len(live) > 1:
                try:
                    await self._settle(live)
                except Exception:
                    for item, future in live:
                        if not future.done():
                            await self._settle_reporting([(item, future)])
                continue
            await self._settle_reporting(live)

    async def _settle(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        """Run one batch and give each caller its result; raise what the batch raised."""
        results = await self._run_batch([item for item, _ in batch])
        if len(results) != len(batch):
            raise RuntimeError(f"batch of {len(batch)} answered {len(results)} results")
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _settle_reporting(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        """Run one batch; its exception goes to each of its callers."""
        try:
            await self._settle(batch)
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
