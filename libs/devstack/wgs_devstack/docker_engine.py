"""Private ``dockerd`` instances: each one models a separate VPS node."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from pathlib import Path

import httpx

from wgs_devstack.processes import ManagedProcess, ProcessBacked, ProcessError, run_command

# sun_path is 108 bytes; stay well below it.
_MAX_SOCKET_PATH = 100


def docker_client(host: str) -> httpx.AsyncClient:
    """An HTTP client that talks to the Docker API at ``unix://...`` or ``tcp://...``."""
    if host.startswith("unix://"):
        transport = httpx.AsyncHTTPTransport(uds=host.removeprefix("unix://"))
        return httpx.AsyncClient(transport=transport, base_url="http://docker", timeout=2.0, trust_env=False)
    if host.startswith("tcp://"):
        return httpx.AsyncClient(base_url="http://" + host.removeprefix("tcp://"), timeout=2.0, trust_env=False)
    raise ValueError(f"unsupported Docker host {host!r}")


async def has_docker_engine(host: str) -> bool:
    """True if a Docker engine answers ``GET /_ping`` with OK at ``host``."""
    try:
        async with docker_client(host) as client:
            response = await client.get("/_ping")
    except (httpx.HTTPError, OSError):
        return False
    return response.status_code == 200 and response.text == "OK"


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (from /proc/self/mountinfo)."""
    prefix = str(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        points = [line.split()[4] for line in fh]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


class DockerEngine(ProcessBacked):
    """A ``dockerd`` with its own data root, exec root, socket and containerd.

    Networking is off (``--bridge=none``, no iptables), so containers run with
    ``NetworkMode: none`` or ``host``. The exec root (which holds containerd's
    sockets) is derived from ``root`` under /tmp to keep socket paths short, and
    is stable across restarts so a restarted engine finds its running containers.
    """

    def __init__(self, root: Path, name: str) -> None:
        self.root = root.absolute()
        self.name = name
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:10]
        self.exec_root = Path(f"/tmp/wgs-x-{digest}")
        self.socket_path = self.root / "docker.sock"
        if len(str(self.socket_path)) > _MAX_SOCKET_PATH:
            raise ValueError(f"socket path too long for a unix socket: {self.socket_path}")
        self._proc = ManagedProcess(
            f"dockerd-{name}",
            [
                "dockerd",
                "--data-root",
                str(self.root / "data"),
                "--exec-root",
                str(self.exec_root),
                "-H",
                self.host,
                "--pidfile",
                str(self.root / "docker.pid"),
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "--userland-proxy=false",
                # Own cgroup subtree, and separate containerd namespaces even if a
                # system containerd were ever shared.
                f"--cgroup-parent=/wgs-{name}",
                f"--containerd-namespace=wgs-{name}",
                f"--containerd-plugins-namespace=wgs-{name}-plugins",
            ],
            log_path=self.root / "dockerd.log",
        )

    @property
    def host(self) -> str:
        """``DOCKER_HOST`` value: ``unix://<root>/docker.sock``."""
        return f"unix://{self.socket_path}"

    async def start(self, timeout: float = 60.0) -> None:
        """Start dockerd and wait until ``/_ping`` answers OK."""
        if shutil.which("dockerd") is None:
            raise ProcessError("dockerd not found (apt-get install docker.io)")
        if await has_docker_engine(self.host):  # it would answer our readiness probe
            raise ProcessError(f"a Docker engine already answers at {self.host}")
        self.root.mkdir(parents=True, exist_ok=True)
        self.exec_root.mkdir(mode=0o700, exist_ok=True)
        self._proc.start()

        async def pinged() -> bool:
            return await has_docker_engine(self.host)

        try:
            await self._proc.wait_ready(pinged, timeout, interval=0.2)
        except ProcessError:
            await self.stop()
            raise

    async def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM dockerd by PID (it stops its containers), SIGKILL after ``timeout``.

        Leftover mounts under the data root, the exec root and the engine's (empty)
        cgroups are removed afterwards.
        """
        await self._proc.stop(timeout)
        # dockerd bind-mounts its data root on itself, and after a kill9 and restart it
        # no longer knows to undo that: detach whatever is still mounted there.
        for point in sorted(mounts_under(self.root / "data"), key=len, reverse=True):
            await run_command(["umount", "-l", point], log_path=self._proc.log_path)
        if self.exec_root.exists() and not mounts_under(self.exec_root):
            shutil.rmtree(self.exec_root, ignore_errors=True)
        for cgroup in Path("/sys/fs/cgroup").glob(f"*/wgs-{self.name}"):
            with contextlib.suppress(OSError):  # still in use by another engine's container
                cgroup.rmdir()
