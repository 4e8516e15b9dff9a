"""`wgs-migrate` on a real PostgreSQL: transactional files, and no-transaction files that build indexes
concurrently (applied statement by statement, recorded once all ran, safe to apply again)."""

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from wgs_db.migrate import NO_TRANSACTION, migrate_database, statements


@pytest.fixture
async def scratch_database(migrated: dict[str, str]) -> AsyncIterator[str]:
    """The DSN of a new, empty database on the test server; dropped afterwards."""
    dsn = migrated["DATABASE_URL"]
    name = f"scratch_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield dsn.rsplit("/", 1)[0] + "/" + name
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


CONCURRENT = f"""{NO_TRANSACTION}
-- an index built while the table is written to
DROP INDEX CONCURRENTLY IF EXISTS t_idx;
CREATE INDEX CONCURRENTLY t_idx ON t (id)
    WHERE id > 0;
"""


def test_a_no_transaction_file_is_split_into_its_statements() -> None:
    assert statements(CONCURRENT) == [
        "DROP INDEX CONCURRENTLY IF EXISTS t_idx",
        "CREATE INDEX CONCURRENTLY t_idx ON t (id)\n    WHERE id > 0",
    ]


async def test_a_no_transaction_file_builds_its_index_concurrently_once(scratch_database: str) -> None:
    files = [("0001_table.sql", "CREATE TABLE t (id int);"), ("0002_index.sql", CONCURRENT)]
    assert await migrate_database(scratch_database, files) == ["0001_table.sql", "0002_index.sql"]
    assert await migrate_database(scratch_database, files) == []  # recorded: not applied again

    refused = [("0003_in_a_transaction.sql", "CREATE INDEX CONCURRENTLY t2_idx ON t (id);")]
    with pytest.raises(asyncpg.ActiveSQLTransactionError):  # why the marker exists
        await migrate_database(scratch_database, refused)
    connection = await asyncpg.connect(scratch_database)
    try:
        assert await connection.fetchval("SELECT indisvalid FROM pg_index WHERE indexrelid = 't_idx'::regclass")
        recorded = await connection.fetch("SELECT name FROM schema_migrations ORDER BY name")
        assert [row["name"] for row in recorded] == ["0001_table.sql", "0002_index.sql"]
        # Applying the file again (as after a failure before it was recorded) rebuilds the index.
        await connection.execute("DELETE FROM schema_migrations WHERE name = '0002_index.sql'")
    finally:
        await connection.close()
    assert await migrate_database(scratch_database, files) == ["0002_index.sql"]


async def test_the_shipped_concurrent_indexes_are_valid_and_replace_the_old_one(db) -> None:
    rows = await db.fetch(
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = ANY($1::text[])",
        [
            "webhook_deliveries_due_idx",
            "webhook_deliveries_sending_idx",
            "messages_instance_created_idx",
            "messages_instance_idx",
        ],
    )
    assert {row["relname"]: row["indisvalid"] for row in rows} == {
        "webhook_deliveries_due_idx": True,
        "webhook_deliveries_sending_idx": True,
        "messages_instance_created_idx": True,
    }
