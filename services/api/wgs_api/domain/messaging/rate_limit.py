"""Per-instance send rate limit: a token bucket in PostgreSQL, shared by every API process.

One statement reads what a send needs (the instance, its node, the tenant's rate) and
spends a token when one is free. The sends an API process has waiting meanwhile share
that statement (`wgs_kit.coalescing`): per instance it asks for as many tokens as there
are sends and grants what the bucket holds, so the limit holds exactly however the sends
are batched or spread over processes (the bucket row is locked while it is updated).
It also asks for the tokens the rate refills in a lease's time: the spare ones it gets
serve the instance's next sends in this process without a statement (`leases`), and a lease
half used is renewed in the background by the same statement.
"""

import asyncio
import logging
from collections import Counter
from typing import NamedTuple

from wgs_db.engine import fetch
from wgs_kit.coalescing import Coalescer

from wgs_api.domain.messaging.leases import LEASES, SendContext, SendKey

log = logging.getLogger(__name__)


class TokenAsk(NamedTuple):
    """One token for a send, or (`renewal`) for the instance's lease in this process."""

    instance_id: int
    tenant_id: int
    renewal: bool = False


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
SELECT ctx.id, ctx.tenant_id, ctx.status, ctx.desired_state, ctx.node, ctx.rate, ctx.burst,
       taken.tokens, coalesce(taken.granted, 0) AS granted
FROM ctx LEFT JOIN taken ON taken.instance_id = ctx.id
"""


async def take_send_contexts(asks: list[TokenAsk]) -> list[SendContext | None]:
    """For each ask, in order: its instance's context with a token spent, or None if not found.

    Sends of one instance are served in order: the first as many as the bucket granted pass,
    the others get the time until the token each of them would need is free. Tokens granted
    beyond the sends (renewals ask one each, and spend none) are leased to the instance's next
    sends (`LEASES`). A renewal's own answer is its context, whatever the bucket held.
    """
    lease_seconds = [LEASES.seconds_to_ask(ask.instance_id) for ask in asks]
    rows = await fetch(CONTEXTS_AND_TOKENS, [a.instance_id for a in asks], [a.tenant_id for a in asks], lease_seconds)
    by_key = {(row["id"], row["tenant_id"]): row for row in rows}
    served: Counter[SendKey] = Counter()
    contexts: list[SendContext | None] = []
    for ask in asks:
        key = (ask.instance_id, ask.tenant_id)
        row = by_key.get(key)
        if row is None:
            contexts.append(None)
            continue
        retry_after = None
        if not ask.renewal:
            position = served[key]
            served[key] += 1
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
    for key, row in by_key.items():
        if row["desired_state"] == "running":
            spare = int(row["granted"]) - served[key]
            context = SendContext(row["status"], row["desired_state"], row["node"], row["rate"], None)
            LEASES.grant(key, context, spare, limit=row["burst"] // 2)
    return contexts


_contexts: Coalescer[TokenAsk, SendContext | None] = Coalescer(take_send_contexts, alone_on_error=True)
_renewals: set[asyncio.Task[None]] = set()


async def send_context(instance_id: int, tenant_id: int) -> SendContext | None:
    """The tenant's instance with a token spent from its bucket (when it is not being deleted); None if not found.

    A leased token and context when this process holds one for the instance, else the statement.
    """
    key = (instance_id, tenant_id)
    context = LEASES.take(key)
    if context is None:
        return await _contexts.submit(TokenAsk(instance_id, tenant_id))
    if LEASES.renewal_due(key):
        task = asyncio.get_running_loop().create_task(_renew(key))
        _renewals.add(task)
        task.add_done_callback(_renewals.discard)
    return context


async def _renew(key: SendKey) -> None:
    """Ask for the instance's next lease (`leases`); a failure only leaves its sends to the statement."""
    try:
        await _contexts.submit(TokenAsk(*key, renewal=True))
    except Exception as exc:
        log.warning("instance %d: renewing its send lease failed: %r", key[0], exc)
    finally:
        LEASES.renewal_done(key)
