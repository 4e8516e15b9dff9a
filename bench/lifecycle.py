"""Benchmark: create→running latency of sandbox instances through the gateway vs. Docker directly.

Starts everything it needs (NATS, PostgreSQL, one Docker engine, migrations,
API, scheduler, one node agent), then for N rounds measures:

- baseline: `docker create` + `start` of the sandbox image through aiodocker,
  with the same limits, labels, user and folders the agent uses;
- gateway: `POST /api/instances` (waits for `running`) through REST → NATS →
  scheduler → NATS → node agent → Docker.

Prints JSON and a table: p50/p95/max of both, the control-plane overhead
(gateway p50 - baseline p50, target <= 150 ms) and the idle RSS of a sandbox
container (target <= 40 MB). Every loop is bounded; everything started is
stopped by PID. Usage: `python -m bench.lifecycle [-n 20] [--out FILE]`.
"""

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import aiodocker
import httpx
from wgs_contracts.messages import InstanceSpec, Provider
from wgs_devstack.docker_engine import DockerEngine
from wgs_node_agent.runtime.base import InstancePaths
from wgs_node_agent.runtime.docker import container_config, prepare_folders

from bench.stack import ROOT, cancel_on_sigterm, gateway_stack, summary

TARGET_OVERHEAD_MS = 150.0
TARGET_RSS_MB = 40.0


async def baseline_once(docker: aiodocker.Docker, work: Path, i: int) -> float:
    """One direct aiodocker create+start of the sandbox image with the agent's config; seconds."""
    spec = InstanceSpec(
        instance_id=900_000 + i,
        tenant_id=0,
        provider=Provider.SANDBOX,
        nano_cpus=100_000_000,
        memory_bytes=64 * 2**20,
        pids_limit=256,
    )
    paths = InstancePaths.under(work / "baseline", spec.instance_id)
    config = container_config(spec, 1, paths, node="baseline", network_mode="none")
    started = time.perf_counter()
    prepare_folders(paths)
    container = await docker.containers.create(config, name=f"bench-baseline-{i}")
    await container.start()
    elapsed = time.perf_counter() - started
    await container.delete(force=True)
    return elapsed


async def gateway_once(client: httpx.AsyncClient, headers: dict[str, str], i: int) -> tuple[float, float]:
    """POST /api/instances until `running` (200), then DELETE until 204; (create s, delete s)."""
    body = {"phone": f"4917{i:08d}", "provider": "sandbox", "resources": {"cpu": "0.1", "memory": "64m"}}
    started = time.perf_counter()
    response = await client.post("/api/instances", json=body, headers=headers)
    created = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"create failed: {response.status_code} {response.text}")
    started = time.perf_counter()
    deleted = await client.delete(f"/api/instances/{response.json()['id']}", headers=headers)
    if deleted.status_code != 204:
        raise RuntimeError(f"delete failed: {deleted.status_code} {deleted.text}")
    return created, time.perf_counter() - started


async def measure(
    engine: DockerEngine, work: Path, client: httpx.AsyncClient, headers: dict[str, str], rounds: int
) -> tuple[list[float], list[float], list[float]]:
    """Interleaved rounds (baseline, then gateway) so that drift hits both alike."""
    base, create, delete = [], [], []
    async with aiodocker.Docker(url=engine.host) as docker:
        for i in range(rounds):
            base.append(await baseline_once(docker, work, i))
            created, deleted = await gateway_once(client, headers, i)
            create.append(created)
            delete.append(deleted)
    return base, create, delete


def tree_rss_kb(pid: int) -> int:
    """VmRSS of a process and all its descendants (the container's init and the provider), in kB."""
    status = Path(f"/proc/{pid}/status").read_text()
    total = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return total + sum(tree_rss_kb(int(child)) for child in children)


async def idle_rss_mb(client: httpx.AsyncClient, headers: dict[str, str], engine: DockerEngine) -> float:
    """Resident memory of a sandbox container (init + provider) after it settled (5 s idle)."""
    body = {"phone": "491700099999", "provider": "sandbox", "resources": {"cpu": "0.1", "memory": "64m"}}
    created = (await client.post("/api/instances", json=body, headers=headers)).json()
    try:
        await asyncio.sleep(5)  # idle period before reading the resident set
        async with aiodocker.Docker(url=engine.host) as docker:
            info = await (await docker.containers.get(f"wgs-instance-{created['id']}")).show()
        return round(tree_rss_kb(info["State"]["Pid"]) / 1024, 1)
    finally:
        await client.delete(f"/api/instances/{created['id']}", headers=headers)


async def run(rounds: int, out: Path | None) -> dict[str, object]:
    """Start the stack, measure, stop everything."""
    async with gateway_stack() as stack:
        await measure(stack.engine, stack.work, stack.client, stack.headers, 2)  # warm-up: page cache, connections
        base, gate, delete = await measure(stack.engine, stack.work, stack.client, stack.headers, rounds)
        rss = await idle_rss_mb(stack.client, stack.headers, stack.engine)
    result: dict[str, object] = {
        "rounds": rounds,
        "baseline_docker_create_start": summary(base),
        "gateway_create_to_running": summary(gate),
        "gateway_delete_to_gone": summary(delete),
        "control_plane_overhead_p50_ms": round((statistics.median(gate) - statistics.median(base)) * 1000, 1),
        "target_overhead_ms": TARGET_OVERHEAD_MS,
        "sandbox_idle_rss_mb": rss,
        "target_rss_mb": TARGET_RSS_MB,
    }
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    return result


def print_table(result: dict[str, object]) -> None:
    """The human-readable summary."""
    base = result["baseline_docker_create_start"]
    gate = result["gateway_create_to_running"]
    assert isinstance(base, dict)
    assert isinstance(gate, dict)
    print(f"{'measure':<34}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    print(f"{'baseline docker create+start':<34}{base['p50_ms']:>10}{base['p95_ms']:>10}{base['max_ms']:>10}")
    print(f"{'gateway create -> running':<34}{gate['p50_ms']:>10}{gate['p95_ms']:>10}{gate['max_ms']:>10}")
    delete = result["gateway_delete_to_gone"]
    assert isinstance(delete, dict)
    print(f"{'gateway delete -> gone (204)':<34}{delete['p50_ms']:>10}{delete['p95_ms']:>10}{delete['max_ms']:>10}")
    print(f"control-plane overhead p50: {result['control_plane_overhead_p50_ms']} ms (target <= {TARGET_OVERHEAD_MS})")
    print(f"sandbox idle RSS: {result['sandbox_idle_rss_mb']} MB (target <= {TARGET_RSS_MB})")


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "lifecycle.json")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 500:
        parser.error("--rounds must be between 1 and 500")
    result = asyncio.run(cancel_on_sigterm(run(args.rounds, args.out)))
    print(json.dumps(result, indent=2))
    print_table(result)


if __name__ == "__main__":
    main()
