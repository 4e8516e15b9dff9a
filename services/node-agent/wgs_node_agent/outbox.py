"""Turning a provider's outbox events into contract events (pure)."""

from typing import Any

import msgspec
from wgs_contracts.instance_events import (
    ConnectionChanged,
    MessageReceived,
    MessageStatusChanged,
    ProviderEvent,
    QrChanged,
    provider_event_id,
)
from wgs_contracts.provider_api import ConnectionData, MessageData, MessageStatusData, OutboxEvent, QrData


def to_contract_event(event: OutboxEvent, *, instance_id: int, tenant_id: int, generation: int) -> ProviderEvent | None:
    """The public event of an outbox entry; None for internal (`sandbox.*`) or unknown types."""
    common: dict[str, Any] = {
        "event_id": provider_event_id(instance_id, generation, event.seq),
        "instance_id": instance_id,
        "tenant_id": tenant_id,
        "generation": generation,
        "seq": event.seq,
        "at": event.at,
    }
    if event.type == "message":
        message = msgspec.json.decode(event.data, type=MessageData)
        return MessageReceived(
            **common,
            message_id=message.message_id,
            sender=message.sender,
            recipient=message.recipient,
            content=message.content,
        )
    if event.type == "message.status":
        status = msgspec.json.decode(event.data, type=MessageStatusData)
        return MessageStatusChanged(**common, message_id=status.message_id, status=status.status, reason=status.reason)
    if event.type == "qr":
        return QrChanged(**common, qr=msgspec.json.decode(event.data, type=QrData).qr)
    if event.type == "connection":
        connection = msgspec.json.decode(event.data, type=ConnectionData)
        return ConnectionChanged(
            **common, state=connection.state, phone_id=connection.phone_id, reason=connection.reason
        )
    return None
