"""Which tenant an API key belongs to, remembered by one API process for a few seconds.

Every tenant request starts with the key; looking it up in PostgreSQL was one statement on the
hot path of every send. A key found is remembered for `KEY_CACHE_SECONDS`. A revocation (one
key, or a rotation) forgets the tenant's keys in the process that made it before it answers,
and is broadcast (`ApiKeysRevoked`) so that every other API process forgets them too; the
time limit only bounds how long a key could outlive a broadcast that was lost. A lookup that
was running while a revocation arrived is not remembered (it may have read the key before the
revocation committed). Unknown keys are never remembered.
"""

import time
from collections.abc import Callable
from typing import Final

KEY_CACHE_SECONDS: Final = 5.0
MAX_KEYS: Final = 10_000  # beyond this many, the oldest entries are dropped


class KeyCache:
    """Key hash → tenant id, for a few seconds."""

    def __init__(
        self, *, ttl: float = KEY_CACHE_SECONDS, max_keys: int = MAX_KEYS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_keys = max_keys
        self.clock = clock
        self._entries: dict[str, tuple[int, float]] = {}  # key hash → (tenant id, expires at)
        self.revocations = 0  # how many revocations this process has seen (see `remember`)

    def tenant(self, key_hash: str) -> int | None:
        """The tenant of a remembered key, or None (unknown, or remembered too long ago)."""
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        tenant_id, expires_at = entry
        if self.clock() >= expires_at:
            del self._entries[key_hash]
            return None
        return tenant_id

    def remember(self, key_hash: str, tenant_id: int, *, revocations_before: int) -> None:
        """Remember a key found by a lookup that started when `revocations` was `revocations_before`."""
        if revocations_before != self.revocations:
            return  # a revocation arrived during the lookup: its answer may be stale
        if len(self._entries) >= self.max_keys:
            del self._entries[next(iter(self._entries))]
        self._entries[key_hash] = (tenant_id, self.clock() + self.ttl)

    def forget_tenant(self, tenant_id: int) -> None:
        """Forget every key of a tenant (some of them were revoked)."""
        self.revocations += 1
        for key_hash in [h for h, (t, _) in self._entries.items() if t == tenant_id]:
            del self._entries[key_hash]


KEYS: Final = KeyCache()  # this process's
