"""`python -m wgs_devstack up`: the one-command dev stack on a machine without Docker.

With no `NATS_URL` / `DATABASE_URL` it starts its own NATS and PostgreSQL; with no Docker engine at
`DOCKER_HOST` the node agent falls back to the process runtime. A tenant then runs a sandbox instance
through the REST API, and SIGTERM to `up` stops every process it recorded."""

import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from wgs_devstack.processes import (
    START_LINE,
    ManagedProcess,
    free_port,
    stop_recorded_providers,
    tail,
    wait_pid_gone,
)
from wgs_kit.procfs import pid_alive, pid_start_time
from wgs_kit.waiting import wait_until

STARTUP_SECONDS = 120.0
STACK = {"up", "nats", "postgres", "wgs-api", "wgs-scheduler", "wgs-state", "wgs-webhooks", "wgs-node-agent"}
NO_DOCKER = "unix:///nonexistent/docker.sock"
PROVIDER_STATES = {"qr", "starting", "connected"}
SANDBOX = {"provider": "sandbox", "resources": {"cpu": "0.1", "memory": "64m"}}


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A short-pathed data dir under /tmp (unix socket paths are short; postgres must traverse it)."""
    path = Path(tempfile.mkdtemp(prefix="wgs-up-", dir="/tmp"))
    yield path
    shutil.rmtree(path)


@dataclass
class Stack:
    """A running `up`, what it recorded in `pids.json`, and a client of its API."""

    up: ManagedProcess
    data_dir: Path
    api: str
    client: httpx.AsyncClient
    entries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def secret_file(self) -> Path:
        return self.data_dir / "admin-secret"

    @property
    def admin(self) -> dict[str, str]:
        return {"X-Admin-API-Secret": self.secret_file.read_text().strip()}

    def printed(self) -> str:
        """What this run of `up` printed (the log keeps earlier runs' output above its start line)."""
        return self.up.log_path.read_text().rsplit(START_LINE + " ".join(self.up.argv), 1)[-1]

    def agent_log(self) -> str:
        return (self.data_dir / "logs" / "node-agent.log").read_text()

    def instance_dir(self, instance_id: int) -> Path:
        return self.data_dir / "node" / "instances" / str(instance_id)

    def provider_pid(self, instance_id: int) -> int:
        record = json.loads((self.instance_dir(instance_id) / "process.json").read_text())
        assert record["instance_id"] == instance_id
        pid: int = record["pid"]
        return pid

    async def create_tenant(self) -> dict[str, str]:
        response = await self.client.post("/admin/tenants", json={"name": "dev"}, headers=self.admin)
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['apiKey']}"}

    async def local_node(self) -> dict[str, Any]:
        """The node `up` registered: ready as soon as the banner shows (a create must not find it down)."""
        nodes = (await self.client.get("/admin/nodes", headers=self.admin)).json()
        [node] = [n for n in nodes if n["name"] == "local"]
        assert node["status"] == "ready", node
        return node

    async def create_instance(self, tenant: dict[str, str], phone: str) -> dict[str, Any]:
        response = await self.client.post("/api/instances", json={"phone": phone, **SANDBOX}, headers=tenant)
        assert response.status_code == 200, response.text
        instance: dict[str, Any] = response.json()
        assert instance["status"] == "running"
        return instance

    async def delete_instance(self, tenant: dict[str, str], instance_id: int) -> None:
        response = await self.client.delete(f"/api/instances/{instance_id}", headers=tenant)
        assert response.status_code == 204, response.text

    async def stop(self) -> None:
        """SIGTERM to `up`; it must exit 0 with every process it recorded gone."""
        code = await self.up.stop(timeout=60)
        assert code == 0, self.up.log_tail(60)
        alive = [entry for entry in self.entries if pid_alive(entry["pid"])]
        assert alive == [], f"still running after `up` stopped: {alive}\n{self.up.log_tail(60)}"
        assert not (self.data_dir / "pids.json").exists()
        assert all(f"stopping {name}" in self.printed() for name in STACK - {"up"})


def stack_env() -> dict[str, str]:
    """Our environment without the settings that would make `up` reuse servers or skip its defaults."""
    dropped = {"NATS_URL", "DATABASE_URL", "ADMIN_API_SECRET", "WGS_NODE_NAME"}
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    env["DOCKER_HOST"] = NO_DOCKER
    return env


@asynccontextmanager
async def running_stack(data_dir: Path) -> AsyncIterator[Stack]:
    """`python -m wgs_devstack up` until it printed its banner and `GET /` answers; always stopped after."""
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    up = ManagedProcess(
        "up",
        [sys.executable, "-m", "wgs_devstack", "up", "--data-dir", str(data_dir), "--api-port", str(port)],
        log_path=data_dir / "up.log",
        env=stack_env(),
    )
    entries: list[dict[str, Any]] = []
    up.start()
    try:
        async with httpx.AsyncClient(base_url=api, timeout=30.0, trust_env=False) as client:
            stack = Stack(up=up, data_dir=data_dir, api=api, client=client, entries=entries)

            async def stack_is_up() -> bool:
                assert up.running, f"up exited with {up.returncode}:\n{up.log_tail(60)}"
                try:
                    answered = (await client.get("/")).status_code == 200
                except httpx.TransportError:
                    return False
                return answered and "Press Ctrl-C to stop." in stack.printed()

            await wait_until(stack_is_up, STARTUP_SECONDS, interval=0.2, what="`up` ready")
            recorded = json.loads((data_dir / "pids.json").read_text())
            entries += [recorded["up"], *recorded["children"]]
            yield stack
    finally:
        if up.running:
            await up.stop(timeout=60)
        await stop_leftovers(data_dir, entries)


async def stop_leftovers(data_dir: Path, entries: list[dict[str, Any]]) -> None:
    """After a failed run: stop, by PID, whatever recorded process still runs (postgres with SIGINT),
    and sandbox processes whose records are still there."""
    for entry in reversed(entries):
        pid = entry.get("pid")
        if isinstance(pid, int) and pid_alive(pid) and pid_start_time(pid) == entry.get("start"):
            os.kill(pid, signal.SIGINT if entry["name"] == "postgres" else signal.SIGTERM)
            if not await wait_pid_gone(pid, timeout=15):
                os.kill(pid, signal.SIGKILL)
    await stop_recorded_providers(data_dir / "node")


async def answering(socket_path: Path) -> dict[str, Any] | None:
    """The provider's health, or None while its socket does not answer yet (it is starting)."""
    try:
        return await provider_health(socket_path)
    except httpx.TransportError:
        return None


async def provider_health(socket_path: Path) -> dict[str, Any]:
    transport = httpx.AsyncHTTPTransport(uds=str(socket_path))
    async with httpx.AsyncClient(transport=transport, timeout=5.0, trust_env=False) as provider:
        response = await provider.get("http://provider/health")
    assert response.status_code == 200, response.text
    health: dict[str, Any] = response.json()
    return health


async def test_up_runs_a_sandbox_on_the_process_runtime_and_stops_every_process(data_dir: Path) -> None:
    async with running_stack(data_dir) as stack:
        assert {entry["name"] for entry in stack.entries} == STACK
        assert all(pid_alive(entry["pid"]) for entry in stack.entries), stack.entries

        printed, api, secret_file = stack.printed(), stack.api, stack.secret_file
        assert f"API:          {api}\n" in printed
        assert f"API docs:     {api}/docs\n" in printed
        assert f"Admin secret: $(cat {secret_file})\n" in printed
        assert f'curl -X POST {api}/admin/tenants -H "X-Admin-API-Secret: $(cat {secret_file})"' in printed
        assert f"no Docker engine at {NO_DOCKER}" in printed
        assert secret_file.stat().st_mode & 0o777 == 0o600

        tenant = await stack.create_tenant()
        node = await stack.local_node()
        assert node["runtime"] == "process"
        assert node["providers"] == ["sandbox"]
        assert node["dockerHost"] == NO_DOCKER

        instance = await stack.create_instance(tenant, "491701234567")
        assert instance["nodeId"] == node["id"]
        instance_id: int = instance["id"]
        pid = stack.provider_pid(instance_id)
        socket_path = stack.instance_dir(instance_id) / "run" / "provider.sock"
        assert pid_alive(pid)
        health = await wait_until(lambda: answering(socket_path), timeout=20, what="provider socket answers")
        assert health["state"] in PROVIDER_STATES, health
        assert health["instance_id"] == str(instance_id)

        agent_log = stack.agent_log()
        assert f"no Docker engine answers at {NO_DOCKER}: falling back to the PROCESS runtime" in agent_log
        assert "node agent local up with the process runtime" in agent_log
        assert f"instance {instance_id} runs as local process {pid}" in agent_log

        await stack.delete_instance(tenant, instance_id)
        # 204 comes once the provider is gone: no waiting needed
        assert not pid_alive(pid)
        assert not socket_path.exists()
        assert (await stack.client.get(f"/api/instances/{instance_id}", headers=tenant)).status_code == 404

        await stack.stop()


async def test_stopping_up_stops_the_providers_of_running_instances(data_dir: Path) -> None:
    async with running_stack(data_dir) as stack:
        tenant = await stack.create_tenant()
        await stack.local_node()
        deleted = await stack.create_instance(tenant, "491701234567")
        await stack.delete_instance(tenant, deleted["id"])
        running = await stack.create_instance(tenant, "491701234568")
        provider = stack.provider_pid(running["id"])
        assert pid_alive(provider)

        await stack.stop()
        assert not pid_alive(provider), tail(data_dir / "logs" / "node-agent.log", 30)


async def test_up_again_on_the_same_data_dir_is_ready_for_creates_at_its_banner(data_dir: Path) -> None:
    async with running_stack(data_dir) as stack:
        tenant = await stack.create_tenant()
        await stack.stop()
    # The kept database holds the last run's heartbeat: the node reads `ready` for up to 15 s more,
    # then `lost`, until the new agent's heartbeats arrive. The banner must wait for one of those.
    started = datetime.now(UTC)
    async with running_stack(data_dir) as stack:
        node = await stack.local_node()
        assert datetime.fromisoformat(node["lastHeartbeatAt"]) >= started, node
        instance = await stack.create_instance(tenant, "491701234569")
        await stack.delete_instance(tenant, instance["id"])
        await stack.stop()


async def test_up_stops_the_providers_of_a_node_agent_that_died(data_dir: Path) -> None:
    """A killed agent cannot stop its providers: `up` notices it exited and stops them itself."""
    async with running_stack(data_dir) as stack:
        tenant = await stack.create_tenant()
        running = await stack.create_instance(tenant, "491701234570")
        provider = stack.provider_pid(running["id"])
        [agent] = [entry for entry in stack.entries if entry["name"] == "wgs-node-agent"]
        os.kill(agent["pid"], signal.SIGKILL)

        async def up_exited() -> bool:
            return not stack.up.running

        await wait_until(up_exited, 60, interval=0.2, what="`up` stopping after its node agent died")
        assert "wgs-node-agent exited with -9" in stack.printed()
        assert f"stopped sandbox process {provider}, which the node agent left running" in stack.printed()
        assert not pid_alive(provider)
