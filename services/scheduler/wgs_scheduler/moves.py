"""Moving instances between nodes: migration on request, drain of a node, failover of a lost node.

Every move bumps the instance's generation, so the node it leaves can never run it
again (fencing). A migration first asks the old node to hand the instance off
(final snapshot, then stop); only once that succeeded is the instance re-placed,
and the answer waits until the new node reports it running. A lost node cannot
hand off: its instances are re-placed from their last stored snapshot.
"""

import asyncio
import logging
from collections import defaultdict
from typing import Any

import msgspec
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from wgs_contracts import subjects
from wgs_contracts.messages import (
    DrainReply,
    HandOffReply,
    HandOffRequest,
    InstanceStatus,
    InstanceStatusChanged,
    MigrateReply,
    NodeStatusChanged,
)
from wgs_kit.messaging import decode, encode, publish_core

from wgs_scheduler import store
from wgs_scheduler.placement import NodeState, NoFit, Request, choose_node
from wgs_scheduler.service import Scheduler

log = logging.getLogger(__name__)
ANY_NODE = "any"


def placement_request(row: dict[str, Any]) -> Request:
    """What an instance row needs from a node."""
    return Request(provider=row["provider"], nano_cpus=row["nano_cpus"], memory_bytes=row["memory_bytes"])


class Mover:
    """Migrations, drains and failovers; one move per instance at a time."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.settings = scheduler.settings
        self._locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def migrate(self, instance_id: int, target: str) -> MigrateReply:
        """Move a running instance to the node named `target` (or the best other node for "any")."""
        async with self._locks[instance_id]:
            row = await store.fetch_instance(instance_id)
            if row is None or row["desired_state"] != "running":
                return MigrateReply(status=404, error="Instance not found")
            if row["node_id"] is None:
                return MigrateReply(status=409, error="The instance is not placed on a node yet.")
            nodes = await store.node_states(self.settings.node_timeout_seconds)
            source = next(n for n in nodes if n.id == row["node_id"])
            choice = self._target(row, source, nodes, target)
            if isinstance(choice, MigrateReply):
                return choice
            return await self._migrate(row, source, choice)

    def _target(
        self, row: dict[str, Any], source: NodeState, nodes: list[NodeState], target: str
    ) -> NodeState | MigrateReply:
        """The node to move to, or the MigrateReply refusing the move."""
        if target == ANY_NODE:
            choice = choose_node(placement_request(row), [n for n in nodes if n.id != source.id])
            if isinstance(choice, NoFit):
                return MigrateReply(status=503, error=f"No other node can take the instance: {choice.reason}")
            return choice
        named = next((n for n in nodes if n.name == target), None)
        if named is None:
            return MigrateReply(status=404, error=f"Node {target!r} not found.")
        if named.id == source.id:
            return MigrateReply(status=409, error=f"The instance already runs on node {target!r}.")
        if not named.schedulable:
            return MigrateReply(status=409, error=f"Node {target!r} is cordoned.")
        choice = choose_node(placement_request(row), [named])
        if isinstance(choice, NoFit):
            return MigrateReply(status=503, error=f"Node {target!r} cannot take the instance: {choice.reason}")
        return choice

    async def _migrate(self, row: dict[str, Any], source: NodeState, target: NodeState) -> MigrateReply:
        instance_id, generation = row["id"], row["generation"]
        reason = f"migrating from {source.name} to {target.name}"
        await store.set_status(instance_id, generation, InstanceStatus.MIGRATING.value, reason)
        await self.scheduler.publish_status(row, source.name, InstanceStatus.MIGRATING, reason)
        if source.alive:
            refusal = await self._hand_off(source.name, instance_id, generation)
            if refusal is not None:
                await store.set_status(instance_id, generation, InstanceStatus.RUNNING.value, refusal)
                await self.scheduler.publish_status(row, source.name, InstanceStatus.RUNNING, refusal)
                return MigrateReply(
                    status=503, error=f"Migration failed, the instance stays on {source.name}: {refusal}"
                )
        return await self._start_moved(row, target, reason)

    async def _hand_off(self, node: str, instance_id: int, generation: int) -> str | None:
        """Ask the node to stop the instance after a final snapshot; None when done, else why not."""
        request = HandOffRequest(instance_id=instance_id, generation=generation)
        try:
            response = await self.scheduler.broker.connection.request(
                subjects.node_handoff(node), encode(request), timeout=self.settings.handoff_timeout_seconds
            )
        except NoRespondersError:
            return f"node {node} is not answering"
        except (NatsTimeoutError, TimeoutError):
            return f"node {node} did not hand the instance off within {self.settings.handoff_timeout_seconds:g} s"
        reply = decode(response.data, HandOffReply)
        return None if reply.ok else reply.error or "hand-off refused"

    async def _start_moved(self, row: dict[str, Any], target: NodeState, reason: str) -> MigrateReply:
        """Re-place the instance on `target` and wait until it runs there."""
        nc = self.scheduler.broker.connection
        events = await nc.subscribe(subjects.instance_status(row["id"]))
        try:
            moved = await store.move(row["id"], row["generation"], target.id, reason)
            if moved is None:
                return MigrateReply(status=409, error="The instance changed while migrating; try again.")
            log.info("instance %d moved to %s at generation %d", row["id"], target.name, moved["generation"])
            await self.scheduler.publish_status(moved, target.name, InstanceStatus.SCHEDULED, reason)
            await self.scheduler.send_start(moved, target.name)
            outcome = await self._wait_started(events, moved["generation"])
        finally:
            await events.unsubscribe()
        if outcome is None:
            return MigrateReply(status=504, node=target.name, error=f"Moved to {target.name} but not running yet.")
        if outcome.status is InstanceStatus.FAILED:
            return MigrateReply(status=500, node=target.name, error=f"Failed on {target.name}: {outcome.reason}")
        return MigrateReply(status=200, node=target.name, running=outcome)

    async def _wait_started(self, events: Subscription, generation: int) -> InstanceStatusChanged | None:
        """The first `running` or `failed` event at `generation`, or None after the migration timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.migrate_timeout_seconds
        while (remaining := deadline - loop.time()) > 0:
            try:
                message = await events.next_msg(timeout=remaining)
            except (NatsTimeoutError, TimeoutError):
                return None
            try:
                event = decode(message.data, InstanceStatusChanged)
            except msgspec.DecodeError:
                continue
            if event.generation == generation and event.status in (InstanceStatus.RUNNING, InstanceStatus.FAILED):
                return event
        return None

    async def drain(self, node_name: str) -> DrainReply:
        """Cordon the node, then migrate every instance off it."""
        node = await store.node_by_name(node_name)
        if node is None:
            return DrainReply(status=404, node=node_name, error=f"Node {node_name!r} not found.")
        await store.set_schedulable(node["id"], False)
        moved: list[int] = []
        failed: dict[int, str] = {}
        for row in await store.instances_on(node["id"]):
            reply = await self.migrate(row["id"], ANY_NODE)
            if reply.status == 200:
                moved.append(row["id"])
            else:
                failed[row["id"]] = reply.error or f"status {reply.status}"
        log.info("drained node %s: %d moved, %d failed", node_name, len(moved), len(failed))
        return DrainReply(status=200, node=node_name, moved=tuple(moved), failed=failed)

    async def fail_over(self) -> None:
        """Mark silent nodes lost; re-place the instances of lost nodes from their last snapshot.

        An instance no other node can take stays where it is (its node may come back) and is
        tried again on the next pass.
        """
        newly_lost = {node["name"] for node in await store.mark_lost_nodes(self.settings.node_timeout_seconds)}
        for node in await store.lost_nodes():
            moved = []
            for row in await store.instances_on(node["id"]):
                async with self._locks[row["id"]]:
                    if await self._re_place(row, node["name"]):
                        moved.append(row["id"])
            if node["name"] in newly_lost:
                log.warning("node %s is lost: %d instances re-placed", node["name"], len(moved))
                event = NodeStatusChanged(node=node["name"], status="lost", moved_instances=tuple(moved))
                await publish_core(self.scheduler.broker, subjects.node_status(node["name"]), event)

    async def _re_place(self, row: dict[str, Any], lost_node: str) -> bool:
        """Move one instance of a lost node to the best other node; False when none can take it now."""
        nodes = await store.node_states(self.settings.node_timeout_seconds)
        choice = choose_node(placement_request(row), [n for n in nodes if n.id != row["node_id"]])
        if isinstance(choice, NoFit):
            return False
        reason = f"node {lost_node} lost; moved to {choice.name}"
        moved = await store.move(row["id"], row["generation"], choice.id, reason)
        if moved is None:
            return False
        await self.scheduler.publish_status(moved, choice.name, InstanceStatus.SCHEDULED, reason)
        await self.scheduler.send_start(moved, choice.name)
        return True
