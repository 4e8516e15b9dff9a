"""The Piccolo engine every table is bound to; services open its pool in their lifespan."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import asyncpg
from asyncpg import exceptions as pg
from piccolo.engine.postgres import PostgresEngine
from wgs_kit.outages import NATS_OUTAGES

# PostgreSQL down, restarting, refusing or dropping connections, or out of a resource: the failure
# of whatever asked, not of what it asked (a query that would fail again once the server is back).
DATABASE_OUTAGES: Final = (
    pg.PostgresConnectionError,
    pg.CannotConnectNowError,
    pg.AdminShutdownError,
    pg.CrashShutdownError,
    pg.InsufficientResourcesError,
    # A statement sent on a connection the server is terminating: asyncpg's protocol state breaks
    # ("cannot switch to state 12; another operation (2) is in progress"): 16 of the 193 requests
    # that five restarts met in a probe (the others found the server refusing connections).
    pg.InternalClientError,
    ConnectionError,
)
# What a service on both NATS and PostgreSQL rides out (one warning line each, not a traceback).
NATS_AND_DATABASE_OUTAGES: Final = NATS_OUTAGES + DATABASE_OUTAGES


class DeferredPostgresEngine(PostgresEngine):
    """A Piccolo engine configured at startup rather than at import.

    Piccolo's engine connects once at construction to check the server version;
    at import time there is no DSN yet, so that check is skipped here.
    """

    async def check_version(self) -> None:
        """Skip the construction-time version check."""


DB = DeferredPostgresEngine(config={})


async def keep_session(connection: asyncpg.Connection) -> None:
    """Pool reset hook: nothing to undo (asyncpg still rolls back an open transaction itself).

    Pooled connections never change session state (no SET, LISTEN or session advisory locks;
    the scheduler's leader lock has its own connection), so the default reset, one more round
    trip (`RESET ALL; UNLISTEN *; ...`) per release, was a sixth of the API's CPU per send.
    """


async def open_database(dsn: str, *, min_size: int = 1, max_size: int = 10, wait_for_flush: bool = True) -> None:
    """Point the engine at `dsn` and start its connection pool.

    Without asyncpg's idle-connection timers: such a timer, set whenever a connection goes back
    to the pool, keeps the context of the request it served (e.g. a snapshot chunk) alive until it
    would have fired, 300 s later, even once cancelled; storing a large snapshot held up to a
    hundred chunks in memory that way. And without a session reset on release (`keep_session`).

    With `wait_for_flush=False` the pool's commits do not wait for their WAL to reach the disk
    (`synchronous_commit = off`): PostgreSQL flushes it within a fraction of a second, and a
    crash of PostgreSQL meanwhile loses the last commits, never part of one. For a service
    whose writes may be lost that way; what must not be runs in a `flushed_transaction`.
    """
    DB.config = {"dsn": dsn}
    await DB.start_connection_pool(
        min_size=min_size,
        max_size=max_size,
        max_inactive_connection_lifetime=0,
        reset=keep_session,
        server_settings={} if wait_for_flush else {"synchronous_commit": "off"},
    )


@asynccontextmanager
async def flushed_transaction() -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection in a transaction whose commit waits for its WAL flush, whatever the pool does."""
    assert DB.pool is not None, "open_database() first"
    async with DB.pool.acquire() as connection, connection.transaction():
        await connection.execute("SET LOCAL synchronous_commit = on")
        yield connection


async def close_database() -> None:
    """Close the connection pool (safe to call twice)."""
    if DB.pool is not None:
        await DB.close_connection_pool()


async def fetch(sql: str, *args: Any) -> list[Any]:
    """Run one SQL statement (`$1` placeholders) on a pooled connection, in its own transaction; its rows.

    For hot paths: plain asyncpg, without Piccolo's query building.
    """
    assert DB.pool is not None, "open_database() first"
    async with DB.pool.acquire() as connection:
        return list(await connection.fetch(sql, *args))
