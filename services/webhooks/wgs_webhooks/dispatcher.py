"""Workers sending claimed deliveries: bounded concurrency, one delivery per endpoint at a time."""

import asyncio
import contextlib
import logging
import time

from wgs_kit.lifecycle import cancel_all

from wgs_webhooks import store
from wgs_webhooks.config import Settings
from wgs_webhooks.retry import RetryPolicy, Verdict, classify
from wgs_webhooks.sender import Answer, Sender
from wgs_webhooks.signing import signed_headers

log = logging.getLogger(__name__)
CLAIM_FAILURE_PAUSE = 1.0


def outcome_of(answer: Answer, tries: int, policy: RetryPolicy) -> store.Outcome:
    """The delivery's fate after an attempt that got `answer`, `tries` attempts into its schedule."""
    delay = None
    if answer.refused:
        status = "dead"
    elif classify(answer.status_code) is Verdict.DELIVERED:
        status = "delivered"
    else:
        delay = policy.next_delay(tries, answer.status_code, answer.retry_after)
        status = "dead" if delay is None else "pending"
    return store.Outcome(
        status=status,
        status_code=answer.status_code,
        error=answer.error,
        latency_ms=answer.latency_ms,
        delay_seconds=delay or 0.0,
    )


class Dispatcher:
    """Claims due deliveries whenever a worker slot is free, and sends each in its own task."""

    def __init__(self, settings: Settings, sender: Sender) -> None:
        self.settings = settings
        self.sender = sender
        self.policy = RetryPolicy(settings.schedule)
        self._wake = asyncio.Event()
        self._workers: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """Look for due deliveries now (new ones were created, or a worker finished)."""
        self._wake.set()

    async def run(self) -> None:
        """Claim and dispatch until cancelled; polls every `poll_seconds` when nothing wakes it."""
        while True:
            self._wake.clear()
            free = self.settings.concurrency - len(self._workers)
            if free > 0:
                try:
                    claims = await store.claim(free, self.settings.lease_seconds)
                except Exception:
                    log.exception("claiming deliveries failed")
                    await asyncio.sleep(CLAIM_FAILURE_PAUSE)
                    continue
                for claim in claims:
                    worker = asyncio.create_task(self.deliver(claim))
                    self._workers.add(worker)
                    worker.add_done_callback(self._worker_done)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_seconds)

    def _worker_done(self, worker: asyncio.Task[None]) -> None:
        self._workers.discard(worker)
        if not worker.cancelled() and (exc := worker.exception()) is not None:
            log.error("a delivery worker failed; its lease will expire and it will be retried", exc_info=exc)
        self.wake()

    async def deliver(self, claim: store.Claim) -> None:
        """One attempt of one delivery, signed for this moment, and its record."""
        body = claim.payload.encode()
        headers = signed_headers(claim.secret, claim.event_id, int(time.time()), body)
        answer = await self.sender.post(claim.url, headers, body)
        outcome = outcome_of(answer, claim.tries, self.policy)
        try:
            await store.finish(claim, outcome)
        except Exception:
            log.exception("recording attempt %d of delivery %d failed", claim.attempt, claim.id)
            return
        log.info(
            "delivery %d (event %s, endpoint %d) attempt %d: %s -> %s",
            claim.id,
            claim.event_id,
            claim.endpoint_id,
            claim.attempt,
            answer.status_code if answer.error is None else answer.error,
            outcome.status,
        )

    async def drain(self) -> None:
        """Let running attempts finish (each is bounded by the timeout), then cancel any left."""
        if self._workers:
            await asyncio.wait(set(self._workers), timeout=self.settings.timeout_seconds + 1.0)
        await cancel_all(list(self._workers))
