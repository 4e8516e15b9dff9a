"""Per-instance send rate limit: a token bucket in PostgreSQL, shared by every API process."""

from wgs_db.tables import Instance

TAKE_TOKEN = """
INSERT INTO rate_buckets AS b (instance_id, tokens, updated_at) VALUES ({}, {} - 1, clock_timestamp())
ON CONFLICT (instance_id) DO UPDATE SET
    tokens = LEAST({}, b.tokens + EXTRACT(EPOCH FROM clock_timestamp() - b.updated_at) * {}) - 1,
    updated_at = clock_timestamp()
WHERE LEAST({}, b.tokens + EXTRACT(EPOCH FROM clock_timestamp() - b.updated_at) * {}) >= 1
RETURNING tokens
"""
CURRENT_TOKENS = """
SELECT LEAST({}, tokens + EXTRACT(EPOCH FROM clock_timestamp() - updated_at) * {}) AS tokens
FROM rate_buckets WHERE instance_id = {}
"""


async def take_token(instance_id: int, rate_per_second: float, burst: int) -> float | None:
    """Spend one send from the instance's bucket; None if allowed, else seconds until one is free."""
    taken = await Instance.raw(TAKE_TOKEN, instance_id, burst, burst, rate_per_second, burst, rate_per_second)
    if taken:
        return None
    rows = await Instance.raw(CURRENT_TOKENS, burst, rate_per_second, instance_id)
    tokens = rows[0]["tokens"] if rows else 0.0
    return max((1 - tokens) / rate_per_second, 0.0)
