"""JetStream stream definitions: declared here once, created only by `wgs-migrate`."""

from typing import Final, Literal

import msgspec

from wgs_contracts import subjects

DAY: Final = 24 * 3600.0


class StreamSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a JetStream stream holds and for how long."""

    name: str
    subjects: tuple[str, ...]
    description: str
    max_age_seconds: float
    duplicate_window_seconds: float = 120.0
    retention: Literal["limits", "workqueue", "interest"] = "limits"
    # Publishers may store several messages as one JetStream fast-ingest batch, stored in order and
    # stopped at its first refused message (`publish_durable_all`; nats-server 2.14+ `allow_batched`).
    allow_fast_batches: bool = False


COMMANDS: Final = StreamSpec(
    name="WGS_COMMANDS",
    subjects=(subjects.ALL_COMMANDS,),
    description="Commands to the control plane (create/delete instance).",
    max_age_seconds=7 * DAY,
)
NODE_COMMANDS: Final = StreamSpec(
    name="WGS_NODE_COMMANDS",
    subjects=(subjects.ALL_NODE_COMMANDS,),
    description="Commands addressed to one node agent (start/stop an instance).",
    max_age_seconds=7 * DAY,
)
EVENTS: Final = StreamSpec(
    name="WGS_EVENTS",
    subjects=(subjects.ALL_INSTANCE_EVENTS,),
    description="Public instance events (status, connection, QR, messages, message statuses).",
    max_age_seconds=7 * DAY,
    allow_fast_batches=True,  # a node agent stores a page of an instance's events at once
)
OUTBOUND: Final = StreamSpec(
    name="WGS_OUTBOUND",
    subjects=(subjects.ALL_OUTBOUND,),
    description="Sends accepted while their instance was restarting or moving; drained when it is back.",
    max_age_seconds=7 * DAY,
)
SANDBOX_MAIL: Final = StreamSpec(
    name="WGS_SANDBOX_MAIL",
    subjects=(subjects.ALL_SANDBOX_MAIL,),
    description="Sandbox network traffic for a phone that was away; its instance takes it when back.",
    max_age_seconds=30 * DAY,  # as long as WhatsApp keeps a message for a phone that stays offline
    retention="workqueue",  # an envelope leaves once its phone has taken it
)
DEAD_LETTERS: Final = StreamSpec(
    name="WGS_DEAD_LETTERS",
    subjects=(subjects.ALL_DEAD_LETTERS,),
    description="Messages a consumer gave up on after max_deliver attempts.",
    max_age_seconds=30 * DAY,
)

ALL_STREAMS: Final = (COMMANDS, NODE_COMMANDS, EVENTS, OUTBOUND, SANDBOX_MAIL, DEAD_LETTERS)
