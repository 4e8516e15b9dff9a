"""`bench.send`'s count of PostgreSQL write transactions (real PostgreSQL): every transaction that
wrote something counts at once, including one of a backend still connected; reads do not."""

import asyncpg

from bench.send import write_transactions


async def test_writes_count_at_once_and_reads_do_not(migrated: dict[str, str]) -> None:
    dsn = migrated["DATABASE_URL"]
    connection = await asyncpg.connect(dsn)
    await connection.execute("CREATE TEMPORARY TABLE counted (n int)")
    try:
        before = await write_transactions(dsn)
        for n in range(20):
            await connection.execute("INSERT INTO counted VALUES ($1)", n)
        writes = await write_transactions(dsn)
        for _ in range(20):
            await connection.execute("SELECT 1")
        reads = await write_transactions(dsn)
    finally:
        await connection.close()
    assert writes - before >= 20
    assert reads - writes < 20  # only other services' writes meanwhile, if any
