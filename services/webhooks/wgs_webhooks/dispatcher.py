"""Workers sending claimed deliveries: bounded concurrency, one delivery per endpoint at a time,
a tenant's attempts bounded by its share of the slots (claimed only while it has room: `store.claim`).

A worker that settled a delivery (delivered or dead) claims the endpoint's next one in the
statement that records the attempt, and goes on with it: no trip through the dispatcher. It
lets the endpoint go after `CHAIN_SECONDS` (and on shutdown), so a worker slot is never held
for long by one endpoint while others may be waiting for it. Attempts that end while a record
statement is running are recorded together by the next one (group commit).
"""

import asyncio
import contextlib
import logging
import time

from wgs_db.engine import DATABASE_OUTAGES
from wgs_kit.lifecycle import cancel_all
from wgs_kit.outages import log_failure

from wgs_webhooks import store
from wgs_webhooks.config import Settings
from wgs_webhooks.retry import RetryPolicy, Verdict, classify
from wgs_webhooks.sender import Answer, Sender
from wgs_webhooks.signing import signed_headers

log = logging.getLogger(__name__)
CLAIM_FAILURE_PAUSE = 1.0
# How long one worker may keep serving the same endpoint's queue before handing its slot back.
CHAIN_SECONDS = 0.5


def outcome_of(answer: Answer, tries: int, policy: RetryPolicy, *, waited: float) -> store.Outcome:
    """The delivery's fate after an attempt that got `answer`, `tries` attempts into its schedule and
    begun `waited` seconds into its retry period."""
    delay = None
    if answer.refused:
        status = "dead"
    elif classify(answer.status_code) is Verdict.DELIVERED:
        status = "delivered"
    else:
        delay = policy.next_delay(tries, answer.status_code, answer.retry_after, waited=waited)
        status = "dead" if delay is None else "pending"
    return store.Outcome(
        status=status,
        status_code=answer.status_code,
        error=answer.error,
        latency_ms=answer.latency_ms,
        delay_seconds=delay or 0.0,
    )


class Recorder:
    """Records attempts in batches: one statement at a time, taking every attempt that ended meanwhile."""

    def __init__(self, lease_seconds: float) -> None:
        self.lease_seconds = lease_seconds
        self._waiting: list[tuple[store.Finished, asyncio.Future[store.Claim | None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def finish(self, claim: store.Claim, outcome: store.Outcome, *, claim_next: bool) -> store.Claim | None:
        """Record one attempt (see `store.finish`); the endpoint's next delivery if it was claimed."""
        done: asyncio.Future[store.Claim | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((store.Finished(claim=claim, outcome=outcome, claim_next=claim_next), done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())
        return await done

    async def _write(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    following = await store.finish([item for item, _ in batch], self.lease_seconds)
                except Exception as exc:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for item, done in batch:
                    if not done.done():
                        done.set_result(following.get(item.claim.id))
        finally:
            self._writer = None
            for _, done in self._waiting:  # only when cancelled
                done.cancel()
            self._waiting = []


class Dispatcher:
    """Claims due deliveries whenever a worker slot is free, and sends each in its own task."""

    def __init__(self, settings: Settings, sender: Sender) -> None:
        self.settings = settings
        self.sender = sender
        self.policy = RetryPolicy(settings.schedule)
        self._wake = asyncio.Event()
        self._workers: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.recorder = Recorder(settings.lease_seconds)

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
                    claims = await store.claim(free, self.settings.lease_seconds, self.settings.tenant_concurrency)
                except Exception as exc:
                    log_failure(log, exc, "claiming deliveries", outages=DATABASE_OUTAGES)
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
        """Send `claim`, then the endpoint's next due deliveries, one at a time, for up to CHAIN_SECONDS."""
        until = time.monotonic() + CHAIN_SECONDS
        current: store.Claim | None = claim
        while current is not None:
            current = await self.attempt(current, claim_next=not self._stopping and time.monotonic() < until)

    async def attempt(self, claim: store.Claim, *, claim_next: bool) -> store.Claim | None:
        """One attempt of one delivery, signed for this moment, and its record; the endpoint's next
        delivery when `claim_next` and it could be claimed along with the record."""
        body = claim.payload.encode()
        headers = claim.headers | signed_headers(
            claim.secret, claim.event_id, int(time.time()), body, previous_secret=claim.previous_secret
        )
        answer = await self.sender.post(claim.url, headers, body)
        outcome = outcome_of(answer, claim.tries, self.policy, waited=claim.waited)
        try:
            following = await self.recorder.finish(claim, outcome, claim_next=claim_next)
        except Exception as exc:  # the claim lapses and the delivery is attempted again (at least once)
            log_failure(
                log, exc, "recording attempt %d of delivery %d", claim.attempt, claim.id, outages=DATABASE_OUTAGES
            )
            return None
        log.info(
            "delivery %d (event %s, endpoint %d) attempt %d: %s -> %s",
            claim.id,
            claim.event_id,
            claim.endpoint_id,
            claim.attempt,
            answer.status_code if answer.error is None else answer.error,
            outcome.status,
        )
        return following

    async def drain(self) -> None:
        """Let running attempts finish (each is bounded by the timeout), then cancel any left."""
        self._stopping = True
        if self._workers:
            await asyncio.wait(set(self._workers), timeout=self.settings.timeout_seconds + 1.0)
        await cancel_all(list(self._workers))
