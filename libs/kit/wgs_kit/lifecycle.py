"""Process lifecycle shared by the long-running services."""

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Coroutine
from typing import Any

import uvloop

log = logging.getLogger(__name__)


def run_service(main: Coroutine[Any, Any, None]) -> None:
    """Run a service's main coroutine on uvloop (as uvicorn runs the API): NATS-heavy loops spend
    noticeably less CPU per message than on the default event loop."""
    uvloop.run(main)


def freeze_startup_heap() -> None:
    """Keep the objects made while the process started out of every later garbage collection.

    A full collection walks every tracked object, and most of a service's live objects are made
    once at start-up (its framework, routes, schemas, tables) and live as long as the process.
    The API has about 100,000: a full collection took 60-76 ms on the 2-core machine, and every
    request waited meanwhile (at 500 sends/s, 30-40 of them, a p99 of its own); the node
    agent's took 44-67 ms, holding up every send it relayed. `gc.freeze` moves them to a
    generation the collector never visits. Every service calls it once, when start-up is done.
    """
    gc.collect()
    gc.freeze()
    log.info("start-up heap frozen: %d objects kept out of garbage collection", gc.get_freeze_count())


async def wait_for_shutdown() -> None:
    """Return when the process receives SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel background tasks and wait for them to finish."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
