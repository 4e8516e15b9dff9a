"""Run the sandbox provider on the unix socket the node agent mounted.

Environment: `WGS_SOCKET` (default `/run/wgs/provider.sock`), `WGS_DATA_DIR`
(default `/data`), `WGS_INSTANCE_ID`.
"""

import asyncio
import contextlib
import functools
import logging
import os
import signal
from pathlib import Path

from wgs_sandbox.http import serve_connection
from wgs_sandbox.provider import SandboxProvider


async def serve() -> None:
    """Listen until SIGTERM, then remove the socket."""
    socket_path = Path(os.environ.get("WGS_SOCKET", "/run/wgs/provider.sock"))
    provider = SandboxProvider(instance_id=os.environ.get("WGS_INSTANCE_ID", "?"))
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    server = await asyncio.start_unix_server(
        functools.partial(serve_connection, provider.handle), path=str(socket_path)
    )
    socket_path.chmod(0o660)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logging.info("sandbox provider for instance %s on %s", provider.instance_id, socket_path)
    async with server:
        await stop.wait()
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()


def main() -> None:
    """Entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s sandbox: %(message)s")
    asyncio.run(serve())


if __name__ == "__main__":
    main()
