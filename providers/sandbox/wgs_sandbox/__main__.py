"""Run the sandbox provider on the unix socket the node agent mounted.

Environment: `WGS_SOCKET` (default `/run/wgs/provider.sock`), `WGS_DATA_DIR` (default `/data`),
`WGS_INSTANCE_ID`, `WGS_PHONE` (the instance's number, digits; empty gives `sandbox-<instance id>`),
`WGS_SANDBOX_QR_SECONDS` (QR rotation period, default 20) and `WGS_SANDBOX_START_SECONDS`
(simulated start-up time before the first QR, default 0).
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
    provider = SandboxProvider(
        instance_id=os.environ.get("WGS_INSTANCE_ID", "?"),
        data_dir=Path(os.environ.get("WGS_DATA_DIR", "/data")),
        phone=os.environ.get("WGS_PHONE", ""),
        qr_seconds=float(os.environ.get("WGS_SANDBOX_QR_SECONDS") or 20),
        start_seconds=float(os.environ.get("WGS_SANDBOX_START_SECONDS") or 0),
    )
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    server = await asyncio.start_unix_server(
        functools.partial(serve_connection, provider.handle), path=str(socket_path)
    )
    socket_path.chmod(0o660)
    ticker = asyncio.create_task(provider.run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logging.info("sandbox provider for instance %s on %s", provider.instance_id, socket_path)
    await asyncio.wait([ticker, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    # Open connections (idle keep-alives, long-polls) are cancelled when the loop ends; state is
    # saved before every answer, so there is nothing to wait for.
    server.close()
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    if ticker.done():
        ticker.result()  # it failed (e.g. the state folder is not writable): exit non-zero, Docker restarts us
    ticker.cancel()


def main() -> None:
    """Entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s sandbox: %(message)s")
    asyncio.run(serve())


if __name__ == "__main__":
    main()
