"""Recording instance events on the rows the API serves (idempotent: events may repeat).

The API's durable consumer `api-instance-events` (see `wgs_api.messaging`) takes only the kinds
applied here, `APPLIED_EVENTS`, in batches (up to 100 per fetch):

- instance status (`apply_status`, guarded by generation and `status_at`) and connection changes
  (guarded by generation) are applied one statement each, in stream order, so that the last of an
  instance's events in the stream wins as it did one by one;
- the batch's message statuses are recorded by one multi-row INSERT ... ON CONFLICT DO NOTHING
  (each status of a message once; a repeated event, even within the batch, adds nothing), their
  `at` taken row by row in stream order so that a history keeps its order.

A batch that fails is applied again one event at a time (`wgs_kit.batched`); every statement is
idempotent, so what the failed attempt already wrote is harmless.
"""

from collections.abc import Sequence
from typing import Final

from nats.aio.msg import Msg
from wgs_contracts import subjects
from wgs_contracts.instance_events import ConnectionChanged, InstanceEvent, MessageStatusChanged
from wgs_contracts.messages import InstanceStatusChanged
from wgs_db.engine import DB
from wgs_db.tables import Instance
from wgs_kit.messaging import decode

from wgs_api.domain.instances.status import apply_status

# The kinds the API applies: its consumer's filter subjects (nats-server 2.10+ multi-filter consumer).
APPLIED_EVENTS: Final = (subjects.ALL_INSTANCE_STATUS, subjects.ALL_INSTANCE_CONNECTION, subjects.ALL_MESSAGE_STATUS)

# One row per status event, `at` drawn per row in the arrays' (stream) order. A provider's `sent`
# confirms the one the API recorded while asking it (provisional, decision 35): found through
# the primary key (the conflict), never by a scan, so the cost stays flat as the table grows.
# A status of a message no row holds is marked `unclaimed`, for the retention sweep (decision 46);
# `OFFSET 0` keeps that check one index probe per status: without it, the planner may hash the
# whole `messages` table instead (as it did on a new, unanalysed table).
RECORD_MESSAGE_STATUSES = """
INSERT INTO message_statuses (message_id, status, reason, at, unclaimed)
SELECT e.message_id, e.status, e.reason, clock_timestamp(),
       NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = e.message_id OFFSET 0)
  FROM unnest($1::text[], $2::text[], $3::text[]) AS e(message_id, status, reason)
ON CONFLICT (message_id, status) DO UPDATE SET provisional = false WHERE message_statuses.provisional
"""


async def apply_messages(msgs: list[Msg]) -> None:
    """Decode a batch of stream messages and apply them (the handler of the API's batched consumer)."""
    await apply_events([decode(msg.data, InstanceEvent) for msg in msgs])  # type: ignore[arg-type]


async def apply_events(events: Sequence[InstanceEvent]) -> None:
    """Apply events in order: status and connection changes one by one, message statuses in one INSERT."""
    statuses: list[MessageStatusChanged] = []
    for event in events:
        if isinstance(event, MessageStatusChanged):
            statuses.append(event)
        else:
            await apply_event(event)
    await record_message_statuses(statuses)


async def apply_event(event: InstanceEvent) -> None:
    """Apply one event: instance status, connection state, or a message's status; other kinds change nothing."""
    if isinstance(event, InstanceStatusChanged):
        await apply_status(event)
    elif isinstance(event, ConnectionChanged):
        # A QR means no linked phone (a logout, a session lost); other states without a phone id keep it.
        await Instance.raw(
            "UPDATE instances SET connection_state = {},"
            " phone_id = CASE WHEN {} = 'qr' THEN NULL ELSE coalesce({}, phone_id) END, updated_at = now()"
            " WHERE id = {} AND generation <= {}",
            event.state.value,
            event.state.value,
            event.phone_id,
            event.instance_id,
            event.generation,
        )
    elif isinstance(event, MessageStatusChanged):
        await record_message_statuses([event])


async def record_message_statuses(events: Sequence[MessageStatusChanged]) -> None:
    """Remember that each message reached its status (once), in one statement.

    A repeated (message, status) in the batch is dropped first: the statement may update a
    row it conflicts with only once.
    """
    unique = list({(e.message_id, e.status): e for e in events}.values())  # in the order first seen
    if not unique:
        return
    assert DB.pool is not None, "open_database() first"
    async with DB.pool.acquire() as connection:  # plain asyncpg: this is the hot path
        await connection.execute(
            RECORD_MESSAGE_STATUSES,
            [e.message_id for e in unique],
            [e.status.value for e in unique],
            [e.reason for e in unique],
        )
