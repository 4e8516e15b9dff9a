"""Send leases: spare rate-limit tokens reused with their context, until spent, expired or ended."""

from wgs_api.domain.messaging.leases import SendContext, SendLeases

CONTEXT = SendContext(status="running", desired_state="running", node="n1", rate_per_second=100.0, retry_after=None)
KEY = (7, 1)
LIMIT = 1_000  # half the burst: the most a process holds for one instance


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def leases(clock: Clock, max_leases: int = 10_000) -> SendLeases:
    return SendLeases(lease_seconds=0.25, quarantine_seconds=2.0, max_leases=max_leases, clock=clock)


def test_a_lease_serves_exactly_its_spare_tokens() -> None:
    clock = Clock()
    table = leases(clock)
    table.grant(KEY, CONTEXT, 3, limit=LIMIT)
    assert [table.take(KEY) for _ in range(4)] == [CONTEXT, CONTEXT, CONTEXT, None]
    assert table.take((7, 2)) is None  # the same instance id under another tenant is another key


def test_a_lease_expires_with_its_tokens_unspent() -> None:
    clock = Clock()
    table = leases(clock)
    table.grant(KEY, CONTEXT, 50, limit=LIMIT)
    assert table.take(KEY) == CONTEXT
    clock.now += 0.25
    assert table.take(KEY) is None
    clock.now += 0.01
    assert table.take(KEY) is None


def test_nothing_is_leased_from_a_refused_send_or_without_spare_tokens() -> None:
    clock = Clock()
    table = leases(clock)
    refused = SendContext(status="running", desired_state="running", node="n1", rate_per_second=1.0, retry_after=0.5)
    table.grant(KEY, refused, 5, limit=LIMIT)
    table.grant((8, 1), CONTEXT, 0, limit=LIMIT)
    assert table.take(KEY) is None
    assert table.take((8, 1)) is None


def test_ending_a_lease_quarantines_the_instance() -> None:
    clock = Clock()
    table = leases(clock)
    table.grant(KEY, CONTEXT, 10, limit=LIMIT)
    table.grant((8, 1), CONTEXT, 10, limit=LIMIT)
    assert table.seconds_to_ask(7) == 0.25
    table.end(7)
    assert table.take(KEY) is None
    assert table.take((8, 1)) == CONTEXT  # other instances keep theirs
    assert table.seconds_to_ask(7) == 0.0  # no spare tokens asked for meanwhile...
    table.grant(KEY, CONTEXT, 10, limit=LIMIT)  # ...and none kept from a statement that was running
    assert table.take(KEY) is None
    clock.now += 2.0
    assert table.seconds_to_ask(7) == 0.25
    table.grant(KEY, CONTEXT, 10, limit=LIMIT)
    assert table.take(KEY) == CONTEXT


def test_leases_turned_off_ask_for_nothing() -> None:
    table = SendLeases(lease_seconds=0.0, clock=Clock())
    assert table.seconds_to_ask(7) == 0.0
    table.grant(KEY, CONTEXT, 10, limit=LIMIT)
    assert table.take(KEY) is None


def test_end_all_and_the_size_bound() -> None:
    clock = Clock()
    table = leases(clock, max_leases=2)
    for instance in (1, 2, 3):
        table.grant((instance, 1), CONTEXT, 5, limit=LIMIT)
    assert table.take((1, 1)) is None  # the oldest was dropped
    assert table.take((3, 1)) == CONTEXT
    for instance in range(10, 14):
        table.end(instance)
    clock.now += 2.0
    table.end(20)  # over the bound: expired quarantines are forgotten
    assert table.seconds_to_ask(20) == 0.0
    assert len(table._quarantined) == 1
    table.end_all()
    assert table.take((3, 1)) is None


def test_a_lease_is_due_for_renewal_once_half_spent() -> None:
    clock = Clock()
    table = leases(clock)
    table.grant(KEY, CONTEXT, 10, limit=LIMIT)
    for _ in range(4):
        assert table.take(KEY) == CONTEXT
        assert not table.renewal_due(KEY)
    assert table.take(KEY) == CONTEXT  # 5 of 10 left
    assert table.renewal_due(KEY)
    assert table.take(KEY) == CONTEXT
    assert not table.renewal_due(KEY)  # one renewal at a time...
    table.renewal_done(KEY)
    assert table.renewal_due(KEY)  # ...until it has ended


def test_a_lease_is_due_for_renewal_once_half_its_time_is_gone() -> None:
    clock = Clock()
    table = leases(clock)
    table.grant(KEY, CONTEXT, 100, limit=LIMIT)
    clock.now += 0.12
    assert not table.renewal_due(KEY)
    clock.now += 0.01
    assert table.renewal_due(KEY)
    assert not table.renewal_due((8, 1))  # nothing to renew without a lease


def test_a_renewal_adds_its_tokens_to_those_left_up_to_the_limit() -> None:
    clock = Clock()
    table = leases(clock)
    table.grant(KEY, CONTEXT, 10, limit=12)
    for _ in range(6):
        table.take(KEY)
    fresh = SendContext(status="running", desired_state="running", node="n2", rate_per_second=100.0, retry_after=None)
    table.grant(KEY, fresh, 5, limit=12)  # 4 left + 5
    clock.now += 0.2  # the lease lasts from the renewal on, with the renewal's context
    assert [table.take(KEY) for _ in range(10)] == [fresh] * 9 + [None]
    table.grant(KEY, CONTEXT, 10, limit=12)
    table.grant(KEY, CONTEXT, 10, limit=12)  # 20: the limit holds
    assert sum(table.take(KEY) is not None for _ in range(20)) == 12


def test_an_expired_lease_adds_nothing_to_a_renewal() -> None:
    clock = Clock()
    table = leases(clock)
    table.grant(KEY, CONTEXT, 10, limit=LIMIT)
    clock.now += 0.25
    table.grant(KEY, CONTEXT, 3, limit=LIMIT)
    assert [table.take(KEY) for _ in range(4)] == [CONTEXT] * 3 + [None]


def test_a_renewal_ending_during_a_quarantine_keeps_nothing() -> None:
    clock = Clock()
    table = leases(clock)
    table.grant(KEY, CONTEXT, 10, limit=LIMIT)
    clock.now += 0.2
    assert table.renewal_due(KEY)
    table.end(7)  # a status event while the renewal's statement runs
    table.grant(KEY, CONTEXT, 10, limit=LIMIT)
    table.renewal_done(KEY)
    assert table.take(KEY) is None
