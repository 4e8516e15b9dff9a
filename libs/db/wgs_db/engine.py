"""The Piccolo engine every table is bound to; services open its pool in their lifespan."""

from piccolo.engine.postgres import PostgresEngine

DB = PostgresEngine(config={})


async def open_database(dsn: str, *, min_size: int = 1, max_size: int = 10) -> None:
    """Point the engine at `dsn` and start its connection pool."""
    DB.config = {"dsn": dsn}
    await DB.start_connection_pool(min_size=min_size, max_size=max_size)


async def close_database() -> None:
    """Close the connection pool (safe to call twice)."""
    if DB.pool is not None:
        await DB.close_connection_pool()
