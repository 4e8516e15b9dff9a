"""Message records that a PostgreSQL outage kept from being stored, stored once it is back.

A send's answer is settled by its provider (or its queue), not by its record (`services.send`):
a send the provider took during a PostgreSQL restart answers `200` though its record failed. Its
history would then be missing. Instead, when the record failed because the database was
unavailable (`DATABASE_OUTAGES`), it waits here, in this API process, and one task stores the
waiting records together once PostgreSQL answers again, trying every `FIRST_PAUSE` to
`MAX_PAUSE` seconds (the pauses of the consumers holding messages through an outage,
`wgs_kit.outages`). The statuses the provider reported meanwhile were kept unclaimed and
belong to the message again (decision 46), so its history is whole.

Bounded: at most `max_waiting` records wait (a record beyond is logged as lost), a record that
fails for another reason is logged and dropped, and `stop` (at shutdown) tries the waiting ones
once more, for at most `stop_seconds`, and logs those it could not store.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final, Generic, TypeVar

from wgs_db.engine import DATABASE_OUTAGES
from wgs_kit.outages import FIRST_PAUSE, MAX_PAUSE

log = logging.getLogger(__name__)
Record = TypeVar("Record")
MAX_WAITING: Final = 100_000
STOP_SECONDS: Final = 5.0


class LateRecords(Generic[Record]):
    """Records waiting for the database, stored by `store(records)` (idempotent) once it is back."""

    def __init__(
        self,
        store: Callable[[list[Record]], Awaitable[object]],
        *,
        max_waiting: int = MAX_WAITING,
        first_pause: float = FIRST_PAUSE,
        max_pause: float = MAX_PAUSE,
        stop_seconds: float = STOP_SECONDS,
    ) -> None:
        self.store = store
        self.max_waiting = max_waiting
        self.first_pause = first_pause
        self.max_pause = max_pause
        self.stop_seconds = stop_seconds
        self._waiting: list[Record] = []
        self._worker: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Records not stored yet."""
        return len(self._waiting)

    def add(self, record: Record) -> bool:
        """Keep `record` until the database is back; False (logged) when too many wait already."""
        if len(self._waiting) >= self.max_waiting:
            log.error("%d message records already wait for PostgreSQL: %r is lost", len(self._waiting), record)
            return False
        self._waiting.append(record)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._store_when_back(), name="late-records")
        return True

    async def _store_when_back(self) -> None:
        pause = self.first_pause
        while self._waiting:
            await asyncio.sleep(pause)
            pause = self.first_pause if await self._store_waiting() else min(self.max_pause, pause * 2)

    async def _store_waiting(self) -> bool:
        """Store what waits, in one call; False while the database is still unavailable."""
        batch = self._waiting[:]
        try:
            await self.store(batch)
        except DATABASE_OUTAGES as exc:
            log.warning("%d message records still wait for PostgreSQL: %r", len(batch), exc)
            return False
        except Exception:
            log.exception("storing %d message records failed: they are lost", len(batch))
        else:
            log.info("stored %d message records that waited for PostgreSQL", len(batch))
        del self._waiting[: len(batch)]
        return True

    async def stop(self) -> None:
        """Try the waiting records once more (bounded), then stop; log those that could not be stored."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        if self._waiting:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._store_waiting(), self.stop_seconds)
        if self._waiting:
            log.error("stopping with %d message records not stored: their histories are missing", len(self._waiting))
            self._waiting.clear()
