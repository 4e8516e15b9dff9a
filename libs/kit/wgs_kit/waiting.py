"""Polling with a deadline: the only way this project waits for a condition."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceeded(TimeoutError):
    """The condition did not hold before the deadline."""


async def wait_until(
    probe: Callable[[], Awaitable[T | None]],
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Call `probe` until it returns something truthy and return that; raise after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise DeadlineExceeded(f"{what} not reached within {timeout:.1f}s")
        await asyncio.sleep(interval)
