"""Leader election on a PostgreSQL advisory lock.

The lock lives as long as one dedicated connection: when the leader process
dies (even by kill -9) the kernel closes its socket, PostgreSQL releases the
lock, and a standby's next poll takes it. The holder shows up in
`pg_stat_activity.application_name` as `wgs-scheduler:<holder>`.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg

log = logging.getLogger(__name__)
LEADER_LOCK_KEY = 0x5767_0002
APPLICATION_PREFIX = "wgs-scheduler:"


class LeaderElection:
    """Runs `on_elected` when this process becomes leader and `on_deposed` when it stops being one."""

    def __init__(
        self,
        dsn: str,
        holder: str,
        *,
        poll_seconds: float,
        on_elected: Callable[[], Awaitable[None]],
        on_deposed: Callable[[], Awaitable[None]],
    ) -> None:
        self.dsn = dsn
        self.holder = holder
        self.poll_seconds = poll_seconds
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.is_leader = False
        self._conn: asyncpg.Connection | None = None

    async def run(self) -> None:
        """Campaign forever: poll for the lock, then hold it while checking the connection."""
        while True:
            try:
                await self._campaign_once()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("leader election connection failed: %r", exc)
            await self._step_down()
            await asyncio.sleep(self.poll_seconds)

    async def _campaign_once(self) -> None:
        self._conn = await asyncpg.connect(
            self.dsn, server_settings={"application_name": APPLICATION_PREFIX + self.holder}
        )
        while not await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK_KEY):
            await asyncio.sleep(self.poll_seconds)
        self.is_leader = True
        log.info("elected leader as %s", self.holder)
        await self.on_elected()
        while True:
            await asyncio.sleep(self.poll_seconds)
            await self._conn.fetchval("SELECT 1", timeout=max(self.poll_seconds, 1.0) * 3)

    async def _step_down(self) -> None:
        if self.is_leader:
            self.is_leader = False
            log.warning("lost leadership")
            await self.on_deposed()
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def close(self) -> None:
        """Release the lock (by closing the connection) and stop acting."""
        await self._step_down()
