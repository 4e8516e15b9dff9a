"""Recording instance events on the rows the API serves (idempotent: events may repeat)."""

from wgs_contracts.instance_events import ConnectionChanged, InstanceEvent, MessageStatusChanged
from wgs_contracts.messages import InstanceStatusChanged
from wgs_db.tables import Instance

from wgs_api.domain.instances.status import apply_status


async def apply_event(event: InstanceEvent) -> None:
    """Apply one event: instance status, connection state, or a message's status."""
    if isinstance(event, InstanceStatusChanged):
        await apply_status(event)
    elif isinstance(event, ConnectionChanged):
        await Instance.raw(
            "UPDATE instances SET connection_state = {}, phone_id = coalesce({}, phone_id), updated_at = now()"
            " WHERE id = {} AND generation <= {}",
            event.state.value,
            event.phone_id,
            event.instance_id,
            event.generation,
        )
    elif isinstance(event, MessageStatusChanged):
        await record_message_status(event.message_id, event.status.value, event.reason)


async def record_message_status(message_id: str, status: str, reason: str | None) -> None:
    """Remember that a message reached `status` (once)."""
    await Instance.raw(
        "INSERT INTO message_statuses (message_id, status, reason) VALUES ({}, {}, {}) ON CONFLICT DO NOTHING",
        message_id,
        status,
        reason,
    )
