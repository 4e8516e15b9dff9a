"""The webhooks service's queries: fan-out of events into deliveries, claiming due ones, recording attempts.

Claiming follows each endpoint's queue: an endpoint's next delivery is the one
being sent, if any (claimable only once its lease expired), else its oldest open
one, so an endpoint receives one delivery at a time in creation order (also when
a redelivery put an older one back), while endpoints progress independently. An
unordered endpoint (`ordered` false) also receives one delivery at a time, but its
next one is its earliest due: a delivery waiting for a retry holds back none of the
newer ones (decision 49). A claim is a lease (`sending` until `lease_until`): if
its worker dies, another process takes the delivery over when the lease expires.
A claim also says how long ago the delivery's retry period began (`retry_since`:
its creation or last redelivery), which bounds its retries (`wgs_webhooks.retry`).
`FOR UPDATE SKIP LOCKED` lets several webhooks processes claim side by side. A tenant's
deliveries are claimed only while it has fewer attempts in flight, in all processes together, than
its share of the worker slots (`WGS_WEBHOOKS_TENANT_CONCURRENCY`): one tenant's slow endpoints cannot
take every slot from the others (decision 67).

Every function is one transaction: a batch of events is fanned out by one
multi-row INSERT; attempts that ended together are recorded by one statement, which
also claims each endpoint's next delivery when it is due, so busy endpoints cost a
fraction of a statement per delivery.

Only the fan-out waits for its WAL flush: its deliveries must be on disk before the
events are acked. The service's pool commits claims and attempts without waiting
(decision 45): a crash of PostgreSQL can lose the last of those, and then a delivery
is sent again (at least once, with its `webhook-id`), never lost.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from wgs_db.engine import fetch, flushed_transaction

# The batch form of WebhookEndpoint.adopt_instance_webhook: the instances' legacy `webhook_url`
# get their endpoint row (filter `*`, generated secret) once; the NOT EXISTS spares the sequence
# and the secret generation when it is there already (the usual case).
ADOPT = """
INSERT INTO webhook_endpoints (tenant_id, instance_id, url, legacy, description, created_at)
SELECT i.tenant_id, i.id, i.webhook_url, true, 'the webhook field of the instance', i.created_at
  FROM instances i
 WHERE i.id = ANY ($1::int[]) AND i.webhook_url IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM webhook_endpoints l WHERE l.instance_id = i.id AND l.legacy)
ON CONFLICT (instance_id) WHERE legacy DO NOTHING
"""

# One delivery per (event, matching enabled endpoint), created in stream order (the events' order in
# the arrays, then endpoint id): ids are drawn in the ORDER BY's order, and an endpoint's queue is its
# deliveries by id. An endpoint receives the events that happened after it was created (a minute of
# clock skew allowed). A repeated event (redelivered by NATS) creates nothing.
FAN_OUT = """
WITH ev AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::timestamptz[], $6::text[])
           WITH ORDINALITY AS ev(event_id, event_type, tenant_id, instance_id, at, payload, n)
)
INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, payload)
SELECT e.id, ev.event_id, ev.event_type, ev.payload
  FROM ev
  JOIN webhook_endpoints e
    ON e.tenant_id = ev.tenant_id AND (e.instance_id = ev.instance_id OR e.instance_id IS NULL) AND e.enabled
   AND (ev.event_type = ANY (e.events) OR '*' = ANY (e.events))
   AND e.created_at <= ev.at + interval '1 minute'
 ORDER BY ev.n, e.id
ON CONFLICT (endpoint_id, event_id) DO NOTHING
RETURNING id
"""

# Taking a claimed row: attempt number, lease, the start of its retry period (at the first claim since
# its creation or redelivery: the `next_attempt_at` these set), the open attempt record (an earlier one
# its worker never finished is marked abandoned), and where to send it. Appended to the queries choosing
# `due` rows.
_TAKE = """
, claimed AS (
    UPDATE webhook_deliveries d
       SET status = 'sending', attempts = d.attempts + 1, lease_until = now() + make_interval(secs => $LEASE),
           retry_since = CASE WHEN d.attempts = d.retry_base THEN d.next_attempt_at
                              ELSE coalesce(d.retry_since, now()) END
      FROM due
     WHERE d.id = due.id
 RETURNING d.id, d.endpoint_id, d.event_id, d.payload, d.attempts, d.retry_base, due.prev,
           extract(epoch FROM now() - d.retry_since)::float8 AS waited
), abandoned AS (
    UPDATE webhook_attempts a
       SET error = 'abandoned: the worker stopped before an answer'
      FROM claimed
     WHERE a.delivery_id = claimed.id AND a.latency_ms IS NULL AND a.error IS NULL
), started AS (
    INSERT INTO webhook_attempts (delivery_id, attempt) SELECT id, attempts FROM claimed
)
SELECT c.id, c.endpoint_id, c.event_id, c.payload, c.attempts, c.retry_base, c.prev, c.waited, e.url, e.secret,
       CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END AS previous_secret,
       e.headers::text AS headers
  FROM claimed c
  JOIN webhook_endpoints e ON e.id = c.endpoint_id
"""

# A head is claimable when it is due, or when the worker that claimed it lost its lease (`_CLAIMABLE`,
# also checked again on the locked row), and its endpoint is enabled.
_CLAIMABLE = """((d.status = 'pending' AND d.next_attempt_at <= now())
        OR (d.status = 'sending' AND d.lease_until < now()))"""
_DUE = f"""
       e.enabled
   AND {_CLAIMABLE}
"""


def _next(endpoint: str, oldest: str, passed_over: str = "") -> str:
    """The SQL of an endpoint's next delivery: the one being sent, if any (its lease may have expired;
    `passed_over` leaves out those a statement is settling), else `oldest` (its oldest open one) for an
    ordered endpoint, its earliest due pending one for an unordered one. `_DUE` then decides whether it
    can be claimed now: never while another is sent, even one older than a redelivered head."""
    return f"""coalesce(
        (SELECT s.id FROM webhook_deliveries s
          WHERE s.endpoint_id = {endpoint} AND s.status = 'sending' {passed_over} ORDER BY s.id LIMIT 1),
        CASE WHEN e.ordered THEN {oldest} ELSE
        (SELECT p.id FROM webhook_deliveries p
          WHERE p.endpoint_id = {endpoint} AND p.status = 'pending' ORDER BY p.next_attempt_at, p.id LIMIT 1)
        END)"""


# Every endpoint with open deliveries (a loose index scan of webhook_deliveries_open_idx, which also
# gives its oldest), and its next delivery (`_next`), a candidate when due; up to $1 candidates (one per
# endpoint, the longest due first) are claimed for $2 seconds, and of each tenant at most $3 minus its
# attempts in flight (decision 67). Those are its deliveries `sending` under a live lease, in whichever
# process: counted once per statement from webhook_deliveries_sending_idx, which holds only the attempts
# in flight of all tenants (at most the worker slots of every process, plus lapsed leases). PostgreSQL
# allows no window function in a query level with FOR UPDATE: the candidates are ranked in their tenant
# first, then locked (SKIP LOCKED) and checked again as they are now (`_CLAIMABLE`).
CLAIM = (
    """
WITH RECURSIVE heads AS (
    (SELECT endpoint_id, id FROM webhook_deliveries
      WHERE status IN ('pending', 'sending') ORDER BY endpoint_id, id LIMIT 1)
    UNION ALL
    SELECT next.endpoint_id, next.id
      FROM heads, LATERAL (
           SELECT endpoint_id, id FROM webhook_deliveries
            WHERE status IN ('pending', 'sending') AND endpoint_id > heads.endpoint_id
            ORDER BY endpoint_id, id LIMIT 1) next
), candidates AS (
    SELECT d.id, d.next_attempt_at, e.tenant_id,
           row_number() OVER (PARTITION BY e.tenant_id ORDER BY d.next_attempt_at, d.id) AS nth
      FROM heads
      JOIN webhook_endpoints e ON e.id = heads.endpoint_id
      JOIN webhook_deliveries d ON d.id = """
    + _next("heads.endpoint_id", "heads.id")
    + """
     WHERE"""
    + _DUE
    + """), in_flight AS MATERIALIZED (
    SELECT e.tenant_id, count(*) AS n
      FROM webhook_deliveries s
      JOIN webhook_endpoints e ON e.id = s.endpoint_id
     WHERE s.status = 'sending' AND s.lease_until >= now()
     GROUP BY e.tenant_id
), due AS (
    SELECT d.id, NULL::bigint AS prev
      FROM candidates c
      LEFT JOIN in_flight f ON f.tenant_id = c.tenant_id
      JOIN webhook_deliveries d ON d.id = c.id
     WHERE c.nth <= $3 - coalesce(f.n, 0) AND """
    + _CLAIMABLE
    + """
     ORDER BY c.next_attempt_at
     LIMIT $1
       FOR UPDATE OF d SKIP LOCKED
)"""
    + _TAKE.replace("$LEASE", "$2")
)

# Attempts of several workers recorded at once (one row per attempt in the arrays). Each attempt is
# recorded whatever happened; its delivery only while this worker still holds it. When that settled the
# delivery (delivered or dead; for an unordered endpoint, also put back for a retry) and the worker asked
# for it, the endpoint's next delivery (its new head: the statement's snapshot still shows the finished
# ones as they were, hence `NOT IN done`) is claimed in the same statement when due, for $9 seconds;
# `prev` says whose follower it is. The follower takes its predecessor's worker slot, and its place in
# the tenant's attempts in flight: it needs no room of the tenant's (CLAIM).
FINISH = (
    """
WITH input AS (
    SELECT * FROM unnest($1::int[], $2::text[], $3::int[], $4::bigint[], $5::int[], $6::text[], $7::float8[],
                         $8::bool[])
           AS i(status_code, error, latency_ms, delivery_id, attempt, status, delay, claim_next)
), attempt AS (
    UPDATE webhook_attempts a SET status_code = i.status_code, error = i.error, latency_ms = i.latency_ms
      FROM input i
     WHERE a.delivery_id = i.delivery_id AND a.attempt = i.attempt
), done AS (
    UPDATE webhook_deliveries d
       SET status = i.status, next_attempt_at = now() + make_interval(secs => i.delay), lease_until = NULL,
           last_status_code = i.status_code, last_error = i.error, last_latency_ms = i.latency_ms,
           delivered_at = CASE WHEN i.status = 'delivered' THEN now() END
      FROM input i
     WHERE d.id = i.delivery_id AND d.status = 'sending' AND d.attempts = i.attempt
 RETURNING d.id, d.endpoint_id, d.status, i.claim_next
), head AS (
    SELECT """
    + _next(
        "done.endpoint_id",
        """(SELECT id FROM webhook_deliveries
             WHERE endpoint_id = done.endpoint_id AND status IN ('pending', 'sending')
               AND id NOT IN (SELECT id FROM done)
             ORDER BY endpoint_id, id LIMIT 1)""",
        "AND s.id NOT IN (SELECT id FROM done)",
    )
    + """ AS id,
           done.id AS prev
      FROM done
      JOIN webhook_endpoints e ON e.id = done.endpoint_id
     WHERE done.claim_next AND (done.status IN ('delivered', 'dead') OR NOT e.ordered)
), due AS (
    SELECT d.id, head.prev
      FROM head
      JOIN webhook_deliveries d ON d.id = head.id
      JOIN webhook_endpoints e ON e.id = d.endpoint_id
     WHERE"""
    + _DUE
    + """
       FOR UPDATE OF d SKIP LOCKED
)"""
    + _TAKE.replace("$LEASE", "$9")
)


@dataclass(frozen=True, kw_only=True)
class Event:
    """What fan-out needs of one event: who it is for and its frozen body."""

    event_id: str
    event_type: str
    tenant_id: int
    instance_id: int
    at: datetime
    payload: str


@dataclass(frozen=True, kw_only=True)
class Claim:
    """A delivery this worker may send now: its attempt number and where to send it."""

    id: int
    endpoint_id: int
    event_id: str
    payload: str
    attempt: int
    retry_base: int
    waited: float  # seconds from the start of its retry period (creation or redelivery) to this claim
    url: str
    secret: str
    previous_secret: str | None  # a rotated-out secret in its grace period: it signs too
    headers: dict[str, str]  # the tenant's own, sent beside the signature headers

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


async def fan_out(events: Sequence[Event]) -> int:
    """One delivery per event and matching enabled endpoint, in the events' order (idempotent);
    the number created now. Two statements whatever the number of events, committed once flushed."""
    if not events:
        return 0
    async with flushed_transaction() as connection:
        await connection.execute(ADOPT, sorted({e.instance_id for e in events}))
        rows = await connection.fetch(
            FAN_OUT,
            [e.event_id for e in events],
            [e.event_type for e in events],
            [e.tenant_id for e in events],
            [e.instance_id for e in events],
            [e.at for e in events],
            [e.payload for e in events],
        )
    return len(rows)


def _claims(rows: list[Any]) -> list[Claim]:
    return [
        Claim(
            id=r["id"],
            endpoint_id=r["endpoint_id"],
            event_id=r["event_id"],
            payload=r["payload"],
            attempt=r["attempts"],
            retry_base=r["retry_base"],
            waited=r["waited"],
            url=r["url"],
            secret=r["secret"],
            previous_secret=r["previous_secret"],
            headers=json.loads(r["headers"]),
        )
        for r in rows
    ]


async def claim(limit: int, lease_seconds: float, tenant_limit: int) -> list[Claim]:
    """Lease up to `limit` due deliveries, at most one per endpoint, and open their attempt records;
    a tenant's only while it has fewer than `tenant_limit` attempts in flight (in every process), so
    that its slow endpoints never hold more worker slots than that."""
    return _claims(await fetch(CLAIM, limit, lease_seconds, tenant_limit))


@dataclass(frozen=True, kw_only=True)
class Finished:
    """An attempt to record, and whether its worker wants the endpoint's next delivery."""

    claim: Claim
    outcome: Outcome
    claim_next: bool


async def finish(attempts: Sequence[Finished], lease_seconds: float) -> dict[int, Claim]:
    """Record the attempts and move their deliveries on (unless a lease was lost meanwhile), in one
    statement; for those with `claim_next`, also lease the endpoint's next delivery if the queue moved
    on and it is due. Returns those next deliveries by the id of the delivery they follow."""
    if not attempts:
        return {}
    rows = await fetch(
        FINISH,
        [a.outcome.status_code for a in attempts],
        [a.outcome.error for a in attempts],
        [a.outcome.latency_ms for a in attempts],
        [a.claim.id for a in attempts],
        [a.claim.attempt for a in attempts],
        [a.outcome.status for a in attempts],
        [a.outcome.delay_seconds for a in attempts],
        [a.claim_next for a in attempts],
        lease_seconds,
    )
    return {r["prev"]: claim for r, claim in zip(rows, _claims(rows), strict=True)}
