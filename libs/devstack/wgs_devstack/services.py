"""The gateway's services as real processes (tests, benchmarks): start, wait until ready, kill -9, restart."""

import os
import sys
from pathlib import Path

import httpx

from wgs_devstack.processes import ManagedProcess

ADMIN_SECRET = "test-admin-secret"


class Service:
    """One service process (`python -m <module>`) with its environment and log."""

    def __init__(self, name: str, module: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.module = module
        self.env = {**os.environ, **env}
        self.process = ManagedProcess(
            name, [sys.executable, "-m", module], env=self.env, log_path=log_dir / f"{name}.log"
        )

    @property
    def pid(self) -> int | None:
        """PID of the running process."""
        return self.process.pid

    def start(self) -> None:
        """Start the process (a fresh one after a stop or kill)."""
        self.process = ManagedProcess(
            self.name,
            self.process.argv,
            env=self.env,
            log_path=self.process.log_path,
        )
        self.process.start()

    async def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after 15 s."""
        await self.process.stop(15)

    async def kill9(self) -> None:
        """SIGKILL by PID and reap."""
        self.process.kill9()
        await self.process.wait_exit(10)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the service's log."""
        return self.process.log_tail(lines)


class ApiService(Service):
    """The REST API on a loopback port."""

    def __init__(self, env: dict[str, str], log_dir: Path, port: int, name: str = "api") -> None:
        super().__init__(
            name,
            "wgs_api",
            {**env, "WGS_API_HOST": "127.0.0.1", "WGS_API_PORT": str(port), "ADMIN_API_SECRET": ADMIN_SECRET},
            log_dir,
        )
        self.url = f"http://127.0.0.1:{port}"

    async def ready(self) -> None:
        """Start and wait until `GET /` answers."""
        self.start()

        async def answers() -> bool:
            async with httpx.AsyncClient() as client:
                return (await client.get(self.url + "/", timeout=2)).status_code == 200

        try:
            await self.process.wait_ready(answers, timeout=30)
        except Exception:
            await self.stop()
            raise
