"""Per-instance send rate limit: a token bucket in PostgreSQL, shared by every API process.

One statement reads what a send needs (the instance, its node, the tenant's rate) and
spends a token when one is free. The sends an API process has waiting meanwhile share
that statement (`wgs_kit.coalescing`): per instance it asks for as many tokens as there
are sends and grants what the bucket holds, so the limit holds exactly however the sends
are batched or spread over processes (the bucket row is locked while it is updated).
It also asks for the tokens the rate refills in a lease's time: the spare ones it gets
serve the instance's next sends in this process without a statement (`leases`).
"""

from collections import Counter

from wgs_db.engine import fetch
from wgs_kit.coalescing import Coalescer

from wgs_api.domain.messaging.leases import LEASES, SendContext, SendKey

CONTEXTS_AND_TOKENS = """
WITH wanted AS (
    SELECT instance_id, tenant_id, count(*)::int AS wanted, max(lease_seconds) AS lease_seconds
    FROM unnest($1::int[], $2::int[], $3::float8[]) AS r(instance_id, tenant_id, lease_seconds)
    GROUP BY instance_id, tenant_id
), ctx AS (
    SELECT i.id, i.tenant_id, i.status, i.desired_state, n.name AS node,
           w.wanted + LEAST(floor(t.send_rate_per_second * w.lease_seconds), t.send_burst / 2)::int AS asked,
           t.send_rate_per_second AS rate, t.send_burst AS burst
    FROM wanted w
    JOIN instances i ON i.id = w.instance_id AND i.tenant_id = w.tenant_id
    JOIN tenants t ON t.id = i.tenant_id
    LEFT JOIN nodes n ON n.id = i.node_id
), taken AS (
    INSERT INTO rate_buckets AS b (instance_id, tokens, updated_at, granted)
    SELECT id, burst - LEAST(asked, burst), clock_timestamp(), LEAST(asked, burst)
    FROM ctx WHERE desired_state = 'running'
    ON CONFLICT (instance_id) DO UPDATE SET (tokens, granted, updated_at) = (
        SELECT a.available - floor(LEAST(c.asked, a.available)), floor(LEAST(c.asked, a.available)),
               clock_timestamp()
        FROM ctx c,
             LATERAL (SELECT LEAST(c.burst::double precision,
                                   b.tokens + EXTRACT(EPOCH FROM clock_timestamp() - b.updated_at) * c.rate)
                      AS available) a
        WHERE c.id = b.instance_id
    )
    RETURNING instance_id, tokens, granted
)
SELECT ctx.id, ctx.tenant_id, ctx.status, ctx.desired_state, ctx.node, ctx.rate,
       taken.tokens, coalesce(taken.granted, 0) AS granted
FROM ctx LEFT JOIN taken ON taken.instance_id = ctx.id
"""


async def take_send_contexts(sends: list[SendKey]) -> list[SendContext | None]:
    """For each (instance id, tenant id), in order: its context with a token spent, or None if not found.

    Sends of one instance are served in order: the first as many as the bucket granted pass,
    the others get the time until the token each of them would need is free. Tokens granted
    beyond the sends are leased to the instance's next sends (`LEASES`).
    """
    lease_seconds = [LEASES.seconds_to_ask(i) for i, _ in sends]
    rows = await fetch(CONTEXTS_AND_TOKENS, [i for i, _ in sends], [t for _, t in sends], lease_seconds)
    by_key = {(row["id"], row["tenant_id"]): row for row in rows}
    served: Counter[SendKey] = Counter()
    contexts: list[SendContext | None] = []
    for key in sends:
        row = by_key.get(key)
        if row is None:
            contexts.append(None)
            continue
        position = served[key]
        served[key] += 1
        retry_after = None
        if row["desired_state"] == "running" and position >= row["granted"]:
            missing = position - row["granted"] + 1 - row["tokens"]
            retry_after = max(missing / row["rate"], 0.0)
        contexts.append(
            SendContext(
                status=row["status"],
                desired_state=row["desired_state"],
                node=row["node"],
                rate_per_second=row["rate"],
                retry_after=retry_after,
            )
        )
    for key, sent in served.items():
        row = by_key[key]
        if row["desired_state"] == "running":
            spare = int(row["granted"]) - sent
            LEASES.grant(key, SendContext(row["status"], row["desired_state"], row["node"], row["rate"], None), spare)
    return contexts


_contexts: Coalescer[SendKey, SendContext | None] = Coalescer(take_send_contexts, alone_on_error=True)


async def send_context(instance_id: int, tenant_id: int) -> SendContext | None:
    """The tenant's instance with a token spent from its bucket (when it is not being deleted); None if not found.

    A leased token and context when this process holds one for the instance, else the statement.
    """
    key = (instance_id, tenant_id)
    return LEASES.take(key) or await _contexts.submit(key)
