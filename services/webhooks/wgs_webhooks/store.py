"""The webhooks service's queries: fan-out of events into deliveries, claiming due ones, recording attempts.

Claiming follows each endpoint's queue: only an endpoint's oldest open delivery
(pending or sending) can be claimed, so an endpoint receives one delivery at a
time in creation order, while endpoints progress independently. A claim is a
lease (`sending` until `lease_until`): if its worker dies, another process takes
the delivery over when the lease expires. `FOR UPDATE SKIP LOCKED` lets several
webhooks processes claim side by side.
"""

from dataclasses import dataclass
from datetime import datetime

from wgs_db.tables import WebhookDelivery, WebhookEndpoint

# An endpoint receives the events that happened after it was created (a minute of clock skew allowed).
FAN_OUT = """
INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, payload)
SELECT e.id, {}, {}, {}
  FROM webhook_endpoints e
 WHERE e.tenant_id = {} AND (e.instance_id = {} OR e.instance_id IS NULL) AND e.enabled
   AND ({} = ANY (e.events) OR '*' = ANY (e.events))
   AND e.created_at <= {}::timestamptz + interval '1 minute'
 ORDER BY e.id
ON CONFLICT (endpoint_id, event_id) DO NOTHING
RETURNING id
"""

# The oldest open delivery of every endpoint (a loose index scan of webhook_deliveries_open_idx),
# claimed when it is due, or when the worker that claimed it lost its lease.
CLAIM = """
WITH RECURSIVE heads AS (
    (SELECT endpoint_id, id FROM webhook_deliveries
      WHERE status IN ('pending', 'sending') ORDER BY endpoint_id, id LIMIT 1)
    UNION ALL
    SELECT next.endpoint_id, next.id
      FROM heads, LATERAL (
           SELECT endpoint_id, id FROM webhook_deliveries
            WHERE status IN ('pending', 'sending') AND endpoint_id > heads.endpoint_id
            ORDER BY endpoint_id, id LIMIT 1) next
), due AS (
    SELECT d.id
      FROM heads
      JOIN webhook_deliveries d ON d.id = heads.id
      JOIN webhook_endpoints e ON e.id = d.endpoint_id
     WHERE e.enabled
       AND ((d.status = 'pending' AND d.next_attempt_at <= now())
            OR (d.status = 'sending' AND d.lease_until < now()))
     ORDER BY d.next_attempt_at
     LIMIT {}
       FOR UPDATE OF d SKIP LOCKED
), claimed AS (
    UPDATE webhook_deliveries d
       SET status = 'sending', attempts = d.attempts + 1, lease_until = now() + make_interval(secs => {})
      FROM due
     WHERE d.id = due.id
 RETURNING d.id, d.endpoint_id, d.event_id, d.payload, d.attempts, d.retry_base
), abandoned AS (
    UPDATE webhook_attempts a
       SET error = 'abandoned: the worker stopped before an answer'
      FROM claimed
     WHERE a.delivery_id = claimed.id AND a.latency_ms IS NULL AND a.error IS NULL
), started AS (
    INSERT INTO webhook_attempts (delivery_id, attempt) SELECT id, attempts FROM claimed
)
SELECT c.id, c.endpoint_id, c.event_id, c.payload, c.attempts, c.retry_base, e.url, e.secret
  FROM claimed c
  JOIN webhook_endpoints e ON e.id = c.endpoint_id
"""

# The attempt is recorded whatever happened; the delivery only while this worker still holds it.
FINISH = """
WITH attempt AS (
    UPDATE webhook_attempts SET status_code = {}, error = {}, latency_ms = {}
     WHERE delivery_id = {} AND attempt = {}
)
UPDATE webhook_deliveries
   SET status = {}, next_attempt_at = now() + make_interval(secs => {}), lease_until = NULL,
       last_status_code = {}, last_error = {}, last_latency_ms = {},
       delivered_at = CASE WHEN {} THEN now() END
 WHERE id = {} AND status = 'sending' AND attempts = {}
"""


@dataclass(frozen=True, kw_only=True)
class Claim:
    """A delivery this worker may send now: its attempt number and where to send it."""

    id: int
    endpoint_id: int
    event_id: str
    payload: str
    attempt: int
    retry_base: int
    url: str
    secret: str

    @property
    def tries(self) -> int:
        """Attempts since the delivery was created or last redelivered, this one included."""
        return self.attempt - self.retry_base


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """How an attempt ended and what becomes of its delivery."""

    status: str  # delivered, pending (retry after `delay_seconds`) or dead
    status_code: int | None
    error: str | None
    latency_ms: int
    delay_seconds: float = 0.0


async def fan_out(
    *, event_id: str, event_type: str, tenant_id: int, instance_id: int, at: datetime, payload: str
) -> int:
    """One delivery per matching enabled endpoint (idempotent); the number created now."""
    await WebhookEndpoint.adopt_instance_webhook(instance_id)
    rows = await WebhookDelivery.raw(FAN_OUT, event_id, event_type, payload, tenant_id, instance_id, event_type, at)
    return len(rows)


async def claim(limit: int, lease_seconds: float) -> list[Claim]:
    """Lease up to `limit` due deliveries, at most one per endpoint, and open their attempt records."""
    rows = await WebhookDelivery.raw(CLAIM, limit, lease_seconds)
    return [
        Claim(
            id=r["id"],
            endpoint_id=r["endpoint_id"],
            event_id=r["event_id"],
            payload=r["payload"],
            attempt=r["attempts"],
            retry_base=r["retry_base"],
            url=r["url"],
            secret=r["secret"],
        )
        for r in rows
    ]


async def finish(claim: Claim, outcome: Outcome) -> None:
    """Record the attempt and move the delivery on (unless its lease was lost meanwhile)."""
    await WebhookDelivery.raw(
        FINISH,
        outcome.status_code,
        outcome.error,
        outcome.latency_ms,
        claim.id,
        claim.attempt,
        outcome.status,
        outcome.delay_seconds,
        outcome.status_code,
        outcome.error,
        outcome.latency_ms,
        outcome.status == "delivered",
        claim.id,
        claim.attempt,
    )
