"""`LateRecords`: message records a PostgreSQL outage kept from being stored wait, are stored together
once the store works again, and are bounded in number and at shutdown."""

import logging

import asyncpg
import pytest
from wgs_api.domain.messaging.late_records import LateRecords
from wgs_kit.waiting import wait_until

DOWN = asyncpg.CannotConnectNowError("the database system is starting up")


class Store:
    """A store that fails with `failures` (in turn) before it stores; what it stored, call by call."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls: list[list[str]] = []
        self.stored: list[list[str]] = []

    async def __call__(self, records: list[str]) -> None:
        self.calls.append(records)
        if self.failures:
            raise self.failures.pop(0)
        self.stored.append(records)


async def test_records_wait_through_the_outage_and_are_stored_together(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    store = Store(DOWN, DOWN)
    late = LateRecords(store, first_pause=0.01)
    assert late.add("m1")
    assert late.add("m2")

    async def stored() -> bool:
        return late.waiting == 0

    await wait_until(stored, 10, interval=0.01, what="the records stored")
    assert store.calls == [["m1", "m2"]] * 3
    assert store.stored == [["m1", "m2"]]
    assert "stored 2 message records that waited for PostgreSQL" in caplog.text


async def test_a_record_that_fails_otherwise_is_logged_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    store = Store(ValueError("not storable"))
    late = LateRecords(store, first_pause=0.01)
    late.add("m1")

    async def given_up() -> bool:
        return late.waiting == 0

    await wait_until(given_up, 10, interval=0.01, what="the record given up")
    assert store.stored == []
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert "storing 1 message records failed: they are lost" in caplog.text
    await late.stop()


async def test_beyond_the_bound_a_record_is_lost_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    late = LateRecords(Store(DOWN, DOWN, DOWN), max_waiting=2, first_pause=60)
    assert late.add("m1")
    assert late.add("m2")
    assert not late.add("m3")
    assert late.waiting == 2
    assert "2 message records already wait for PostgreSQL: 'm3' is lost" in caplog.text
    await late.stop()


async def test_stopping_tries_once_more_then_logs_what_is_left(caplog: pytest.LogCaptureFixture) -> None:
    still_down = LateRecords(Store(DOWN, DOWN), first_pause=60)
    still_down.add("m1")
    await still_down.stop()
    assert still_down.waiting == 0
    assert "stopping with 1 message records not stored: their histories are missing" in caplog.text

    store = Store()
    back = LateRecords(store, first_pause=60)
    back.add("m2")
    await back.stop()
    assert store.stored == [["m2"]]
