"""The coalescer: concurrent calls share batches, each gets its own result or the batch's error."""

import asyncio

import pytest
from wgs_kit.coalescing import Coalescer


class Recorder:
    """A batch function that remembers its batches and can be held open."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def double(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        await self.gate.wait()
        return [item * 2 for item in items]


async def test_a_lone_call_is_a_batch_of_one() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.double)
    assert await coalescer.submit(21) == 42
    assert recorder.batches == [[21]]


async def test_calls_made_together_share_one_batch_and_keep_their_results() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.double)
    assert await asyncio.gather(*(coalescer.submit(i) for i in range(5))) == [0, 2, 4, 6, 8]
    assert recorder.batches == [[0, 1, 2, 3, 4]]


async def test_calls_made_while_the_batches_in_flight_run_go_into_the_next_one() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    coalescer = Coalescer(recorder.double, max_in_flight=1)
    first = asyncio.ensure_future(coalescer.submit(1))
    while not recorder.batches:  # the first batch has started and is held open
        await asyncio.sleep(0)
    later = [asyncio.ensure_future(coalescer.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    assert recorder.batches == [[1]]
    recorder.gate.set()
    assert await first == 2
    assert [await f for f in later] == [4, 6, 8]
    assert recorder.batches == [[1], [2, 3, 4]]


async def test_a_call_arriving_while_one_batch_runs_starts_a_second_batch_at_once() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    coalescer = Coalescer(recorder.double, max_in_flight=2)
    first = asyncio.ensure_future(coalescer.submit(1))
    while len(recorder.batches) < 1:
        await asyncio.sleep(0)
    second = asyncio.ensure_future(coalescer.submit(2))
    while len(recorder.batches) < 2:  # it did not wait for the first batch
        await asyncio.sleep(0)
    third = [asyncio.ensure_future(coalescer.submit(i)) for i in (3, 4)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert recorder.batches == [[1], [2]]  # two in flight: the others wait for one of them
    recorder.gate.set()
    assert [await first, await second, *[await f for f in third]] == [2, 4, 6, 8]
    assert recorder.batches == [[1], [2], [3, 4]]


async def test_batches_are_capped_at_max_batch() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.double, max_batch=2)
    assert await asyncio.gather(*(coalescer.submit(i) for i in range(5))) == [0, 2, 4, 6, 8]
    assert recorder.batches == [[0, 1], [2, 3], [4]]


async def test_a_failing_batch_fails_its_callers_only() -> None:
    calls = 0

    async def fail_first(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("database down")
        return items

    coalescer = Coalescer(fail_first)
    results = await asyncio.gather(coalescer.submit(1), coalescer.submit(2), return_exceptions=True)
    assert [type(r) for r in results] == [ValueError, ValueError]
    assert await coalescer.submit(3) == 3  # the coalescer keeps working


async def test_alone_on_error_a_bad_item_fails_only_its_own_caller() -> None:
    batches: list[list[int]] = []

    async def refuse_negative(items: list[int]) -> list[int]:
        batches.append(items)
        if any(item < 0 for item in items):
            raise ValueError("negative")
        return items

    coalescer = Coalescer(refuse_negative, alone_on_error=True)
    results = await asyncio.gather(*(coalescer.submit(i) for i in (1, -2, 3)), return_exceptions=True)
    assert results[0] == 1
    assert isinstance(results[1], ValueError)
    assert results[2] == 3
    assert batches == [[1, -2, 3], [1], [-2], [3]]


async def test_a_batch_answering_the_wrong_number_of_results_is_an_error() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    coalescer = Coalescer(short)
    with pytest.raises(RuntimeError, match="batch of 2 answered 1"):
        await asyncio.gather(coalescer.submit(1), coalescer.submit(2))


async def test_a_cancelled_caller_is_left_out_of_its_batch() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.double)
    cancelled = asyncio.ensure_future(coalescer.submit(1))
    kept = asyncio.ensure_future(coalescer.submit(2))
    await asyncio.sleep(0)  # both are queued; the batch has not started
    cancelled.cancel()
    assert await kept == 4
    assert recorder.batches == [[2]]


@pytest.mark.parametrize(("max_batch", "max_in_flight"), [(0, 1), (1, 0)])
def test_limits_must_be_positive(max_batch: int, max_in_flight: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(Recorder().double, max_batch=max_batch, max_in_flight=max_in_flight)
