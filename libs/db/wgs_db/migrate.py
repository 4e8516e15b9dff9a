"""`wgs-migrate`: the one place that changes the schema and declares the JetStream streams.

Applies `migrations/NNNN_*.sql` in order, each in its own transaction, under a
PostgreSQL advisory lock so that concurrent runs serialize; records applied
files in `schema_migrations`. Then creates or updates the contract streams.

A file whose first line is `-- wgs-migrate: no-transaction` is applied one statement
at a time outside a transaction instead, so that it can build indexes with
`CREATE INDEX CONCURRENTLY` while the gateway keeps writing to the table. Its
statements each end with `;` at the end of a line (no function bodies), and the file
must be safe to apply again (drop an index before creating it: a build that failed
leaves an invalid index behind), since it is recorded only once all of them ran.
"""

import argparse
import asyncio
import logging
from importlib import resources

import asyncpg
import nats
from wgs_kit.env import env_str
from wgs_kit.logs import configure_logging
from wgs_kit.messaging import ensure_streams

log = logging.getLogger("wgs_db.migrate")
MIGRATION_LOCK_KEY = 0x5767_0001
NO_TRANSACTION = "-- wgs-migrate: no-transaction"


def migration_files() -> list[tuple[str, str]]:
    """(name, sql) of every migration shipped in the package, in order."""
    folder = resources.files("wgs_db") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name, f.read_text()) for f in files]


def statements(sql: str) -> list[str]:
    """The statements of a no-transaction migration: split after each `;` that ends a line,
    without the comment lines and blank lines around them."""
    found = []
    for chunk in sql.split(";\n"):
        lines = [line for line in chunk.splitlines() if line.strip() and not line.lstrip().startswith("--")]
        statement = "\n".join(lines).strip().removesuffix(";")
        if statement:
            found.append(statement)
    return found


async def migrate_database(dsn: str, files: list[tuple[str, str]] | None = None) -> list[str]:
    """Apply pending migrations (`files`: the package's by default); return the names applied now."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        applied = []
        for name, sql in migration_files() if files is None else files:
            if name in done:
                continue
            if sql.startswith(NO_TRANSACTION):
                for statement in statements(sql):
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            else:
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied.append(name)
            log.info("applied migration %s", name)
        return applied
    finally:
        await conn.close()


async def declare_streams(nats_url: str) -> list[str]:
    """Create or update the contract JetStream streams."""
    nc = await nats.connect(nats_url)
    try:
        return await ensure_streams(nc.jetstream())
    finally:
        await nc.close()


async def run(dsn: str, nats_url: str | None) -> None:
    """Migrate the database, then (when a NATS URL is given) declare the streams."""
    applied = await migrate_database(dsn)
    log.info("database up to date (%d applied now)", len(applied))
    if nats_url:
        log.info("streams declared: %s", ", ".join(await declare_streams(nats_url)))


def main() -> None:
    """Console entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-streams", action="store_true", help="do not touch NATS")
    args = parser.parse_args()
    configure_logging("migrate")
    nats_url = None if args.skip_streams else env_str("NATS_URL", "nats://127.0.0.1:4222")
    asyncio.run(run(env_str("DATABASE_URL"), nats_url))


if __name__ == "__main__":
    main()
