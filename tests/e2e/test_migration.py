"""Migration, drain, cordon and failover across two nodes: two real Docker engines, each with its own agent.

The module's nodes `m1` and `m2` are the only schedulable ones while it runs (any other node
is cordoned), so where an instance lands is decided by cordoning one of them.
"""

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import msgspec
import nats
import pytest
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from wgs_contracts import streams, subjects
from wgs_contracts.messages import InstanceStatus, InstanceStatusChanged, NodeStatusChanged, SnapshotTaken
from wgs_contracts.state import RestoreBegin
from wgs_devstack.docker_engine import DockerEngine
from wgs_devstack.images import copy_image
from wgs_devstack.services import ApiService, Service
from wgs_kit.messaging import encode
from wgs_kit.snapshots import SnapshotError, upload_folder
from wgs_kit.waiting import wait_until
from wgs_node_agent.session import mailbox_name
from wgs_node_agent.snapshots import tree_digest

from tests.e2e.conftest import node_ready
from tests.support.api import ADMIN, Tenant, create_tenant, unique_phone
from tests.support.sandbox import SANDBOX_IMAGE, containers_of, pair_up, reaches, status_is

pytestmark = pytest.mark.docker
NODES = ("m1", "m2")
SANDBOX_RETRY_SECONDS = 1.0  # shorter than a failover (the node timeout alone is 4 s): mail waits for the phone
MIB = 2**20


@dataclass
class Node:
    """One simulated VPS: its engine, its agent and where the agent keeps instance state."""

    name: str
    id: int
    engine: DockerEngine
    agent: Service
    data_dir: Path

    def state_dir(self, instance_id: int) -> Path:
        """The instance's state folder on this node."""
        return self.data_dir / "instances" / str(instance_id) / "state"


@dataclass
class Fleet:
    """The module's two nodes, by name."""

    nodes: dict[str, Node] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]


async def state_answers(nc: nats.NATS) -> bool:
    """True when a state service answers restore requests."""
    try:
        await nc.request(subjects.STATE_RESTORE_BEGIN, encode(RestoreBegin(instance_id=0)), timeout=1)
    except (NoRespondersError, NatsTimeoutError):
        return False
    return True


@pytest.fixture(scope="module")
async def state_service(migrated: dict[str, str], work_dir: Path) -> AsyncIterator[Service]:
    """The state service, answering restores."""
    service = Service("state-e2e", "wgs_state", migrated, work_dir / "logs")
    service.start()
    nc = await nats.connect(migrated["NATS_URL"])
    try:
        await wait_until(lambda: state_answers(nc), timeout=30, what="the state service")
        yield service
    finally:
        await nc.close()
        await service.stop()


@pytest.fixture(scope="module")
async def fleet(
    api: ApiService,
    scheduler: Service,
    engines: list[DockerEngine],
    state_service: Service,
    migrated: dict[str, str],
    work_dir: Path,
    db: asyncpg.Pool,
) -> AsyncIterator[Fleet]:
    """Nodes m1 and m2 (2 CPUs, 1g each), each on its own Docker engine with the sandbox image."""
    fleet = Fleet()
    async with httpx.AsyncClient(base_url=api.url, timeout=60) as client:
        others = [n for n in (await client.get("/admin/nodes", headers=ADMIN)).json() if n["schedulable"]]
        for other in others:
            await client.post(f"/admin/nodes/{other['id']}/cordon", headers=ADMIN)
        try:
            for name in NODES:
                engine = DockerEngine(work_dir / f"docker-{name}", name)
                await engine.start()
                await copy_image(engines[0].host, engine.host, SANDBOX_IMAGE)
                registered = await client.post(
                    "/admin/nodes",
                    json={"name": name, "dockerHost": engine.host, "publicHost": "127.0.0.1"},
                    headers=ADMIN,
                )
                assert registered.status_code == 200, registered.text
                data_dir = work_dir / f"node-{name}"
                agent = Service(
                    f"agent-{name}",
                    "wgs_node_agent",
                    {
                        **migrated,
                        "WGS_NODE_NAME": name,
                        "DOCKER_HOST": engine.host,
                        "WGS_RUNTIME": "docker",
                        "WGS_NODE_DATA_DIR": str(data_dir),
                        "WGS_NODE_CPU": "2",
                        "WGS_NODE_MEMORY": "1g",
                        "WGS_SNAPSHOT_SECONDS": "2",
                        "WGS_SANDBOX_RETRY_SECONDS": str(SANDBOX_RETRY_SECONDS),
                    },
                    work_dir / "logs",
                )
                fleet.nodes[name] = Node(name, registered.json()["id"], engine, agent, data_dir)
                agent.start()
                await node_ready(api, name)
            yield fleet
        finally:
            for node in fleet.nodes.values():
                await db.execute("DELETE FROM instances WHERE node_id = $1", node.id)
                await client.delete(f"/admin/nodes/{node.id}", headers=ADMIN)
                await node.agent.stop()
                await node.engine.stop()
            for other in others:
                await client.post(f"/admin/nodes/{other['id']}/uncordon", headers=ADMIN)


@contextlib.asynccontextmanager
async def only_on(client: httpx.AsyncClient, fleet: Fleet, name: str) -> AsyncIterator[None]:
    """While the block runs, new instances can only be placed on node `name`."""
    others = [n for n in fleet.nodes.values() if n.name != name]
    for node in others:
        assert (await client.post(f"/admin/nodes/{node.id}/cordon", headers=ADMIN)).status_code == 200
    try:
        yield
    finally:
        for node in others:
            assert (await client.post(f"/admin/nodes/{node.id}/uncordon", headers=ADMIN)).status_code == 200


async def sandbox_on(client: httpx.AsyncClient, fleet: Fleet, tenant: Tenant, name: str, memory: str = "64m") -> dict:
    """A running sandbox instance placed on node `name`."""
    async with only_on(client, fleet, name):
        body = {"phone": unique_phone(), "provider": "sandbox", "resources": {"cpu": "0.1", "memory": memory}}
        response = await client.post("/api/instances", json=body, headers=tenant.headers)
    assert response.status_code == 200, response.text
    instance = response.json()
    assert instance["nodeId"] == fleet[name].id
    return instance


async def running_containers(node: Node, instance_id: int) -> list[dict]:
    """The instance's running containers on the node (none while its engine is down)."""
    try:
        found = await containers_of(node.engine, instance_id)
    except Exception:
        return []
    return [c for c in found if c["State"]["Running"]]


async def migrate(client: httpx.AsyncClient, tenant: Tenant, instance_id: int, target: str) -> httpx.Response:
    return await client.post(
        f"/api/instances/{instance_id}/migrate", json={"target_node": target}, headers=tenant.headers, timeout=120
    )


def write_state(folder: Path) -> dict[str, str]:
    """Put 10 MB of random bytes and a few nested files with modes into a state folder; their sha256 by name."""
    nested = folder / "test-state" / "nested"
    nested.mkdir(parents=True, exist_ok=True)
    files = {folder / "test-state" / "big.bin": os.urandom(10 * MIB), nested / "keys.json": b'{"k": 1}'}
    for path, data in files.items():
        path.write_bytes(data)
    (nested / "keys.json").chmod(0o600)
    return {str(p.relative_to(folder)): hashlib.sha256(d).hexdigest() for p, d in files.items()}


def file_hashes(folder: Path, names: dict[str, str]) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in names}


async def test_seed_migration_moves_the_instance_to_the_other_node(
    client: httpx.AsyncClient, fleet: Fleet, db: asyncpg.Pool, migrated: dict[str, str]
) -> None:
    tenant = await create_tenant(client)
    instance = await sandbox_on(client, fleet, tenant, "m1")
    [before] = await running_containers(fleet["m1"], instance["id"])

    response = await migrate(client, tenant, instance["id"], "any")

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "ok"
    assert result["instance"]["nodeId"] == fleet["m2"].id
    assert result["instance"]["status"] == "running"
    assert await db.fetchval("SELECT node_id FROM instances WHERE id = $1", instance["id"]) == fleet["m2"].id
    [after] = await running_containers(fleet["m2"], instance["id"])
    assert after["Id"] != before["Id"]
    assert await containers_of(fleet["m1"].engine, instance["id"]) == []

    # Fencing: the old generation can no longer store state for the instance.
    nc = await nats.connect(migrated["NATS_URL"])
    try:
        with pytest.raises(SnapshotError, match="generation"):
            await upload_folder(nc, instance["id"], instance["generation"], fleet["m1"].state_dir(instance["id"]))
    finally:
        await nc.close()
    assert (await client.delete(f"/api/instances/{instance['id']}", headers=tenant.headers)).status_code == 204


async def test_state_moves_byte_identical_and_sends_during_the_migration_are_delivered(
    client: httpx.AsyncClient, fleet: Fleet, migrated: dict[str, str]
) -> None:
    tenant_a, tenant_b = await create_tenant(client), await create_tenant(client)
    a = await sandbox_on(client, fleet, tenant_a, "m1")
    b = await sandbox_on(client, fleet, tenant_b, "m1")
    nc = await nats.connect(migrated["NATS_URL"])
    try:
        snapshots = await nc.subscribe(subjects.node_snapshots("m1"))
        pairing_began = datetime.now(UTC)
        for tenant, instance in ((tenant_a, a), (tenant_b, b)):
            await pair_up(client, tenant, instance["id"])
        # Pairing is snapshotted at once (paused for the copy, then uploaded: the session changed).
        # The periodic pass (every 2 s here) may have stored the paired state a moment before: the
        # paired snapshot then finds it unchanged, and stores no new version.
        taken = [msgspec.json.decode(m.data, type=SnapshotTaken) for m in await drain(snapshots)]
        paired = [t for t in taken if t.reason == "paired" and t.instance_id == a["id"]]
        assert paired, taken
        assert paired[0].pause_ms > 0
        stored_since_pairing = [
            t
            for t in taken
            if t.instance_id == a["id"] and t.version is not None and pairing_began <= t.at <= paired[0].at
        ]
        assert stored_since_pairing, taken
    finally:
        await nc.close()
    expected = write_state(fleet["m1"].state_dir(a["id"]))

    migration = asyncio.create_task(migrate(client, tenant_a, a["id"], "m2"))
    sent: list[tuple[int, str]] = []
    for index in range(100):  # bounded: one send every 50 ms while the migration runs
        response = await client.post(
            f"/api/instances/{a['id']}/send",
            json={"to": b["phoneNumber"], "text": f"during {index}"},
            headers=tenant_a.headers,
        )
        assert response.status_code in (200, 202), response.text
        sent.append((response.status_code, response.json()["id"]))
        if migration.done():
            break
        await asyncio.sleep(0.05)
    moved = await migration
    assert moved.status_code == 200, moved.text
    assert moved.json()["instance"]["nodeId"] == fleet["m2"].id

    # The folder restored on m2 is the one m1 handed off, byte for byte (markers hold both digests).
    old_folder, new_folder = fleet["m1"].state_dir(a["id"]), fleet["m2"].state_dir(a["id"])
    old_marker = (old_folder.parent / "snapshot.json").read_text()
    new_marker = (new_folder.parent / "snapshot.json").read_text()
    assert old_marker == new_marker
    assert f'"digest":"{tree_digest(old_folder)[0]}"' in old_marker
    assert file_hashes(new_folder, expected) == expected
    assert (new_folder / "test-state" / "nested" / "keys.json").stat().st_mode & 0o777 == 0o600

    # Nothing accepted is lost: queued (202) sends included, every message reaches B.
    assert 202 in {status for status, _ in sent}, "no send fell into the migration window"
    for _, message_id in sent:
        await reaches(client, tenant_a, a["id"], message_id, "delivered")
    # The session moved with the state: A is still paired and sends at once.
    after = await client.post(
        f"/api/instances/{a['id']}/send", json={"to": b["phoneNumber"], "text": "after"}, headers=tenant_a.headers
    )
    assert after.status_code == 200, after.text
    for tenant, instance in ((tenant_a, a), (tenant_b, b)):
        await client.delete(f"/api/instances/{instance['id']}", headers=tenant.headers)


async def test_refused_migrations_change_nothing(client: httpx.AsyncClient, fleet: Fleet, db: asyncpg.Pool) -> None:
    tenant, stranger = await create_tenant(client), await create_tenant(client)
    small = await sandbox_on(client, fleet, tenant, "m1")
    big_m1 = await sandbox_on(client, fleet, tenant, "m1", memory="700m")
    big_m2 = await sandbox_on(client, fleet, tenant, "m2", memory="700m")
    [container] = await running_containers(fleet["m1"], big_m1["id"])
    cases = [
        (small["id"], {"target_node": "nowhere"}, 404, "not found"),
        (small["id"], {"target_node": "m1"}, 409, "already runs on node"),
        (big_m1["id"], {"target_node": "m2"}, 503, "cannot take the instance"),
        (small["id"], {"target_node": ""}, 422, "target_node"),
        (small["id"], {"target_node": "m2", "extra": 1}, 422, "extra"),
    ]
    for instance_id, body, status, words in cases:
        response = await client.post(f"/api/instances/{instance_id}/migrate", json=body, headers=tenant.headers)
        assert response.status_code == status, (body, response.text)
        assert words in response.json()["error"]
    other = await client.post(
        f"/api/instances/{small['id']}/migrate", json={"target_node": "m2"}, headers=stranger.headers
    )
    assert other.status_code == 404
    rows = {
        r["id"]: r
        for r in await db.fetch("SELECT id, node_id, generation, status FROM instances WHERE tenant_id = $1", tenant.id)
    }
    assert rows[small["id"]]["node_id"] == fleet["m1"].id
    assert rows[small["id"]]["generation"] == small["generation"]
    assert rows[big_m1["id"]]["node_id"] == fleet["m1"].id
    assert rows[big_m1["id"]]["status"] == "running"
    assert [c["Id"] for c in await running_containers(fleet["m1"], big_m1["id"])] == [container["Id"]]
    for instance in (small, big_m1, big_m2):
        await client.delete(f"/api/instances/{instance['id']}", headers=tenant.headers)


async def test_drain_moves_every_instance_off_a_node_and_cordons_it(client: httpx.AsyncClient, fleet: Fleet) -> None:
    tenant = await create_tenant(client)
    instances = [await sandbox_on(client, fleet, tenant, "m1") for _ in range(3)]

    response = await client.post(f"/admin/nodes/{fleet['m1'].id}/drain", headers=ADMIN, timeout=300)

    assert response.status_code == 200, response.text
    drained = response.json()
    assert sorted(drained["moved"]) == sorted(i["id"] for i in instances)
    assert drained["failed"] == {}
    assert drained["node"]["schedulable"] is False
    for instance in instances:
        view = (await client.get(f"/api/instances/{instance['id']}", headers=tenant.headers)).json()
        assert view["nodeId"] == fleet["m2"].id
        assert len(await running_containers(fleet["m2"], instance["id"])) == 1
        assert await containers_of(fleet["m1"].engine, instance["id"]) == []
    # Cordoned by the drain, m1 takes no new instance; uncordoned, it can again.
    blocked = await client.post(
        "/api/instances",
        json={"phone": unique_phone(), "provider": "sandbox", "resources": {"cpu": "0.1", "memory": "64m"}},
        headers=tenant.headers,
    )
    assert blocked.json()["nodeId"] == fleet["m2"].id
    uncordoned = await client.post(f"/admin/nodes/{fleet['m1'].id}/uncordon", headers=ADMIN)
    assert uncordoned.json()["schedulable"] is True
    assert (await client.post("/admin/nodes/999999/drain", headers=ADMIN)).status_code == 404
    assert (await client.post("/admin/nodes/999999/cordon", headers=ADMIN)).status_code == 404
    for instance in [*instances, blocked.json()]:
        await client.delete(f"/api/instances/{instance['id']}", headers=tenant.headers)


async def test_a_failed_final_snapshot_keeps_the_instance_where_it_was(
    client: httpx.AsyncClient, fleet: Fleet, state_service: Service, db: asyncpg.Pool, migrated: dict[str, str]
) -> None:
    tenant = await create_tenant(client)
    instance = await sandbox_on(client, fleet, tenant, "m1")
    await state_service.stop()  # the old node cannot store the final snapshot
    try:
        response = await migrate(client, tenant, instance["id"], "m2")
    finally:
        state_service.start()
    assert response.status_code == 503, response.text
    assert "final snapshot failed" in response.json()["error"]
    row = await db.fetchrow("SELECT node_id, generation FROM instances WHERE id = $1", instance["id"])
    assert (row["node_id"], row["generation"]) == (fleet["m1"].id, instance["generation"])
    view = await wait_until(
        lambda: status_is(client, tenant, instance["id"], "running"), timeout=30, what="running on m1 again"
    )
    assert view["nodeId"] == fleet["m1"].id
    assert len(await running_containers(fleet["m1"], instance["id"])) == 1
    assert await containers_of(fleet["m2"].engine, instance["id"]) == []
    nc = await nats.connect(migrated["NATS_URL"])
    try:
        await wait_until(lambda: state_answers(nc), timeout=30, what="the state service back")
    finally:
        await nc.close()
    assert (await client.delete(f"/api/instances/{instance['id']}", headers=tenant.headers)).status_code == 204


async def test_failover_restores_a_lost_nodes_instance_elsewhere_and_never_runs_two(
    client: httpx.AsyncClient, fleet: Fleet, db: asyncpg.Pool, migrated: dict[str, str]
) -> None:
    tenant_a, tenant_b = await create_tenant(client), await create_tenant(client)
    a = await sandbox_on(client, fleet, tenant_a, "m1")
    b = await sandbox_on(client, fleet, tenant_b, "m2")
    for tenant, instance in ((tenant_a, a), (tenant_b, b)):
        await pair_up(client, tenant, instance["id"])
    expected = write_state(fleet["m1"].state_dir(a["id"]))

    async def snapshot_with_test_state() -> bool:  # the periodic snapshot picked the new files up
        response = await client.get(f"/api/instances/{a['id']}/snapshot", headers=tenant_a.headers)
        return response.status_code == 200 and response.json()["sizeBytes"] > 10 * MIB

    await wait_until(snapshot_with_test_state, timeout=30, what="a snapshot holding the test state")

    most_running = 0
    watching = True

    async def watch_both_engines() -> None:
        nonlocal most_running
        for _ in range(1200):  # bounded: 0.1 s apart, at most two minutes
            if not watching:
                return
            running = sum([len(await running_containers(node, a["id"])) for node in fleet.nodes.values()])
            most_running = max(most_running, running)
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch_both_engines())
    nc = await nats.connect(migrated["NATS_URL"])
    status_events = await nc.subscribe(subjects.instance_status(a["id"]))
    node_events = await nc.subscribe(subjects.node_status("m1"))
    try:
        await fleet["m1"].agent.kill9()
        killed_at = asyncio.get_running_loop().time()
        await fleet["m1"].engine.stop()
        # B writes to A while A's node is lost: the message waits for A, as WhatsApp keeps it for a
        # phone that is off, and is delivered once A runs again on m2 (decision 57).
        to_a = await client.post(
            f"/api/instances/{b['id']}/send",
            json={"to": a["phoneNumber"], "text": "during failover"},
            headers=tenant_b.headers,
        )
        assert to_a.status_code == 200, to_a.text

        async def moved() -> dict | None:
            view = (await client.get(f"/api/instances/{a['id']}", headers=tenant_a.headers)).json()
            return view if view["nodeId"] == fleet["m2"].id and view["status"] == "running" else None

        view = await wait_until(moved, timeout=30, interval=0.2, what="instance running on m2")
        assert asyncio.get_running_loop().time() - killed_at < 30
        # The tenant is told (instance status, hence webhooks) and operators too (node status).
        told = [msgspec.json.decode(m.data, type=InstanceStatusChanged) for m in await drain(status_events)]
        assert any(e.status is InstanceStatus.SCHEDULED and "node m1 lost" in (e.reason or "") for e in told)
        lost = msgspec.json.decode((await node_events.next_msg(timeout=5)).data, type=NodeStatusChanged)
        assert (lost.status, lost.moved_instances) == ("lost", (a["id"],))
        assert file_hashes(fleet["m2"].state_dir(a["id"]), expected) == expected
        sent = await client.post(
            f"/api/instances/{a['id']}/send",
            json={"to": b["phoneNumber"], "text": "after failover"},
            headers=tenant_a.headers,
        )
        assert sent.status_code in (200, 202), sent.text  # 202: accepted while the provider is still starting
        await reaches(client, tenant_a, a["id"], sent.json()["id"], "delivered")  # still paired: the session moved
        to_a_view = await reaches(client, tenant_b, b["id"], to_a.json()["id"], "delivered")
        assert "failed" not in [h["status"] for h in to_a_view["history"]]
        # A was away longer than the agents ask a phone again (the node timeout alone is longer):
        # the message went through A's mailbox, which A's session on m2 emptied.
        mail = await nc.jetstream().consumer_info(streams.SANDBOX_MAIL.name, mailbox_name(a["phoneNumber"]))
        assert mail.delivered.stream_seq is not None
        assert mail.delivered.stream_seq > 0
        assert (mail.num_pending, mail.num_ack_pending) == (0, 0)

        # m1 comes back: its agent learns the instance moved and removes the stale container, uploading nothing.
        newest_before = await db.fetchval("SELECT max(version) FROM snapshots WHERE instance_id = $1", a["id"])
        await fleet["m1"].engine.start()
        fleet["m1"].agent.start()
        await node_ready_again(client, fleet["m1"])

        async def stale_removed() -> bool:
            return await containers_of(fleet["m1"].engine, a["id"]) == []

        await wait_until(stale_removed, timeout=30, what="stale container removed from m1")
    finally:
        watching = False
        await watcher
        await nc.close()
    assert most_running == 1, "the instance ran on both nodes at once"
    stale_uploads = await db.fetchval(
        "SELECT count(*) FROM snapshots WHERE instance_id = $1 AND version > $2 AND generation < $3",
        a["id"],
        newest_before,
        view["generation"],
    )
    assert stale_uploads == 0
    for tenant, instance in ((tenant_a, a), (tenant_b, b)):
        await client.delete(f"/api/instances/{instance['id']}", headers=tenant.headers)


async def drain(subscription: Subscription) -> list[Msg]:
    """Every message the subscription holds now."""
    found = []
    while True:
        try:
            found.append(await subscription.next_msg(timeout=0.2))
        except NatsTimeoutError:
            return found


async def node_ready_again(client: httpx.AsyncClient, node: Node) -> None:
    async def ready() -> bool:
        view = (await client.get(f"/admin/nodes/{node.id}", headers=ADMIN)).json()
        return view["status"] == "ready"

    await wait_until(ready, timeout=60, what=f"node {node.name} ready again")
