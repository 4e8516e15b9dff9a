"""An API process remembers which tenant a key belongs to for a few seconds, and forgets on revocation."""

from wgs_api.domain.accounts.key_cache import KeyCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_remembered_until_its_time_is_up() -> None:
    clock = Clock()
    cache = KeyCache(ttl=5.0, clock=clock)
    cache.remember("h1", 7, revocations_before=cache.revocations)
    clock.now += 4.9
    assert cache.tenant("h1") == 7
    clock.now += 0.1
    assert cache.tenant("h1") is None
    assert cache.tenant("unknown") is None


def test_a_revocation_forgets_only_that_tenants_keys() -> None:
    cache = KeyCache()
    for key_hash, tenant in (("a1", 1), ("a2", 1), ("b1", 2)):
        cache.remember(key_hash, tenant, revocations_before=cache.revocations)
    cache.forget_tenant(1)
    assert (cache.tenant("a1"), cache.tenant("a2"), cache.tenant("b1")) == (None, None, 2)


def test_a_lookup_overtaken_by_a_revocation_is_not_remembered() -> None:
    cache = KeyCache()
    before = cache.revocations  # the lookup starts; it may read the key before the revocation commits
    cache.forget_tenant(3)
    cache.remember("h", 1, revocations_before=before)
    assert cache.tenant("h") is None
    cache.remember("h", 1, revocations_before=cache.revocations)  # a lookup after it is remembered
    assert cache.tenant("h") == 1


def test_the_oldest_keys_make_room_beyond_the_limit() -> None:
    cache = KeyCache(max_keys=2)
    for key_hash in ("h1", "h2", "h3"):
        cache.remember(key_hash, 1, revocations_before=cache.revocations)
    assert (cache.tenant("h1"), cache.tenant("h2"), cache.tenant("h3")) == (None, 1, 1)
