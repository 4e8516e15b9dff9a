"""Per-instance send rate limit: a token bucket in PostgreSQL, shared by every API process.

One statement reads what a send needs (the instance, its node, the tenant's rate) and
spends a token when one is free, so a send costs a single round trip before the relay.
"""

from dataclasses import dataclass

from wgs_db.engine import fetch

CONTEXT_AND_TOKEN = """
WITH ctx AS (
    SELECT i.id, i.status, i.desired_state, n.name AS node,
           t.send_rate_per_second AS rate, t.send_burst AS burst
    FROM instances i JOIN tenants t ON t.id = i.tenant_id LEFT JOIN nodes n ON n.id = i.node_id
    WHERE i.id = $1 AND i.tenant_id = $2
), taken AS (
    INSERT INTO rate_buckets AS b (instance_id, tokens, updated_at)
    SELECT id, burst - 1, clock_timestamp() FROM ctx WHERE desired_state = 'running'
    ON CONFLICT (instance_id) DO UPDATE SET
        tokens = LEAST(excluded.tokens + 1,
                       b.tokens + EXTRACT(EPOCH FROM clock_timestamp() - b.updated_at) * (SELECT rate FROM ctx)) - 1,
        updated_at = clock_timestamp()
    WHERE LEAST(excluded.tokens + 1,
                b.tokens + EXTRACT(EPOCH FROM clock_timestamp() - b.updated_at) * (SELECT rate FROM ctx)) >= 1
    RETURNING tokens
)
SELECT ctx.*, EXISTS (SELECT 1 FROM taken) AS allowed,
       (SELECT LEAST(ctx.burst, r.tokens + EXTRACT(EPOCH FROM clock_timestamp() - r.updated_at) * ctx.rate)
          FROM rate_buckets r WHERE r.instance_id = ctx.id) AS tokens
FROM ctx
"""


@dataclass(frozen=True)
class SendContext:
    """What a send needs to know about its instance, and whether the rate limit let it through."""

    status: str
    desired_state: str
    node: str | None
    rate_per_second: float
    retry_after: float | None  # None: a token was spent; else seconds until one is free


async def send_context(instance_id: int, tenant_id: int) -> SendContext | None:
    """The tenant's instance with a token spent from its bucket (when it is not being deleted); None if not found."""
    rows = await fetch(CONTEXT_AND_TOKEN, instance_id, tenant_id)
    if not rows:
        return None
    row = rows[0]
    retry_after = None
    if not row["allowed"]:
        tokens = row["tokens"] if row["tokens"] is not None else 0.0
        retry_after = max((1 - tokens) / row["rate"], 0.0)
    return SendContext(
        status=row["status"],
        desired_state=row["desired_state"],
        node=row["node"],
        rate_per_second=row["rate"],
        retry_after=retry_after,
    )
