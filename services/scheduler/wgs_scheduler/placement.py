"""Choosing a node for an instance: pure logic, no I/O.

A node fits when it is alive, schedulable, has the provider's image and has
the CPU and memory free that the instance reserves. Among fitting nodes the
least loaded one wins (the highest of its CPU and memory fractions after
placement is lowest), which spreads instances across the fleet.
"""

from dataclasses import dataclass

from wgs_contracts.resources import format_cpu


@dataclass(frozen=True, kw_only=True)
class NodeState:
    """A node as the scheduler sees it."""

    id: int
    name: str
    alive: bool
    schedulable: bool
    providers: frozenset[str]
    nano_cpus: int
    memory_bytes: int
    reserved_nano_cpus: int
    reserved_memory_bytes: int

    def free(self) -> tuple[int, int]:
        """Unreserved (nano-CPUs, bytes)."""
        return (
            self.nano_cpus - self.reserved_nano_cpus,
            self.memory_bytes - self.reserved_memory_bytes,
        )


@dataclass(frozen=True, kw_only=True)
class Request:
    """What an instance needs."""

    provider: str
    nano_cpus: int
    memory_bytes: int


@dataclass(frozen=True)
class NoFit:
    """Why no node can take the instance now."""

    reason: str


def load_after(node: NodeState, request: Request) -> float:
    """The node's busiest resource fraction if the instance were placed on it."""
    cpu = (node.reserved_nano_cpus + request.nano_cpus) / max(node.nano_cpus, 1)
    memory = (node.reserved_memory_bytes + request.memory_bytes) / max(node.memory_bytes, 1)
    return max(cpu, memory)


def choose_node(request: Request, nodes: list[NodeState]) -> NodeState | NoFit:
    """The best node for `request`, or the reason none fits."""
    if not nodes:
        return NoFit("No worker nodes are registered.")
    alive = [n for n in nodes if n.alive and n.schedulable]
    if not alive:
        return NoFit("No available worker nodes: none is alive and schedulable.")
    offering = [n for n in alive if request.provider in n.providers]
    if not offering:
        return NoFit(f"No available node offers provider {request.provider!r}.")
    fitting = [n for n in offering if n.free()[0] >= request.nano_cpus and n.free()[1] >= request.memory_bytes]
    if not fitting:
        best_cpu = max(n.free()[0] for n in offering)
        best_memory = max(n.free()[1] for n in offering)
        return NoFit(
            f"No node has room for {format_cpu(request.nano_cpus)} CPU and "
            f"{request.memory_bytes // 2**20}m memory (most free: {format_cpu(max(best_cpu, 0))} CPU, "
            f"{max(best_memory, 0) // 2**20}m memory)."
        )
    return min(fitting, key=lambda n: (load_after(n, request), n.id))
