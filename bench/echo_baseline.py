"""Baseline server for `bench.send`: a bare Litestar handler doing one NATS request-reply
to an echo responder in the same process. Run: `python -m bench.echo_baseline` with
NATS_URL and WGS_API_PORT set."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats
import uvicorn
from litestar import Litestar, Request, post
from nats.aio.msg import Msg

ECHO_SUBJECT = "bench.echo"


def create_app(nats_url: str) -> Litestar:
    """The baseline app."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        nc = await nats.connect(nats_url)

        async def echo(msg: Msg) -> None:
            await msg.respond(msg.data)

        await nc.subscribe(ECHO_SUBJECT, cb=echo)
        app.state.nc = nc
        try:
            yield
        finally:
            await nc.close()

    @post("/send", status_code=200)
    async def send(request: Request) -> bytes:
        reply = await request.app.state.nc.request(ECHO_SUBJECT, await request.body(), timeout=5)
        return bytes(reply.data)

    return Litestar([send], lifespan=[lifespan])


if __name__ == "__main__":
    uvicorn.run(
        create_app(os.environ["NATS_URL"]),
        host="127.0.0.1",
        port=int(os.environ["WGS_API_PORT"]),
        log_config=None,
        access_log=False,
    )
