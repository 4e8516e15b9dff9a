"""``wgs-dev``: build images offline and run the whole stack locally."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx
from wgs_kit.procfs import pid_alive, pid_start_time

from wgs_devstack import images
from wgs_devstack.docker_engine import has_docker_engine
from wgs_devstack.nats import EmbeddedNats
from wgs_devstack.postgres import EmbeddedPostgres
from wgs_devstack.processes import (
    ManagedProcess,
    ProcessError,
    run_command,
    stop_recorded_providers,
    wait_pid_gone,
)

# Started in this order by `up`, stopped in reverse.
STACK_SERVICES = ("wgs-api", "wgs-scheduler", "wgs-state", "wgs-webhooks", "wgs-node-agent")
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
_PIDS_FILE = "pids.json"


def _say(message: str) -> None:
    print(message, flush=True)


def _docker_host(explicit: str | None = None) -> str:
    return explicit or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def _project_root() -> Path | None:
    """The source tree holding the Dockerfiles: cwd or a parent, else this checkout."""
    here = Path.cwd().resolve()
    for candidate in [here, *here.parents, Path(__file__).resolve().parents[3]]:
        if (candidate / "providers" / "sandbox" / "Dockerfile").is_file():
            return candidate
    return None


def _script(name: str) -> str:
    """A console script of this project: beside the interpreter, else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ProcessError(f"{name} not found (is the wgs package installed?)")
    return found


def _admin_secret(data_dir: Path) -> tuple[str, str]:
    """Return the admin secret and a shell expression that yields it."""
    from_env = os.environ.get("ADMIN_API_SECRET")
    if from_env:
        return from_env, "$ADMIN_API_SECRET"
    path = data_dir / "admin-secret"
    if not path.is_file():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return path.read_text().strip(), f"$(cat {path})"


def _record(pid: int | None, name: str) -> dict[str, Any]:
    return {"name": name, "pid": pid, "start": pid_start_time(pid) if pid else None}


class _PidFile:
    """``<data-dir>/pids.json``: the ``up`` process and its children, in start order."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / _PIDS_FILE
        self.children: list[dict[str, Any]] = []

    def add(self, name: str, pid: int | None) -> None:
        self.children.append(_record(pid, name))
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"up": _record(os.getpid(), "up"), "children": self.children}))
        tmp.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _same_process(entry: dict[str, Any]) -> bool:
    """True if the recorded PID still runs the recorded process (not a reused PID)."""
    pid = entry.get("pid")
    if not isinstance(pid, int):
        return False
    return pid_alive(pid) and pid_start_time(pid) == entry.get("start")


async def _register_node(client: httpx.AsyncClient, api: str, secret: str, docker_host: str, node_name: str) -> None:
    response = await client.post(
        f"{api}/admin/nodes",
        headers={"X-Admin-API-Secret": secret},
        json={"name": node_name, "dockerHost": docker_host, "publicHost": "127.0.0.1"},
    )
    if response.status_code != 409:
        response.raise_for_status()


class _Stoppable(Protocol):
    async def stop(self) -> object: ...


async def _stop_all(children: list[tuple[str, _Stoppable]]) -> None:
    """Stop children (ManagedProcess, EmbeddedPostgres or EmbeddedNats) in reverse order."""
    for name, child in reversed(children):
        _say(f"stopping {name}")
        try:
            await child.stop()
        except Exception as exc:
            _say(f"  failed to stop {name}: {exc}")


async def _stop_providers(data_dir: Path) -> None:
    """Stop the sandbox processes the node agent left running (it was killed, or ran out of time)."""
    for pid in await stop_recorded_providers(data_dir / "node"):
        _say(f"stopped sandbox process {pid}, which the node agent left running")


async def _up(args: argparse.Namespace) -> int:
    """Run the dev stack in the foreground until Ctrl-C or SIGTERM."""
    data_dir: Path = args.data_dir.absolute()
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pidfile = _PidFile(data_dir)
    if pidfile.path.is_file():
        previous = json.loads(pidfile.path.read_text())
        if _same_process(previous["up"]):
            _say(f"a stack is already running (pid {previous['up']['pid']}); try `wgs-dev down`")
            return 1

    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    stopping = False

    def on_signal() -> None:
        nonlocal stopping
        if not stopping:  # a second Ctrl-C must not interrupt the teardown
            stopping = True
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)

    children: list[tuple[str, _Stoppable]] = []
    try:
        return await _run_stack(args, data_dir, logs, pidfile, children)
    except asyncio.CancelledError:
        task.uncancel()
        return 0
    finally:
        await _stop_all(children)
        await _stop_providers(data_dir)
        pidfile.remove()


async def _run_stack(
    args: argparse.Namespace,
    data_dir: Path,
    logs: Path,
    pidfile: _PidFile,
    children: list[tuple[str, _Stoppable]],
) -> int:
    env = dict(os.environ)
    if not env.get("NATS_URL"):
        nats = EmbeddedNats(data_dir / "nats")
        children.append(("nats", nats))
        await nats.start()
        pidfile.add("nats", nats.pid)
        env["NATS_URL"] = nats.url
    if not env.get("DATABASE_URL"):
        pg = EmbeddedPostgres(data_dir / "pg")
        children.append(("postgres", pg))
        await pg.start()
        pidfile.add("postgres", pg.pid)
        env["DATABASE_URL"] = pg.dsn
    _say(f"NATS: {env['NATS_URL']}\nPostgreSQL: {env['DATABASE_URL']}")

    docker_host = _docker_host()
    project_root = _project_root()
    if await has_docker_engine(docker_host) and project_root is not None:
        _say(f"building the sandbox image at {docker_host} (the first time takes minutes)")
        await images.build_all(docker_host, project_root)
    else:
        _say(f"no Docker engine at {docker_host}: the node agent will use its process runtime")

    _say("running wgs-migrate")
    await run_command([_script("wgs-migrate")], log_path=logs / "migrate.log", env=env)

    secret, secret_expr = _admin_secret(data_dir)
    node_name = os.environ.get("WGS_NODE_NAME") or "local"
    env |= {
        "ADMIN_API_SECRET": secret,
        "WGS_API_HOST": "127.0.0.1",
        "WGS_API_PORT": str(args.api_port),
    }
    agent_env = {
        "WGS_NODE_NAME": node_name,
        "WGS_NODE_DATA_DIR": str(data_dir / "node"),
        "DOCKER_HOST": docker_host,
        "WGS_RUNTIME": "auto",
    }
    services: list[ManagedProcess] = []
    for name in STACK_SERVICES:
        proc = ManagedProcess(
            name,
            [_script(name)],
            log_path=logs / f"{name.removeprefix('wgs-')}.log",
            env=env | agent_env if name == "wgs-node-agent" else env,
        )
        children.append((name, proc))
        proc.start()
        pidfile.add(name, proc.pid)
        services.append(proc)

    api = f"http://127.0.0.1:{args.api_port}"
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:

        async def api_up() -> bool:
            return (await client.get(f"{api}/")).status_code == 200

        await services[0].wait_ready(api_up, timeout=60)
        await _register_node(client, api, secret, docker_host, node_name)

        async def node() -> dict[str, Any]:
            nodes = (await client.get(f"{api}/admin/nodes", headers={"X-Admin-API-Secret": secret})).json()
            found: dict[str, Any] = next(n for n in nodes if n["name"] == node_name)
            return found

        # Until this run's agent heartbeats, the node is unknown, or `lost` (or about to be) from the
        # last run, and a create answers `503 no_capacity`: the banner waits for a new heartbeat.
        last_run_heartbeat = (await node())["lastHeartbeatAt"]

        async def heartbeat_arrived() -> bool:
            current = await node()
            return bool(current["status"] == "ready" and current["lastHeartbeatAt"] != last_run_heartbeat)

        agent = services[STACK_SERVICES.index("wgs-node-agent")]
        await agent.wait_ready(heartbeat_arrived, timeout=60, interval=0.2)

    _say(
        f"\nwgs dev stack is up\n"
        f"  API:          {api}\n"
        f"  API docs:     {api}/docs\n"
        f"  Admin secret: {secret_expr}\n"
        f"  Logs:         {logs}/\n"
        f"Create the first tenant (its API key is shown once):\n"
        f'  curl -X POST {api}/admin/tenants -H "X-Admin-API-Secret: {secret_expr}" '
        f"-H 'content-type: application/json' -d '{{\"name\":\"acme\"}}'\n"
        f"Press Ctrl-C to stop."
    )
    while True:
        for proc in services:
            if not proc.running:
                _say(f"{proc.name} exited with {proc.returncode}:\n{proc.log_tail()}")
                return 1
        await asyncio.sleep(0.5)


async def _down(args: argparse.Namespace) -> int:
    """Stop a stack that ``up`` runs in the background, by the PIDs it recorded."""
    path = args.data_dir.absolute() / _PIDS_FILE
    if not path.is_file():
        _say(f"no stack recorded in {path}")
        return 0
    recorded = json.loads(path.read_text())
    up = recorded["up"]
    if _same_process(up):
        os.kill(up["pid"], signal.SIGTERM)
        if await wait_pid_gone(up["pid"], timeout=90):
            path.unlink(missing_ok=True)
            _say("stopped")
            return 0
        _say("`up` did not exit in time; stopping its children directly")
    for entry in reversed(recorded["children"]):
        if _same_process(entry):
            os.kill(entry["pid"], signal.SIGINT if entry["name"] == "postgres" else signal.SIGTERM)
            if not await wait_pid_gone(entry["pid"], timeout=15) and _same_process(entry):
                os.kill(entry["pid"], signal.SIGKILL)
    await _stop_providers(args.data_dir.absolute())
    path.unlink(missing_ok=True)
    _say("stopped")
    return 0


async def _build_images(args: argparse.Namespace) -> int:
    """Build the requested images into the engine at ``--docker-host``."""
    project_root = _project_root()
    if project_root is None:
        _say("run this from the wgs source tree (Dockerfiles not found)")
        return 2
    names = args.names or ["sandbox"]
    unknown = sorted(set(names) - set(images.PROVIDERS + images.SERVICES))
    if unknown:
        _say(f"unknown image(s): {', '.join(unknown)}")
        return 2
    tags = await images.build_all(_docker_host(args.docker_host), project_root, names)
    _say("\n".join(tags.values()))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wgs-dev", description="Build images offline and run the whole stack locally."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build-images", help="build images offline into a Docker engine")
    build.add_argument("--docker-host", help="default: $DOCKER_HOST or " + DEFAULT_DOCKER_HOST)
    build.add_argument(
        "names",
        nargs="*",
        metavar="name",
        help=f"images to build (default: sandbox): {', '.join(images.PROVIDERS + images.SERVICES)}",
    )
    build.set_defaults(func=_build_images)

    up = sub.add_parser("up", help="run the whole stack in the foreground")
    up.add_argument("--data-dir", type=Path, default=Path(".wgs"))
    up.add_argument("--api-port", type=int, default=8080)
    up.set_defaults(func=_up)

    down = sub.add_parser("down", help="stop a stack started by `up` in the background")
    down.add_argument("--data-dir", type=Path, default=Path(".wgs"))
    down.set_defaults(func=_down)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``wgs-dev`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        code = asyncio.run(args.func(args))
    except ProcessError as exc:
        _say(f"error: {exc}")
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
