"""The instance's durable state and the changes that make it up.

Every change is an operation (a short JSON array) applied by `State.apply`, both live and
when the journal is replayed on start, so a replay rebuilds exactly the state the answers
were given from:

| operation | meaning |
|---|---|
| `["e", event]` | append `event` (`{"seq", "type", "at", "data"}`) to the outbox; next seq = its seq + 1 |
| `["a", seq]` | drop the outbox events up to `seq` (acknowledged) |
| `["s", id, status]` | the delivery status of sent message `id` |
| `["d", id]` | inbound message `id` was delivered |
| `["p", phone_id]` | linked as `phone_id` (null: unlinked) |

Bounds, so the state (and with it a snapshot) stays bounded however long the instance runs:
the outbox keeps the newest MAX_OUTBOX unacknowledged events, `sent` and `delivered` the
newest MAX_REMEMBERED message ids each (an older id sent again is sent again; an older id
delivered again is announced again).
"""

import bisect
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

MAX_OUTBOX = 10_000
MAX_REMEMBERED = 10_000


def remember(mapping: "OrderedDict[str, Any]", key: str, value: Any) -> None:
    """Add `key`, forgetting the oldest keys beyond MAX_REMEMBERED.

    An OrderedDict: `popitem(last=False)` is O(1), where deleting `next(iter(d))` from a plain
    dict rescans the deleted slots at its front (tens of microseconds per call at 10 000 ids).
    """
    mapping[key] = value
    while len(mapping) > MAX_REMEMBERED:
        mapping.popitem(last=False)


@dataclass
class State:
    """What survives a restart."""

    phone_id: str | None = None
    next_seq: int = 1
    outbox: list[dict[str, Any]] = field(default_factory=list)
    sent: "OrderedDict[str, str]" = field(default_factory=OrderedDict)  # message id -> delivery status
    delivered: "OrderedDict[str, None]" = field(default_factory=OrderedDict)  # inbound message ids

    def apply(self, op: list[Any]) -> int:
        """Apply one operation; the number of unacknowledged events it dropped (outbox over its bound)."""
        kind = op[0]
        if kind == "e":
            event = op[1]
            self.outbox.append(event)
            self.next_seq = event["seq"] + 1
            if (excess := len(self.outbox) - MAX_OUTBOX) > 0:
                del self.outbox[:excess]
                return excess
        elif kind == "a":
            if drop := bisect.bisect_right(self.outbox, op[1], key=lambda event: event["seq"]):
                del self.outbox[:drop]
        elif kind == "s":
            if op[1] in self.sent:
                self.sent[op[1]] = op[2]
            else:
                remember(self.sent, op[1], op[2])
        elif kind == "d":
            remember(self.delivered, op[1], None)
        elif kind == "p":
            self.phone_id = op[1]
        else:
            raise ValueError(f"unknown state operation {kind!r}")
        return 0

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> "State":
        """The state from a snapshot's `state` object (also the content of a version 1 `state.json`)."""
        return cls(
            phone_id=saved.get("phone_id"),
            next_seq=saved.get("next_seq", 1),
            outbox=saved.get("outbox", []),
            sent=OrderedDict(saved.get("sent", {})),
            delivered=OrderedDict.fromkeys(saved.get("delivered", [])),
        )
