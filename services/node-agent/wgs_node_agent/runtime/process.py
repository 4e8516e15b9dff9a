"""The process runtime: providers as local subprocesses, for development machines without Docker.

No resource limits and no isolation: `wgs-dev up` falls back to it (and says
so in the log) only when no Docker engine answers. It runs the sandbox only.
"""

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from wgs_contracts.messages import InstanceSpec, Provider
from wgs_kit.procfs import pid_alive, pid_stopped

from wgs_node_agent.runtime.base import ContainerEvent, ContainerId, InstancePaths, ManagedContainer, StartError

log = logging.getLogger(__name__)
RECORD = "process.json"


class ProcessRuntime:
    """Sandbox providers as child processes; each one's record lives beside its folders."""

    name = "process"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.children: dict[int, subprocess.Popen[bytes]] = {}

    def _record_path(self, instance_id: int) -> Path:
        return self.data_dir / "instances" / str(instance_id) / RECORD

    async def list_managed(self) -> list[ManagedContainer]:
        """Every provider process recorded under the data folder that is still alive."""
        found = []
        for record in sorted(self.data_dir.glob(f"instances/*/{RECORD}")):
            data = json.loads(record.read_text())
            found.append(
                ManagedContainer(
                    container_id=ContainerId(f"pid-{data['pid']}"),
                    instance_id=data["instance_id"],
                    tenant_id=data["tenant_id"],
                    generation=data["generation"],
                    provider=data["provider"],
                    running=pid_alive(data["pid"]),
                    paused=pid_stopped(data["pid"]),
                )
            )
        return found

    async def start(self, spec: InstanceSpec, generation: int, paths: InstancePaths) -> ManagedContainer:
        """Start the sandbox as a subprocess, or adopt the live one of the same generation."""
        if spec.provider is not Provider.SANDBOX:
            raise StartError(f"the process runtime runs only the sandbox provider, not {spec.provider}")
        for current in await self.list_managed():
            if current.instance_id == spec.instance_id:
                if current.generation == generation and current.running:
                    return current
                await self.remove(current, stop_timeout=5)
        for folder in (paths.state_dir, paths.socket_dir):
            folder.mkdir(parents=True, exist_ok=True)
        log_file = open(paths.state_dir.parent / "provider.log", "ab")  # noqa: SIM115 - owned by the child
        child = subprocess.Popen(
            [sys.executable, "-m", "wgs_sandbox"],
            env={
                **os.environ,
                "WGS_INSTANCE_ID": str(spec.instance_id),
                "WGS_SOCKET": str(paths.socket),
                "WGS_DATA_DIR": str(paths.state_dir),
                "WGS_PHONE": spec.phone_number,
            },
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        self.children[child.pid] = child
        self._record_path(spec.instance_id).write_text(
            json.dumps(
                {
                    "pid": child.pid,
                    "instance_id": spec.instance_id,
                    "tenant_id": spec.tenant_id,
                    "generation": generation,
                    "provider": spec.provider.value,
                }
            )
        )
        log.warning("instance %d runs as local process %d (process runtime: dev only)", spec.instance_id, child.pid)
        return ManagedContainer(
            container_id=ContainerId(f"pid-{child.pid}"),
            instance_id=spec.instance_id,
            tenant_id=spec.tenant_id,
            generation=generation,
            provider=spec.provider.value,
            running=True,
        )

    async def remove(self, container: ManagedContainer, stop_timeout: int) -> None:
        """SIGTERM the process by pid, SIGKILL after the timeout, forget its record."""
        pid = int(container.container_id.removeprefix("pid-"))
        if pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + stop_timeout
            while pid_alive(pid) and loop.time() < deadline:
                self._reap(pid)
                await asyncio.sleep(0.05)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        self._reap(pid)
        self._record_path(container.instance_id).unlink(missing_ok=True)

    async def pause(self, container: ManagedContainer) -> None:
        """SIGSTOP the provider process."""
        os.kill(int(container.container_id.removeprefix("pid-")), signal.SIGSTOP)

    async def unpause(self, container: ManagedContainer) -> None:
        """SIGCONT the provider process."""
        os.kill(int(container.container_id.removeprefix("pid-")), signal.SIGCONT)

    def _reap(self, pid: int) -> None:
        child = self.children.get(pid)
        if child is not None and child.poll() is not None:
            del self.children[pid]

    async def events(self) -> AsyncIterator[ContainerEvent]:
        """No event stream for local processes: deaths show up at the next reconcile."""
        await asyncio.Event().wait()
        return
        yield  # pragma: no cover - makes this an async generator

    async def providers(self) -> set[str]:
        """Only the sandbox."""
        return {Provider.SANDBOX.value}

    async def close(self) -> None:
        """Stop every provider process this runtime started."""
        for container in await self.list_managed():
            await self.remove(container, stop_timeout=5)
