"""The node agent's behaviour: run what the control plane placed here, and nothing else.

Commands (start/stop) and a periodic reconcile against the scheduler's list of
assignments both lead to the same idempotent actions, serialized per
instance. Generations fence stale commands: an instance is never run at a
generation older than the newest one this node has seen.
"""

import asyncio
import logging
import shutil
from collections import OrderedDict, defaultdict
from collections.abc import Coroutine
from typing import Any

from faststream.nats import NatsBroker
from nats.errors import NoRespondersError
from wgs_contracts import streams, subjects
from wgs_contracts.instance_events import ProviderCall, ProviderReply, ProviderSends, ProviderSendsReply
from wgs_contracts.messages import (
    AssignmentsReply,
    AssignmentsRequest,
    HandOffReply,
    HandOffRequest,
    InstanceSpec,
    InstanceStatus,
    InstanceStatusChanged,
    NodeCommand,
    NodeHeartbeat,
    SnapshotTaken,
    StartInstance,
    StopInstance,
)
from wgs_kit.messaging import decode, encode, publish_core, publish_durable, redelivery_delay, trace_headers
from wgs_kit.snapshots import SnapshotError

from wgs_node_agent.config import Settings
from wgs_node_agent.fencing import GenerationLedger
from wgs_node_agent.network import SandboxNetwork
from wgs_node_agent.runtime.base import ContainerEvent, InstancePaths, ManagedContainer, Runtime, StartError
from wgs_node_agent.session import InstanceSession
from wgs_node_agent.snapshots import Outcome, Snapshotter, read_marker

log = logging.getLogger(__name__)
NOT_HERE = ProviderReply(status=404, body=b'{"error": "instance is not running on this node"}', relayed=False)
SEEN_EVENTS_LIMIT = 1024
HANDED_OFF_SECONDS = 60.0  # a handed-off generation is not started here again for this long
CRASH_RESET_SECONDS = 60.0  # a container that ran this long since its last crash starts over at the first backoff


class NodeAgent:
    """Drives one node's runtime from commands and reconciliation, and reports status."""

    def __init__(self, settings: Settings, runtime: Runtime, broker: NatsBroker) -> None:
        self.settings = settings
        self.runtime = runtime
        self.broker = broker
        self.ledger = GenerationLedger(settings.data_dir / "generations.json")
        self._locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._touched_at: dict[int, float] = {}
        # Containers the agent stops or removes itself (kept after: their `die` event may come late).
        self._removed_by_agent: OrderedDict[str, None] = OrderedDict()
        self._reported_deaths: set[str] = set()
        self._seen_events: OrderedDict[tuple[str, str, int], None] = OrderedDict()
        self._handed_off: dict[int, tuple[int, float]] = {}  # instance → (generation, when)
        self._crashes: dict[str, tuple[int, float]] = {}  # container → (crashes in a row, when last)
        self._restarting: set[int] = set()  # instances whose crashed container the agent restarts itself
        self._background: set[asyncio.Task[None]] = set()
        self.sessions: dict[int, InstanceSession] = {}
        self.network = SandboxNetwork(lambda: broker.connection, retry_seconds=settings.sandbox_retry_seconds)
        self.snapshots = Snapshotter(
            lambda: broker.connection, restore_timeout_seconds=settings.restore_timeout_seconds
        )

    def paths(self, instance_id: int) -> InstancePaths:
        """The host folders of an instance on this node."""
        return InstancePaths.under(self.settings.data_dir, instance_id)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in the background; it is cancelled when the agent shuts down."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _was_handed_off(self, instance_id: int, generation: int) -> bool:
        handed = self._handed_off.get(instance_id)
        now = asyncio.get_running_loop().time()
        return handed is not None and generation <= handed[0] and now - handed[1] < HANDED_OFF_SECONDS

    def _touch(self, instance_id: int) -> None:
        self._touched_at[instance_id] = asyncio.get_running_loop().time()

    async def handle(self, command: NodeCommand) -> None:
        """Apply one command from the control plane."""
        if isinstance(command, StartInstance):
            await self.start(command.spec, command.generation)
        elif isinstance(command, StopInstance):
            await self.stop(command, remove=command.remove)

    async def start(self, spec: InstanceSpec, generation: int) -> None:
        """Run the instance at `generation` unless a newer generation has been seen."""
        async with self._locks[spec.instance_id]:
            self._touch(spec.instance_id)
            if self.ledger.is_stale(spec.instance_id, generation) or self._was_handed_off(spec.instance_id, generation):
                log.info("ignoring start of instance %d gen %d: stale", spec.instance_id, generation)
                return
            self.ledger.record(spec.instance_id, generation)
            session = self.sessions.get(spec.instance_id)
            if (
                session is not None
                and session.generation == generation
                and await self._has_container(spec.instance_id, generation, running=True)
            ):
                return  # already runs (a repeated command, or a reconcile that listed before it started)
            await self.report(spec.instance_id, spec.tenant_id, generation, InstanceStatus.STARTING)
            paths = self.paths(spec.instance_id)
            try:
                if generation > 1 and not await self._has_container(spec.instance_id, generation):
                    await self.snapshots.restore_if_newer(spec.instance_id, paths)
                await self.runtime.start(spec, generation, paths)
            except (StartError, SnapshotError, TimeoutError, NoRespondersError) as exc:
                reason = str(exc) if isinstance(exc, StartError) else f"cannot restore its state: {exc!r}"
                log.warning("instance %d cannot start: %s", spec.instance_id, reason)
                await self.report(spec.instance_id, spec.tenant_id, generation, InstanceStatus.FAILED, reason)
                return
            await self._open_session(spec, generation)
            await self.report(spec.instance_id, spec.tenant_id, generation, InstanceStatus.RUNNING)

    async def _has_container(self, instance_id: int, generation: int, *, running: bool = False) -> bool:
        return any(
            c.instance_id == instance_id and c.generation == generation and (c.running or not running)
            for c in await self.runtime.list_managed()
        )

    async def _open_session(self, spec: InstanceSpec, generation: int) -> None:
        """Start the instance's session (pump, drain, phone) unless one runs at this generation."""
        current = self.sessions.get(spec.instance_id)
        if current is not None and current.generation == generation:
            return
        await self._close_session(spec.instance_id)
        session = InstanceSession(
            spec,
            generation,
            self.paths(spec.instance_id),
            self.broker,
            self.network,
            on_paired=lambda: self._spawn(self.snapshot(spec.instance_id, "paired")),
            event_linger_seconds=self.settings.event_linger_seconds,
        )
        await session.start()
        self.sessions[spec.instance_id] = session

    async def _close_session(self, instance_id: int, *, forget_queued: bool = False) -> None:
        session = self.sessions.pop(instance_id, None)
        if session is not None:
            await session.stop()
            if forget_queued:
                await session.forget_queued()

    async def close_sessions(self) -> None:
        """Stop every session and background task (the agent is shutting down; containers keep running)."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for instance_id in list(self.sessions):
            await self._close_session(instance_id)

    # --- snapshots and hand-off -----------------------------------------------------------------

    async def snapshot(self, instance_id: int, reason: str) -> None:
        """Snapshot a running instance: pause, copy its state, unpause, upload if it changed."""
        async with self._locks[instance_id]:
            session = self.sessions.get(instance_id)
            if session is None or self.ledger.is_stale(instance_id, session.generation):
                return
            generation = session.generation
            running = [
                c
                for c in await self.runtime.list_managed()
                if c.instance_id == instance_id and c.generation == generation and c.running
            ]
            if not running:
                return
            container = running[0]

            async def pause() -> None:
                await self.runtime.pause(container)

            async def unpause() -> None:
                await self.runtime.unpause(container)

            try:
                outcome = await self.snapshots.take(
                    instance_id, generation, self.paths(instance_id), pause=pause, unpause=unpause
                )
            except Exception as exc:
                log.warning("instance %d: %s snapshot failed: %r", instance_id, reason, exc)
                return
        await self._publish_snapshot(instance_id, generation, reason, outcome)

    async def snapshot_all(self) -> None:
        """Snapshot every instance this node runs (the periodic pass)."""
        for instance_id in list(self.sessions):
            await self.snapshot(instance_id, "periodic")

    async def handoff(self, request: HandOffRequest) -> HandOffReply:
        """Stop the instance, store its final snapshot and remove its container (a migration's first half).

        On failure the instance runs on here as before and the reply says why.
        """
        instance_id, generation = request.instance_id, request.generation
        async with self._locks[instance_id]:
            self._touch(instance_id)
            if self.ledger.seen(instance_id) != generation:
                return HandOffReply(
                    ok=False, error=f"node runs generation {self.ledger.seen(instance_id)}, not {generation}"
                )
            session = self.sessions.get(instance_id)
            containers = [
                c
                for c in await self.runtime.list_managed()
                if c.instance_id == instance_id and c.generation <= generation
            ]
            if containers and session is None:
                return HandOffReply(ok=False, error="the instance is still starting on its node")
            await self._close_session(instance_id)
            for container in containers:
                await self._remove(container)
            paths = self.paths(instance_id)
            try:
                outcome = await self.snapshots.take(instance_id, generation, paths)
            except Exception as exc:
                log.warning("instance %d: final snapshot failed (%r); it runs on here", instance_id, exc)
                if session is not None:
                    await self.runtime.start(session.spec, generation, paths)
                    await self._open_session(session.spec, generation)
                return HandOffReply(ok=False, error=f"final snapshot failed: {exc!r}")
            self._handed_off[instance_id] = (generation, asyncio.get_running_loop().time())
            self._touch(instance_id)
        await self._publish_snapshot(instance_id, generation, "handoff", outcome)
        marker = read_marker(paths)
        return HandOffReply(ok=True, version=outcome.version or (marker.version if marker else None))

    async def _publish_snapshot(self, instance_id: int, generation: int, reason: str, outcome: Outcome) -> None:
        event = SnapshotTaken(
            node=self.settings.node_name,
            instance_id=instance_id,
            generation=generation,
            reason=reason,
            version=outcome.version,
            size_bytes=outcome.size_bytes,
            pause_ms=outcome.pause_ms,
        )
        await publish_core(self.broker, subjects.node_snapshots(self.settings.node_name), event)

    async def _after_death(self, container: ManagedContainer, exit_code: int | None) -> None:
        """Snapshot a container that stopped on its own; restart it (with backoff) if it crashed."""
        instance_id = container.instance_id
        async with self._locks[instance_id]:
            if (
                self.ledger.is_stale(instance_id, container.generation)
                or container.container_id in self._removed_by_agent
            ):
                return
            try:
                outcome = await self.snapshots.take(instance_id, container.generation, self.paths(instance_id))
            except Exception as exc:
                log.warning("instance %d: snapshot after its container stopped failed: %r", instance_id, exc)
            else:
                await self._publish_snapshot(instance_id, container.generation, "stopped", outcome)
        if exit_code == 0:
            return  # a clean exit: the next reconcile starts it again
        self._restarting.add(instance_id)
        try:
            await self._restart_crashed(container)
        finally:
            self._restarting.discard(instance_id)

    async def _restart_crashed(self, container: ManagedContainer) -> None:
        """Start a crashed container again after a backoff growing with its crashes in a row."""
        instance_id = container.instance_id
        now = asyncio.get_running_loop().time()
        crashes, last = self._crashes.get(container.container_id, (0, now))
        crashes = 1 if now - last > CRASH_RESET_SECONDS else crashes + 1
        self._crashes[container.container_id] = (crashes, now)
        await asyncio.sleep(redelivery_delay(crashes))
        async with self._locks[instance_id]:
            session = self.sessions.get(instance_id)
            if session is None or session.generation != container.generation:
                return
            current = [c for c in await self.runtime.list_managed() if c.container_id == container.container_id]
            if current and not current[0].running:
                log.info("restarting crashed container %s of instance %d", container.container_id[:12], instance_id)
                await self.runtime.start(session.spec, container.generation, self.paths(instance_id))

    async def relay(self, call: ProviderCall) -> ProviderReply:
        """Forward an HTTP call to a provider on this node; 404 when the instance is not here."""
        session = self.sessions.get(call.instance_id)
        if session is None:
            return NOT_HERE
        return await session.relay(call.method, call.path, call.body)

    async def relay_sends(self, sends: ProviderSends) -> ProviderSendsReply:
        """Forward sends to a provider on this node (they go together as one batch call when it takes them)."""
        session = self.sessions.get(sends.instance_id)
        if session is None:
            return ProviderSendsReply(replies=[NOT_HERE] * len(sends.bodies))
        replies = await asyncio.gather(*(session.relay("POST", "/messages", body) for body in sends.bodies))
        return ProviderSendsReply(replies=list(replies))

    async def stop(self, command: StopInstance, *, remove: bool) -> None:
        """Remove the instance's containers at the command's generation or older; newer ones stay."""
        instance_id, generation = command.instance_id, command.generation
        async with self._locks[instance_id]:
            self._touch(instance_id)
            if self.ledger.is_stale(instance_id, generation):
                log.info("ignoring stop of instance %d gen %d: stale", instance_id, generation)
                return
            self.ledger.record(instance_id, generation)
            await self._close_session(instance_id, forget_queued=remove)
            for container in await self.runtime.list_managed():
                if container.instance_id == instance_id and container.generation <= generation:
                    await self._remove(container)
            if remove:
                shutil.rmtree(self.settings.data_dir / "instances" / str(instance_id), ignore_errors=True)
            else:
                try:
                    outcome = await self.snapshots.take(instance_id, generation, self.paths(instance_id))
                except Exception as exc:
                    log.warning("instance %d: snapshot after stop failed: %r", instance_id, exc)
                else:
                    await self._publish_snapshot(instance_id, generation, "stopped", outcome)
            await self.report(
                instance_id,
                command.tenant_id,
                generation,
                InstanceStatus.REMOVED if remove else InstanceStatus.STOPPED,
            )

    async def _remove(self, container: ManagedContainer) -> None:
        self._removed_by_agent[container.container_id] = None
        while len(self._removed_by_agent) > SEEN_EVENTS_LIMIT:
            self._removed_by_agent.popitem(last=False)
        await self.runtime.remove(container, self.settings.stop_timeout_seconds)

    async def on_container_event(self, event: ContainerEvent) -> None:
        """Report a container that died on its own (`failed`, or `stopped` on exit 0) and its restart.

        Deaths the agent caused while removing a container are not reported; the
        engine may repeat an event, so events are deduplicated by (id, action, time).
        """
        key = (event.container.container_id, event.action, event.at_ns)
        if key in self._seen_events:
            return
        self._seen_events[key] = None
        while len(self._seen_events) > SEEN_EVENTS_LIMIT:
            self._seen_events.popitem(last=False)
        container = event.container
        if container.container_id in self._removed_by_agent or self.ledger.is_stale(
            container.instance_id, container.generation
        ):
            return
        if event.action == "die":
            self._reported_deaths.add(container.container_id)
            code = event.exit_code
            status = InstanceStatus.STOPPED if code == 0 else InstanceStatus.FAILED
            reason = f"provider exited with code {code}" + (" (killed: out of memory?)" if code == 137 else "")
            await self.report(container.instance_id, container.tenant_id, container.generation, status, reason)
            self._spawn(self._after_death(container, code))
        elif event.action == "start" and container.container_id in self._reported_deaths:
            self._reported_deaths.discard(container.container_id)
            await self.report(
                container.instance_id, container.tenant_id, container.generation, InstanceStatus.RUNNING, "restarted"
            )

    async def reconcile(self, reply: AssignmentsReply, asked_at: float) -> None:
        """Make the runtime match the assignments; instances touched since `asked_at` are left alone."""
        wanted = {a.spec.instance_id: a for a in reply.assignments}
        actual = await self.runtime.list_managed()
        for container in actual:
            if container.paused:
                await self._thaw(container)
        for container in actual:
            if self._touched_at.get(container.instance_id, 0.0) > asked_at:
                continue
            assignment = wanted.get(container.instance_id)
            if assignment is None or container.generation < assignment.generation:
                async with self._locks[container.instance_id]:
                    log.info(
                        "reconcile: removing container of instance %d gen %d (not assigned here)",
                        container.instance_id,
                        container.generation,
                    )
                    await self._close_session(container.instance_id)
                    await self._remove(container)
                    await self.report(
                        container.instance_id,
                        container.tenant_id,
                        container.generation,
                        InstanceStatus.REMOVED,
                        "not assigned to this node",
                    )
        running = {(c.instance_id, c.generation) for c in actual if c.running}
        for instance_id, assignment in wanted.items():
            if (
                self._touched_at.get(instance_id, 0.0) > asked_at
                or instance_id in self._restarting
                or self._was_handed_off(instance_id, assignment.generation)
            ):
                continue
            if (instance_id, assignment.generation) not in running:
                await self.start(assignment.spec, assignment.generation)
            else:
                await self._open_session(assignment.spec, assignment.generation)

    async def _thaw(self, container: ManagedContainer) -> None:
        """Unpause a container no snapshot is copying (a previous agent died while it was paused)."""
        async with self._locks[container.instance_id]:  # a snapshot in progress holds it while paused
            current = [c for c in await self.runtime.list_managed() if c.container_id == container.container_id]
            if current and current[0].paused:
                log.warning("instance %d: unpausing its container, left paused", container.instance_id)
                await self.runtime.unpause(container)

    async def fetch_assignments(self) -> tuple[AssignmentsReply, float]:
        """Ask the scheduler what this node should run; also returns when it was asked."""
        asked_at = asyncio.get_running_loop().time()
        response = await self.broker.request(
            encode(AssignmentsRequest(node=self.settings.node_name)),
            subjects.node_assignments(self.settings.node_name),
            headers=trace_headers(),
            timeout=5.0,
        )
        return decode(response.body, AssignmentsReply), asked_at

    async def reconcile_once(self) -> bool:
        """One reconcile pass; False when the scheduler did not answer (nothing is changed then)."""
        try:
            reply, asked_at = await self.fetch_assignments()
        except Exception as exc:
            log.warning("cannot fetch assignments (%r): keeping containers as they are", exc)
            return False
        await self.reconcile(reply, asked_at)
        return True

    async def heartbeat(self) -> None:
        """Publish this node's liveness and capacity."""
        containers = await self.runtime.list_managed()
        beat = NodeHeartbeat(
            node=self.settings.node_name,
            runtime=self.runtime.name,
            nano_cpus=self.settings.nano_cpus,
            memory_bytes=self.settings.memory_bytes,
            providers=tuple(sorted(await self.runtime.providers())),
            running_instances=tuple(sorted(c.instance_id for c in containers if c.running)),
        )
        await publish_core(self.broker, subjects.node_heartbeat(self.settings.node_name), beat)

    async def report(
        self,
        instance_id: int,
        tenant_id: int,
        generation: int,
        status: InstanceStatus,
        reason: str | None = None,
    ) -> None:
        """Publish a status event of an instance on this node (durably, deduplicated by event id)."""
        event = InstanceStatusChanged(
            instance_id=instance_id,
            tenant_id=tenant_id,
            generation=generation,
            node=self.settings.node_name,
            status=status,
            reason=reason,
        )
        await publish_durable(
            self.broker,
            subjects.instance_status(instance_id),
            event,
            msg_id=event.event_id,
            stream=streams.EVENTS,
        )
