"""The scheduler's decisions: place, start, stop, and answer node agents."""

import logging
from typing import Any

from faststream.nats import NatsBroker
from wgs_contracts import streams, subjects
from wgs_contracts.messages import (
    AssignmentsReply,
    ControlCommand,
    CreateInstance,
    DeleteInstance,
    InstanceStatus,
    InstanceStatusChanged,
    NodeHeartbeat,
    NodeStatusChanged,
    Provider,
    StopInstance,
)
from wgs_kit.messaging import publish_core, publish_durable

from wgs_scheduler import store
from wgs_scheduler.config import Settings
from wgs_scheduler.placement import NoFit, Request, choose_node

log = logging.getLogger(__name__)


class Scheduler:
    """Handles control-plane commands; every handler is idempotent."""

    def __init__(self, broker: NatsBroker, settings: Settings) -> None:
        self.broker = broker
        self.settings = settings

    async def handle(self, command: ControlCommand) -> None:
        """Dispatch one command."""
        if isinstance(command, CreateInstance):
            await self.create(command.instance_id)
        elif isinstance(command, DeleteInstance):
            await self.delete(command.instance_id)

    async def create(self, instance_id: int) -> None:
        """Place a new instance, or re-send the start of an already placed one (redelivery)."""
        row = await store.fetch_instance(instance_id)
        if row is None or row["desired_state"] != "running":
            log.info("create of instance %d: nothing to do (gone or deleted)", instance_id)
            return
        if row["node_id"] is not None:
            await self.send_start(row)
            return
        outcome = await self.try_place(row)
        if isinstance(outcome, NoFit):
            log.info("instance %d unschedulable: %s", instance_id, outcome.reason)
            await self.publish_status(row, None, InstanceStatus.UNSCHEDULABLE, outcome.reason)

    async def try_place(self, row: dict[str, Any]) -> NoFit | None:
        """Choose a node and bind the instance to it; NoFit when none fits."""
        request = Request(provider=row["provider"], nano_cpus=row["nano_cpus"], memory_bytes=row["memory_bytes"])
        choice = choose_node(request, await store.node_states(self.settings.node_timeout_seconds))
        if isinstance(choice, NoFit):
            return choice
        placed = await store.place(row["id"], choice.id)
        if placed is None:
            return None
        log.info("instance %d placed on %s at generation %d", row["id"], choice.name, placed["generation"])
        await self.publish_status(placed, choice.name, InstanceStatus.SCHEDULED, None)
        await self.send_start(placed, choice.name)
        return None

    async def retry_pending(self) -> None:
        """Try again to place instances that found no node before."""
        for instance_id in await store.pending_instance_ids(min_age_seconds=2.0):
            row = await store.fetch_instance(instance_id)
            if row is not None and row["node_id"] is None:
                await self.try_place(row)

    async def delete(self, instance_id: int) -> None:
        """Stop and remove the instance's container wherever it is placed, and drop its sandbox phone's mail.

        The mail goes here, not only on the node, since an instance never placed, or placed on a
        node that is lost, has no agent to drop it, and a later instance with the same phone
        number must not get it.
        """
        row = await store.fetch_instance(instance_id)
        if row is None:
            return
        if row["provider"] == Provider.SANDBOX.value and row["phone_number"]:
            js = self.broker.connection.jetstream()
            await js.purge_stream(streams.SANDBOX_MAIL.name, subject=subjects.sandbox_mail(row["phone_number"]))
        if row["node_id"] is None:
            await self.publish_status(row, None, InstanceStatus.REMOVED, "deleted before placement")
            return
        node = await store.node_name(row["node_id"])
        if node is None:
            return
        stop = StopInstance(
            instance_id=instance_id, tenant_id=row["tenant_id"], generation=row["generation"], remove=True
        )
        await publish_durable(
            self.broker,
            subjects.node_commands(node),
            stop,
            msg_id=f"instance.stop:{instance_id}:{row['generation']}",
            stream=streams.NODE_COMMANDS,
        )

    async def send_start(self, row: dict[str, Any], node: str | None = None) -> None:
        """Publish the start command of an instance at its generation (deduplicated by id)."""
        node = node or await store.node_name(row["node_id"])
        if node is None:
            return
        await publish_durable(
            self.broker,
            subjects.node_commands(node),
            store.start_command(row),
            msg_id=f"instance.start:{row['id']}:{row['generation']}",
            stream=streams.NODE_COMMANDS,
        )

    async def publish_status(
        self, row: dict[str, Any], node: str | None, status: InstanceStatus, reason: str | None
    ) -> None:
        """Publish a status event decided by the scheduler."""
        event = InstanceStatusChanged(
            instance_id=row["id"],
            tenant_id=row["tenant_id"],
            generation=row["generation"],
            node=node,
            status=status,
            reason=reason,
        )
        await publish_durable(
            self.broker,
            subjects.instance_status(row["id"]),
            event,
            msg_id=event.event_id,
            stream=streams.EVENTS,
        )

    async def heartbeat(self, beat: NodeHeartbeat) -> None:
        """Record a node's heartbeat (ignored, with a warning, for unregistered nodes)."""
        was_lost = await store.record_heartbeat(beat)
        if was_lost is None:
            log.warning("heartbeat from unregistered node %r ignored", beat.node)
        elif was_lost:
            log.info("node %s is back", beat.node)
            await publish_core(
                self.broker, subjects.node_status(beat.node), NodeStatusChanged(node=beat.node, status="ready")
            )

    async def assignments(self, node: str) -> AssignmentsReply:
        """The instances a node should run."""
        return AssignmentsReply(node=node, assignments=tuple(await store.assignments(node)))
