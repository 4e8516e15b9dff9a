"""Retention: deleting what a tenant's retention period no longer covers (the scheduler leader runs it).

A tenant keeps, for `tenants.retention_days` (default 30, 1-3650) after they were created:

- its sent messages, with their status histories and their idempotency keys (so a key is
  honoured as long as its message is kept);
- its finished webhook deliveries (delivered or dead), with their attempts. An open delivery
  (pending or sending) is kept whatever its age: it still has work to do.

A message's status that no message row holds ("unclaimed": a message sent from the phone itself,
one whose record failed, or one already deleted) belongs to no tenant and is never shown; it is
deleted once `unclaimed_grace_seconds` old (an hour by default), unless its message was recorded
meanwhile (a status may be recorded a moment before its message): then it is kept, as claimed.

A rotated-out webhook secret whose grace is over no longer signs; it is erased.

`sweep` deletes a batch at a time, one statement each (its locks held for one batch only),
until nothing expired is left or the kind's time budget is spent; the next sweep goes on
from there. Each batch takes the oldest rows of every tenant through an index, not a scan.
"""

import time
from dataclasses import dataclass

from wgs_db.engine import fetch

# A message's statuses go with it (a trigger on `messages`, migration 0009); its key goes here.
EXPIRED_MESSAGES = """
WITH expired AS (
    SELECT m.id FROM tenants t CROSS JOIN LATERAL (
        SELECT id FROM messages
         WHERE tenant_id = t.id AND created_at < now() - make_interval(days => t.retention_days)
         ORDER BY created_at LIMIT $1
    ) m
    LIMIT $1
),
dropped_keys AS (DELETE FROM send_keys WHERE message_id IN (SELECT id FROM expired)),
dropped AS (DELETE FROM messages WHERE id IN (SELECT id FROM expired) RETURNING id)
SELECT count(*), count(*) FROM dropped
"""

# The DELETE checks the status again: a dead delivery redelivered meanwhile is open again, and kept.
EXPIRED_DELIVERIES = """
WITH expired AS (
    SELECT d.id FROM tenants t JOIN webhook_endpoints e ON e.tenant_id = t.id CROSS JOIN LATERAL (
        SELECT id FROM webhook_deliveries
         WHERE endpoint_id = e.id AND status IN ('delivered', 'dead')
           AND created_at < now() - make_interval(days => t.retention_days)
         ORDER BY created_at LIMIT $1
    ) d
    LIMIT $1
),
dropped AS (
    DELETE FROM webhook_deliveries
     WHERE id IN (SELECT id FROM expired) AND status IN ('delivered', 'dead')
    RETURNING id
)
SELECT count(*), count(*) FROM dropped
"""

# Unclaimed statuses past their grace, oldest first (a partial index holds only those): the ones
# whose message was recorded after them are claimed, the others deleted. `OFFSET 0` keeps the
# check one index probe per candidate (without it, a hash of the whole `messages` table may be planned).
UNCLAIMED_STATUSES = """
WITH candidates AS (
    SELECT s.message_id, s.status, EXISTS (SELECT 1 FROM messages m WHERE m.id = s.message_id OFFSET 0) AS claimed
      FROM message_statuses s
     WHERE s.unclaimed AND s.at < now() - make_interval(secs => $2)
     ORDER BY s.at LIMIT $1
),
claimed AS (
    UPDATE message_statuses s SET unclaimed = false
      FROM candidates c
     WHERE c.claimed AND s.message_id = c.message_id AND s.status = c.status
),
dropped AS (
    DELETE FROM message_statuses s
     USING candidates c
     WHERE NOT c.claimed AND s.message_id = c.message_id AND s.status = c.status
    RETURNING 1
)
SELECT (SELECT count(*) FROM candidates), (SELECT count(*) FROM dropped)
"""


# Few rows (endpoints are capped per scope, and few are being rotated): one statement.
EXPIRED_SECRETS = """
WITH erased AS (
    UPDATE webhook_endpoints SET previous_secret = NULL, previous_secret_expires_at = NULL
     WHERE previous_secret_expires_at <= now()
    RETURNING 1
)
SELECT count(*) FROM erased
"""


@dataclass(frozen=True)
class Swept:
    """How many rows one sweep deleted (statuses, keys and attempts that went with their row uncounted),
    and how many expired webhook secrets it erased."""

    messages: int
    deliveries: int
    unclaimed_statuses: int
    expired_secrets: int


async def sweep(*, batch: int = 1000, budget_seconds: float = 30.0, unclaimed_grace_seconds: float = 3600.0) -> Swept:
    """Delete expired messages, expired finished deliveries, then unclaimed statuses past their
    grace: for each kind at least one batch, then more while some were left and its
    `budget_seconds` last; then erase the rotated-out webhook secrets past their grace."""
    return Swept(
        messages=await _delete_in_batches(EXPIRED_MESSAGES, batch, budget_seconds),
        deliveries=await _delete_in_batches(EXPIRED_DELIVERIES, batch, budget_seconds),
        unclaimed_statuses=await _delete_in_batches(UNCLAIMED_STATUSES, batch, budget_seconds, unclaimed_grace_seconds),
        expired_secrets=int((await fetch(EXPIRED_SECRETS))[0][0]),
    )


async def _delete_in_batches(statement: str, batch: int, budget_seconds: float, *args: object) -> int:
    """Run `statement` (-> rows looked at, rows deleted) until a batch finds fewer than `batch`
    rows or the budget is spent; the rows deleted in all."""
    deadline = time.monotonic() + budget_seconds
    deleted = 0
    while True:
        looked_at, dropped = (await fetch(statement, batch, *args))[0]
        deleted += int(dropped)
        if looked_at < batch or time.monotonic() >= deadline:
            return deleted
