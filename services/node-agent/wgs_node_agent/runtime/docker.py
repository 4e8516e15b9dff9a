"""The Docker runtime: one labelled container per instance, driven through aiodocker.

The container name is fixed per instance (`wgs-instance-<id>`), so two
concurrent or repeated starts can never create two containers: the engine
refuses the second name and the agent adopts the existing container.
"""

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import aiodocker
from aiodocker.containers import DockerContainer
from wgs_contracts import labels
from wgs_contracts.messages import InstanceSpec
from wgs_kit.waiting import wait_until

from wgs_node_agent.runtime.base import (
    PROVIDER_UID,
    ContainerEvent,
    ContainerId,
    InstancePaths,
    ManagedContainer,
    StartError,
)

log = logging.getLogger(__name__)
IMAGE_PREFIX = "wgs-provider-"
CONTAINER_SOCKET_DIR = "/run/wgs"
CONTAINER_STATE_DIR = "/data"
STOP_POLL_SECONDS = 0.05
STOP_RESEND_SECONDS = 0.25
PROVIDERS_TTL_SECONDS = 30.0
FREEZE_TIMEOUT_SECONDS = 2.0


async def freeze(container: DockerContainer, timeout: float = FREEZE_TIMEOUT_SECONDS) -> None:
    """Pause a container, retrying runc's transient "unable to freeze" until `timeout` s.

    runc gives up when the cgroup does not report frozen quickly (a process
    forking or in uninterruptible sleep, a loaded host) and thaws it again;
    a later attempt usually succeeds. Any other error is raised at once.
    """

    async def attempt() -> bool:
        try:
            await container.pause()
        except aiodocker.DockerError as exc:
            if exc.status == 500 and "unable to freeze" in str(exc.message):
                log.info("container %s: freeze did not settle, retrying", container.id[:12])
                return False
            raise
        return True

    await wait_until(attempt, timeout=timeout, interval=0.05, what=f"container {container.id[:12]} frozen")


def container_name(instance_id: int) -> str:
    """The one name an instance's container can have on an engine."""
    return f"wgs-instance-{instance_id}"


def managed_from_labels(
    container_id: str, container_labels: dict[str, str], running: bool, *, paused: bool = False
) -> ManagedContainer:
    """Rebuild what the agent knows of a container from its labels."""
    return ManagedContainer(
        container_id=ContainerId(container_id),
        instance_id=int(container_labels[labels.INSTANCE_ID]),
        tenant_id=int(container_labels.get(labels.TENANT_ID, "0")),
        generation=int(container_labels.get(labels.GENERATION, "0")),
        provider=container_labels.get(labels.PROVIDER, ""),
        running=running,
        paused=paused,
    )


def container_config(
    spec: InstanceSpec, generation: int, paths: InstancePaths, *, node: str, network_mode: str
) -> dict[str, Any]:
    """The Docker create body of an instance: limits, labels, non-root user, its two folders."""
    return {
        "Image": labels.provider_image(spec.provider.value),
        "User": f"{PROVIDER_UID}:{PROVIDER_UID}",
        "Env": [
            f"WGS_INSTANCE_ID={spec.instance_id}",
            f"WGS_SOCKET={CONTAINER_SOCKET_DIR}/{paths.socket.name}",
            f"WGS_DATA_DIR={CONTAINER_STATE_DIR}",
            f"WGS_PHONE={spec.phone_number}",
        ],
        "Labels": {
            labels.MANAGED: "true",
            labels.INSTANCE_ID: str(spec.instance_id),
            labels.TENANT_ID: str(spec.tenant_id),
            labels.GENERATION: str(generation),
            labels.PROVIDER: spec.provider.value,
            labels.NODE: node,
        },
        "HostConfig": {
            "NanoCpus": spec.nano_cpus,
            "Memory": spec.memory_bytes,
            "MemorySwap": spec.memory_bytes,
            "PidsLimit": spec.pids_limit,
            # The agent restarts crashed containers itself: an engine restarting them on its own
            # would revive a moved instance on a node coming back from the dead (two running at once).
            "RestartPolicy": {"Name": "no"},
            # An init as PID 1 forwards SIGTERM, so a provider stopped while still starting up
            # exits at once instead of ignoring the signal until the stop timeout kills it.
            "Init": True,
            "NetworkMode": network_mode,
            "ReadonlyRootfs": True,
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            "Tmpfs": {"/tmp": "rw,size=16m"},
            "Binds": [
                f"{paths.state_dir}:{CONTAINER_STATE_DIR}:rw",
                f"{paths.socket_dir}:{CONTAINER_SOCKET_DIR}:rw",
            ],
        },
    }


def prepare_folders(paths: InstancePaths) -> None:
    """Create the instance's folders, owned by the provider's non-root user, with everything in them.

    A restored state folder was unpacked by the agent: its files must become the provider's again.
    """
    for folder in (paths.state_dir, paths.socket_dir):
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            for root, dirs, files in os.walk(folder):
                os.chown(root, PROVIDER_UID, PROVIDER_UID)
                for name in dirs + files:
                    os.chown(os.path.join(root, name), PROVIDER_UID, PROVIDER_UID, follow_symlinks=False)
        folder.chmod(0o770)


class DockerRuntime:
    """Provider containers on one Docker engine."""

    name = "docker"

    def __init__(self, docker_host: str, *, node: str, network_mode: str) -> None:
        self.docker = aiodocker.Docker(url=docker_host)
        self.node = node
        self.network_mode = network_mode
        self._providers: tuple[float, set[str]] | None = None

    async def ping(self) -> bool:
        """True when the engine answers."""
        try:
            await self.docker.version()
        except Exception:
            return False
        return True

    async def list_managed(self) -> list[ManagedContainer]:
        """Every labelled container on the engine."""
        found = await self.docker.containers.list(all=True, filters={"label": [f"{labels.MANAGED}=true"]})
        return [
            managed_from_labels(
                c.id,
                c._container.get("Labels") or {},
                c._container.get("State") in ("running", "paused"),
                paused=c._container.get("State") == "paused",
            )
            for c in found
        ]

    async def _find(self, instance_id: int) -> DockerContainer | None:
        try:
            container = await self.docker.containers.get(container_name(instance_id))
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return None
            raise
        return container

    async def start(self, spec: InstanceSpec, generation: int, paths: InstancePaths) -> ManagedContainer:
        """Create and start the container, adopting one at the same generation."""
        existing = await self._find(spec.instance_id)
        if existing is not None:
            existing_labels = existing._container["Config"]["Labels"]
            current = managed_from_labels(existing.id, existing_labels, existing._container["State"]["Running"])
            if current.generation == generation:
                if existing._container["State"].get("Paused"):
                    await existing.unpause()
                elif not current.running:
                    await existing.start()
                log.info("adopted container %s of instance %d", existing.id[:12], spec.instance_id)
                return ManagedContainer(**{**current.__dict__, "running": True})
            await self.remove(current, stop_timeout=10)
        prepare_folders(paths)
        config = container_config(spec, generation, paths, node=self.node, network_mode=self.network_mode)
        try:
            container = await self.docker.containers.create(config, name=container_name(spec.instance_id))
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                raise StartError(f"image {config['Image']} is not available on node {self.node}") from None
            if exc.status == 409:
                return await self.start(spec, generation, paths)
            raise
        await container.start()
        log.info("started container %s of instance %d gen %d", container.id[:12], spec.instance_id, generation)
        return ManagedContainer(
            container_id=ContainerId(container.id),
            instance_id=spec.instance_id,
            tenant_id=spec.tenant_id,
            generation=generation,
            provider=spec.provider.value,
            running=True,
        )

    async def remove(self, container: ManagedContainer, stop_timeout: int) -> None:
        """Stop gracefully, then delete; a container already gone is fine."""
        try:
            handle = await self.docker.containers.get(container.container_id)
            await self._stop(handle, stop_timeout)
            await handle.delete(force=True)
        except aiodocker.DockerError as exc:
            if exc.status not in (404, 409):
                raise
        log.info("removed container %s of instance %d", container.container_id[:12], container.instance_id)

    async def pause(self, container: ManagedContainer) -> None:
        """Freeze the container's processes (cgroup freezer)."""
        await freeze(self.docker.containers.container(container.container_id))

    async def unpause(self, container: ManagedContainer) -> None:
        """Thaw the container."""
        await self.docker.containers.container(container.container_id).unpause()

    async def _stop(self, handle: DockerContainer, timeout: float) -> None:
        """SIGTERM, repeated every STOP_RESEND_SECONDS until the container exits; SIGKILL after `timeout`.

        A single SIGTERM (what `docker stop` sends) is lost when it arrives while the
        container's init is still starting; repeating it makes the stop graceful anyway.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                await handle.kill(signal="SIGTERM")
            except aiodocker.DockerError as exc:
                if exc.status == 409:  # not running
                    return
                raise
            resend_at = min(deadline, loop.time() + STOP_RESEND_SECONDS)
            while loop.time() < resend_at:
                if not (await handle.show())["State"]["Running"]:
                    return
                await asyncio.sleep(STOP_POLL_SECONDS)
        await handle.kill(signal="SIGKILL")

    async def events(self) -> AsyncIterator[ContainerEvent]:
        """`die` and `start` events of managed containers from the engine's event stream."""
        subscriber = self.docker.events.subscribe(
            filters=json.dumps({"type": ["container"], "label": [f"{labels.MANAGED}=true"], "event": ["die", "start"]})
        )
        try:
            while (event := await subscriber.get()) is not None:
                attributes = event.get("Actor", {}).get("Attributes", {})
                if labels.INSTANCE_ID not in attributes:
                    continue
                action = event.get("Action", "")
                exit_code = attributes.get("exitCode")
                yield ContainerEvent(
                    container=managed_from_labels(event["Actor"]["ID"], attributes, action == "start"),
                    action=action,
                    exit_code=int(exit_code) if exit_code is not None else None,
                    at_ns=int(event.get("timeNano", 0)),
                )
        finally:
            await self.docker.events.stop()

    async def providers(self) -> set[str]:
        """Providers whose images are present on this engine (listed at most every PROVIDERS_TTL s)."""
        now = asyncio.get_running_loop().time()
        if self._providers is None or now - self._providers[0] > PROVIDERS_TTL_SECONDS:
            self._providers = (now, await self._list_providers())
        return self._providers[1]

    async def _list_providers(self) -> set[str]:
        images = await self.docker.images.list(filters={"reference": [f"{IMAGE_PREFIX}*"]})
        names = set()
        for image in images:
            for tag in image.get("RepoTags") or []:
                repository = tag.rsplit(":", 1)[0]
                if repository.startswith(IMAGE_PREFIX):
                    names.add(repository.removeprefix(IMAGE_PREFIX))
        return names

    async def close(self) -> None:
        """Close the engine connection."""
        await self.docker.close()
