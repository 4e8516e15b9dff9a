"""Send contexts leased with spare tokens, so that most sends of a busy instance skip PostgreSQL.

The rate-limit statement (`wgs_api.domain.messaging.rate_limit`) asks an instance's bucket for
the sends waiting plus, as spare tokens, what its tenant's rate refills in `LEASE_SECONDS` (at
most half the burst). The spare tokens it grants are kept here with the instance's send context
(status, node), and the next sends of that instance in this process spend them without a
statement, for at most `LEASE_SECONDS` (`WGS_API_SEND_LEASE_SECONDS`; 0 turns leases off).

- The limit still holds across API processes: a leased token was taken from the shared bucket.
  Tokens left when a lease ends are lost, never given back, so the limit can only be stricter:
  by at most what one process holds (half the burst), for sends that another process serves.
- A rate below one token per `LEASE_SECONDS` leases nothing: every send runs the statement, as
  before (the default 20/s with burst 40 leases 5 tokens at a time).
- A lease is renewed before it runs out: once half its tokens are spent or half its time is
  gone, the send that notices it asks for one more lease in the background
  (`rate_limit.send_context`). The tokens it gets are added to those left and the context is
  refreshed, so a busy instance's sends never wait for the statement. A process holds at most
  half the burst: what a renewal would add beyond it is lost.
- A status event of the instance (every API process watches them) ends its lease, since the
  context may have changed (stopping, moving, being deleted). The row is updated from the same
  events by the event consumer, possibly a moment later, so the instance gets no new lease for
  `QUARANTINE_SECONDS` after an event: its sends read the row meanwhile, as they always did.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

LEASE_SECONDS: Final = 0.25
QUARANTINE_SECONDS: Final = 2.0
MAX_LEASES: Final = 10_000  # beyond this many instances, the oldest lease is dropped

SendKey = tuple[int, int]  # (instance id, tenant id)


@dataclass(frozen=True)
class SendContext:
    """What a send needs to know about its instance, and whether the rate limit let it through."""

    status: str
    desired_state: str
    node: str | None
    rate_per_second: float
    retry_after: float | None  # None: a token was spent (or none is taken: being deleted); else seconds to wait


@dataclass
class Lease:
    """A send context that may be reused while spare tokens last and the lease has not expired."""

    context: SendContext
    tokens: int
    expires_at: float
    renew_below: int  # renew once tokens fall to this (half the tokens granted)
    renew_at: float  # or once this time has come (half the lease's time)


class SendLeases:
    """This process's leases, by (instance id, tenant id)."""

    def __init__(
        self,
        *,
        lease_seconds: float = LEASE_SECONDS,
        quarantine_seconds: float = QUARANTINE_SECONDS,
        max_leases: int = MAX_LEASES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lease_seconds = lease_seconds
        self.quarantine_seconds = quarantine_seconds
        self.max_leases = max_leases
        self.clock = clock
        self._leases: dict[SendKey, Lease] = {}
        self._quarantined: dict[int, float] = {}  # instance id → no lease before this time
        self._renewing: set[SendKey] = set()

    def take(self, key: SendKey) -> SendContext | None:
        """Spend a leased token: the instance's context, or None (no lease, expired or spent)."""
        lease = self._leases.get(key)
        if lease is None:
            return None
        if self.clock() >= lease.expires_at:
            del self._leases[key]
            return None
        lease.tokens -= 1
        if lease.tokens == 0:
            del self._leases[key]
        return lease.context

    def seconds_to_ask(self, instance_id: int) -> float:
        """How many seconds of rate to ask for as spare tokens (0 while the instance is quarantined)."""
        until = self._quarantined.get(instance_id)
        if until is not None:
            if self.clock() < until:
                return 0.0
            del self._quarantined[instance_id]
        return self.lease_seconds

    def renewal_due(self, key: SendKey) -> bool:
        """True once per renewal: the instance's lease is half spent or half gone (see the module)."""
        lease = self._leases.get(key)
        if lease is None or key in self._renewing:
            return False
        if lease.tokens > lease.renew_below and self.clock() < lease.renew_at:
            return False
        self._renewing.add(key)
        return True

    def renewing(self, key: SendKey) -> bool:
        """A renewal of the instance's lease is being asked for."""
        return key in self._renewing

    def renewal_done(self, key: SendKey) -> None:
        """The renewal `renewal_due` asked for has ended (granted or failed): another may be asked."""
        self._renewing.discard(key)

    def grant(self, key: SendKey, context: SendContext, tokens: int, *, limit: int) -> None:
        """Add `tokens` spare tokens to the instance's lease, with the context, up to `limit` held.

        Nothing is kept for a refused send or a quarantined instance. The lease lasts
        `lease_seconds` from now.
        """
        if tokens <= 0 or context.retry_after is not None or self.seconds_to_ask(key[0]) == 0.0:
            return
        now = self.clock()
        held = self._leases.pop(key, None)
        if held is not None and now < held.expires_at:
            tokens += held.tokens
        tokens = min(tokens, limit)
        if tokens <= 0:
            return
        if len(self._leases) >= self.max_leases:
            del self._leases[next(iter(self._leases))]
        self._leases[key] = Lease(context, tokens, now + self.lease_seconds, tokens // 2, now + self.lease_seconds / 2)

    def end(self, instance_id: int) -> None:
        """End the instance's lease and lease nothing for it during the quarantine (its status changed)."""
        self._quarantined[instance_id] = self.clock() + self.quarantine_seconds
        for key in [k for k in self._leases if k[0] == instance_id]:
            del self._leases[key]
        if len(self._quarantined) > self.max_leases:
            now = self.clock()
            self._quarantined = {i: until for i, until in self._quarantined.items() if until > now}

    def end_all(self) -> None:
        """End every lease (a tenant's rate changed)."""
        self._leases.clear()


LEASES: Final = SendLeases()  # this process's
