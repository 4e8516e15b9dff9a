"""Nodes simulated by publishing their heartbeats, for scheduler tests without Docker."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

import httpx
import nats
from wgs_contracts import subjects
from wgs_contracts.messages import NodeHeartbeat
from wgs_kit.messaging import encode

from tests.support.api import ADMIN

HEARTBEAT_INTERVAL = 0.3  # seconds between simulated heartbeats (a cadence, not a wait)


@contextlib.asynccontextmanager
async def fake_nodes(
    client: httpx.AsyncClient, db, nats_url: str, specs: Mapping[str, tuple[int, int, tuple[str, ...]]]
) -> AsyncIterator[dict[str, int]]:
    """Register nodes {name: (nano_cpus, memory_bytes, providers)} and heartbeat for them.

    On exit: heartbeats stop, the nodes are cordoned, their instances and the nodes deleted.
    """
    ids = {}
    for name in specs:
        response = await client.post(
            "/admin/nodes", json={"name": name, "dockerHost": "fake", "publicHost": "fake"}, headers=ADMIN
        )
        assert response.status_code == 200, response.text
        ids[name] = response.json()["id"]
    nc = await nats.connect(nats_url)

    async def beat_forever() -> None:
        while True:
            for name, (cpus, memory, providers) in specs.items():
                beat = NodeHeartbeat(
                    node=name,
                    runtime="fake",
                    nano_cpus=cpus,
                    memory_bytes=memory,
                    providers=providers,
                    running_instances=(),
                )
                await nc.publish(subjects.node_heartbeat(name), encode(beat))
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    beats = asyncio.create_task(beat_forever())
    try:
        yield ids
    finally:
        beats.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beats
        await nc.close()
        for node_id in ids.values():
            await client.put(f"/admin/nodes/{node_id}", json={"schedulable": False}, headers=ADMIN)
            await db.execute("DELETE FROM instances WHERE node_id = $1", node_id)
            await client.delete(f"/admin/nodes/{node_id}", headers=ADMIN)
