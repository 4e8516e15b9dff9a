"""What the agent needs from a runtime, independent of Docker or processes."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import NewType, Protocol

from wgs_contracts.messages import InstanceSpec

ContainerId = NewType("ContainerId", str)
PROVIDER_UID = 10001
SOCKET_NAME = "provider.sock"


class StartError(Exception):
    """The instance cannot start here for a reason retrying will not fix (e.g. missing image)."""


@dataclass(frozen=True, kw_only=True)
class InstancePaths:
    """Host folders of one instance: its session state and its provider socket."""

    state_dir: Path
    socket_dir: Path

    @classmethod
    def under(cls, data_dir: Path, instance_id: int) -> "InstancePaths":
        """The folders of an instance under the agent's data folder."""
        base = data_dir / "instances" / str(instance_id)
        return cls(state_dir=base / "state", socket_dir=base / "run")

    @property
    def socket(self) -> Path:
        """The provider's unix socket."""
        return self.socket_dir / SOCKET_NAME


@dataclass(frozen=True, kw_only=True)
class ManagedContainer:
    """A provider container (or process) this agent manages, as its labels describe it."""

    container_id: ContainerId
    instance_id: int
    tenant_id: int
    generation: int
    provider: str
    running: bool
    paused: bool = False  # frozen (running, but not serving): left so by an agent that died mid-snapshot


@dataclass(frozen=True, kw_only=True)
class ContainerEvent:
    """A managed container died or (re)started, as the engine reported it."""

    container: ManagedContainer
    action: str  # "die" or "start"
    exit_code: int | None
    at_ns: int


class Runtime(Protocol):
    """Starts, lists and removes provider containers."""

    name: str

    async def list_managed(self) -> list[ManagedContainer]:
        """Every container this agent manages on the engine, running or not."""
        ...

    async def start(self, spec: InstanceSpec, generation: int, paths: InstancePaths) -> ManagedContainer:
        """Create and start the instance's container, or adopt one already there (idempotent)."""
        ...

    async def remove(self, container: ManagedContainer, stop_timeout: int) -> None:
        """Stop (gracefully, up to `stop_timeout` s) and delete a container; gone already is fine."""
        ...

    async def pause(self, container: ManagedContainer) -> None:
        """Freeze every process of the container (for a consistent copy of its state)."""
        ...

    async def unpause(self, container: ManagedContainer) -> None:
        """Let a paused container run again."""
        ...

    def events(self) -> AsyncIterator[ContainerEvent]:
        """Deaths and starts of managed containers as they happen (ends when the stream breaks)."""
        ...

    async def providers(self) -> set[str]:
        """Providers this node can run (their images are present)."""
        ...

    async def close(self) -> None:
        """Release the engine connection and stop child processes where it owns them."""
        ...
