"""The AsyncAPI 3 document of the public events, generated from the contract types."""

from typing import Any, Final

import msgspec

from wgs_contracts.instance_events import ConnectionChanged, MessageReceived, MessageStatusChanged, QrChanged
from wgs_contracts.messages import (
    SCHEMA_VERSION,
    ApiKeysRevoked,
    InstanceStatusChanged,
    NodeHeartbeat,
    NodeStatusChanged,
    SchedulerLeaderElected,
    SnapshotTaken,
)
from wgs_contracts.state import SnapshotFallback

REF_TEMPLATE: Final = "#/components/schemas/{name}"
INSTANCE_ID = {"description": "Instance id (an integer)."}
NODE_NAME = {"description": "Node name."}
TENANT_ID = {"description": "Tenant id (an integer)."}

# channel id: (address, message type, parameters, description)
CHANNELS: Final[dict[str, tuple[str, type[msgspec.Struct], dict[str, Any], str]]] = {
    "instanceStatus": (
        "wgs.evt.instance.{instanceId}.status",
        InstanceStatusChanged,
        {"instanceId": INSTANCE_ID},
        "Lifecycle of an instance (JetStream stream WGS_EVENTS).",
    ),
    "instanceMessage": (
        "wgs.evt.instance.{instanceId}.message",
        MessageReceived,
        {"instanceId": INSTANCE_ID},
        "Inbound WhatsApp messages (JetStream stream WGS_EVENTS).",
    ),
    "instanceMessageStatus": (
        "wgs.evt.instance.{instanceId}.message_status",
        MessageStatusChanged,
        {"instanceId": INSTANCE_ID},
        "Sent, delivered, read or failed sends (JetStream stream WGS_EVENTS).",
    ),
    "instanceQr": (
        "wgs.evt.instance.{instanceId}.qr",
        QrChanged,
        {"instanceId": INSTANCE_ID},
        "A new pairing QR (JetStream stream WGS_EVENTS).",
    ),
    "instanceConnection": (
        "wgs.evt.instance.{instanceId}.connection",
        ConnectionChanged,
        {"instanceId": INSTANCE_ID},
        "WhatsApp connection state (JetStream stream WGS_EVENTS).",
    ),
    "instanceSnapshot": (
        "wgs.evt.instance.{instanceId}.snapshot",
        SnapshotFallback,
        {"instanceId": INSTANCE_ID},
        "A restore fell back to an older snapshot because the newest was corrupt (JetStream stream WGS_EVENTS).",
    ),
    "nodeHeartbeat": (
        "wgs.evt.node.{node}.heartbeat",
        NodeHeartbeat,
        {"node": NODE_NAME},
        "Liveness and capacity of a node (core NATS, every few seconds).",
    ),
    "nodeStatus": (
        "wgs.evt.node.{node}.status",
        NodeStatusChanged,
        {"node": NODE_NAME},
        "The scheduler marked a node lost (its instances moved) or ready again (core NATS).",
    ),
    "nodeSnapshot": (
        "wgs.evt.node.{node}.snapshot",
        SnapshotTaken,
        {"node": NODE_NAME},
        "A node agent stored or skipped an instance snapshot, with the pause it cost (core NATS).",
    ),
    "tenantKeysRevoked": (
        "wgs.evt.tenant.{tenantId}.keys_revoked",
        ApiKeysRevoked,
        {"tenantId": TENANT_ID},
        "Keys of a tenant were revoked; every API process stops accepting them at once (core NATS).",
    ),
    "schedulerLeader": (
        "wgs.evt.scheduler.leader",
        SchedulerLeaderElected,
        {},
        "A scheduler took the lead (core NATS).",
    ),
}


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document: one receive operation per public channel."""
    types = [message for _, message, _, _ in CHANNELS.values()]
    _, schemas = msgspec.json.schema_components(types, ref_template=REF_TEMPLATE)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for channel_id, (address, message, parameters, description) in CHANNELS.items():
        name = message.__name__
        messages[name] = {
            "name": name,
            "contentType": "application/json",
            "payload": {"$ref": REF_TEMPLATE.format(name=name)},
            "headers": {
                "type": "object",
                "properties": {
                    "Nats-Msg-Id": {"type": "string", "description": "Deduplication key (JetStream)."},
                    "Wgs-Trace-Id": {"type": "string", "description": "Trace id logged on every hop."},
                },
            },
        }
        channel: dict[str, Any] = {
            "address": address,
            "description": description,
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        if parameters:
            channel["parameters"] = parameters
        channels[channel_id] = channel
        operations[f"receive{channel_id[0].upper()}{channel_id[1:]}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel_id}"},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "WhatsApp gateway events",
            "version": str(SCHEMA_VERSION),
            "description": "Public events on NATS (`wgs.evt.>`). Bodies are JSON with a `type` tag "
            "and a `schema_version`; see docs/events.md.",
        },
        "defaultContentType": "application/json",
        "servers": {"nats": {"host": "127.0.0.1:4222", "protocol": "nats"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }
