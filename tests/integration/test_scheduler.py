"""Scheduler on real NATS and PostgreSQL: placement, spreading, no-room answers, leader election, and
the sandbox mail a deleted instance leaves."""

import httpx
import msgspec
import nats
from nats.js.client import JetStreamContext
from wgs_contracts import streams, subjects
from wgs_contracts.instance_events import SandboxEnvelope
from wgs_contracts.messages import NodeCommand, StartInstance
from wgs_devstack.services import Service
from wgs_kit.messaging import encode
from wgs_kit.waiting import wait_until
from wgs_scheduler.app import COMMAND_CONSUMER
from wgs_scheduler.leader import APPLICATION_PREFIX, LEADER_LOCK_KEY

from tests.integration.conftest import InstanceRows
from tests.integration.fake_nodes import fake_nodes
from tests.support.api import create_tenant, unique_phone
from tests.support.sandbox_network import mailbox
from tests.support.services import frozen_objects

GB = 2**30
CPU = 1_000_000_000


async def placed_node(db, instance_id: int) -> int | None:
    return await db.fetchval("SELECT node_id FROM instances WHERE id = $1", instance_id)


async def test_instance_is_placed_and_its_node_gets_the_start_command(
    client: httpx.AsyncClient, db, scheduler: Service, migrated: dict[str, str]
) -> None:
    tenant = await create_tenant(client)
    async with fake_nodes(client, db, migrated["NATS_URL"], {"fake-a": (CPU, GB, ("waba",))}) as ids:
        nc = await nats.connect(migrated["NATS_URL"])
        commands = await nc.subscribe(subjects.node_commands("fake-a"))
        try:
            body = {"phone": unique_phone(), "provider": "waba", "resources": {"cpu": 0.5, "memory": "256m"}}
            response = await client.post("/api/instances?wait=0", json=body, headers=tenant.headers)
            assert response.status_code == 202, response.text
            instance = response.json()
            assert instance["status"] in ("pending", "scheduled")  # not waited for: as far as it got
            message = await commands.next_msg(timeout=30)
            command = msgspec.json.decode(message.data, type=NodeCommand)
            assert isinstance(command, StartInstance)
            assert command.spec.instance_id == instance["id"]
            assert command.spec.nano_cpus == CPU // 2
            assert command.spec.memory_bytes == 256 * 2**20
            assert command.generation == 1
            assert (message.headers or {})["Nats-Msg-Id"] == f"instance.start:{instance['id']}:1"
            assert await placed_node(db, instance["id"]) == ids["fake-a"]
            view = (await client.get(f"/api/instances/{instance['id']}", headers=tenant.headers)).json()
            assert view["status"] == "scheduled"
            assert view["nodeId"] == ids["fake-a"]
        finally:
            await nc.close()


async def test_instances_spread_over_nodes_and_no_room_is_503_with_nothing_left(
    client: httpx.AsyncClient, db, scheduler: Service, migrated: dict[str, str]
) -> None:
    tenant = await create_tenant(client)
    nodes = {"fake-b": (CPU, GB, ("waba",)), "fake-c": (CPU, GB, ("waba",))}
    async with fake_nodes(client, db, migrated["NATS_URL"], nodes) as ids:
        placed = []
        for _ in range(2):
            body = {"phone": unique_phone(), "provider": "waba", "resources": {"cpu": 0.6, "memory": "256m"}}
            response = await client.post("/api/instances?wait=0", json=body, headers=tenant.headers)
            instance_id = response.json()["id"]

            async def on_a_node(instance_id: int = instance_id) -> int | None:
                return await placed_node(db, instance_id)

            placed.append(await wait_until(on_a_node, timeout=15, what="placement"))
        assert sorted(placed) == sorted(ids.values())

        phone = unique_phone()
        body = {"phone": phone, "provider": "waba", "resources": {"cpu": 0.6, "memory": "256m"}}
        full = await client.post("/api/instances", json=body, headers=tenant.headers)
        assert full.status_code == 503, full.text
        assert full.json()["code"] == "no_capacity"
        assert "room" in full.json()["error"]
        assert await db.fetchval("SELECT count(*) FROM instances WHERE phone_number = $1", phone) == 0


async def test_provider_without_image_on_any_node_is_503(
    client: httpx.AsyncClient, db, scheduler: Service, migrated: dict[str, str]
) -> None:
    tenant = await create_tenant(client)
    phone = unique_phone()
    async with fake_nodes(client, db, migrated["NATS_URL"], {"fake-e": (CPU, GB, ("waba",))}):
        response = await client.post(
            "/api/instances",
            json={"phone": phone, "provider": "whatsmeow", "resources": {"cpu": 0.1, "memory": "64m"}},
            headers=tenant.headers,
        )
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "no_capacity"
    assert "whatsmeow" in response.json()["error"]
    assert await db.fetchval("SELECT count(*) FROM instances WHERE phone_number = $1", phone) == 0


async def lock_holder(db) -> str | None:
    """The application name of the connection holding the scheduler leader lock."""
    name = await db.fetchval(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = $1",
        LEADER_LOCK_KEY,
    )
    return name.removeprefix(APPLICATION_PREFIX) if name else None


async def test_one_leader_at_a_time_and_a_standby_takes_over_after_kill_9(
    client: httpx.AsyncClient, db, scheduler: Service, migrated: dict[str, str], work_dir
) -> None:
    first = await wait_until(lambda: lock_holder(db), timeout=15, what="a leader")
    standby = Service("scheduler-2", "wgs_scheduler", {**migrated, "WGS_SCHEDULER_ID": "standby"}, work_dir / "logs")
    standby.start()
    try:
        await wait_until(
            lambda: db.fetchval(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = $1", APPLICATION_PREFIX + "standby"
            ),
            timeout=15,
            what="standby connected",
        )
        assert await lock_holder(db) == first  # the standby waits
        await scheduler.kill9()

        async def standby_leads() -> bool:
            return await lock_holder(db) == "standby"

        await wait_until(standby_leads, timeout=15, what="standby takes the lock")
        tenant = await create_tenant(client)
        async with fake_nodes(client, db, migrated["NATS_URL"], {"fake-d": (CPU, GB, ("waba",))}) as ids:
            body = {"phone": unique_phone(), "provider": "waba", "resources": {"cpu": 0.5, "memory": "128m"}}
            created = await client.post("/api/instances?wait=0", json=body, headers=tenant.headers)

            async def placed() -> int | None:
                return await placed_node(db, created.json()["id"])

            assert await wait_until(placed, timeout=15, what="placement by the new leader") == ids["fake-d"]
    finally:
        scheduler.start()
        await standby.stop()
    await wait_until(lambda: lock_holder(db), timeout=15, what="the restarted scheduler leads")


async def lock_backend(db) -> int | None:
    """The PostgreSQL backend (pid) of the connection holding the scheduler leader lock."""
    return await db.fetchval(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = 0 AND objid = $1",
        LEADER_LOCK_KEY,
    )


async def test_a_leader_deposed_by_a_lost_connection_is_elected_again_and_consumes_commands(
    client: httpx.AsyncClient, db, scheduler: Service, migrated: dict[str, str]
) -> None:
    """Deposed, the scheduler stops its command consumer; elected again, the same process starts it
    again (decision 61): a create's command is then consumed and acknowledged."""
    holder = await wait_until(lambda: lock_holder(db), timeout=15, what="a leader")
    backend = await lock_backend(db)
    assert await db.fetchval("SELECT pg_terminate_backend($1)", backend)

    async def elected_again() -> bool:
        current = await lock_backend(db)
        return current is not None and current != backend and await lock_holder(db) == holder

    await wait_until(elected_again, timeout=15, what="the same scheduler elected again")
    tenant = await create_tenant(client)
    nc = await nats.connect(migrated["NATS_URL"])
    try:
        js = nc.jetstream()
        before = (await js.stream_info(streams.COMMANDS.name)).state.last_seq
        body = {"phone": unique_phone(), "provider": "waba", "resources": {"cpu": 0.5, "memory": "128m"}}
        created = await client.post("/api/instances?wait=0", json=body, headers=tenant.headers)
        assert created.status_code == 202, created.text

        async def consumed() -> bool:
            """The create's command (after `before`) delivered, and nothing of the consumer's left unacked. The
            stream's last seq is no mark: commands to nodes, outside this consumer's subjects, may follow it."""
            info = await js.consumer_info(streams.COMMANDS.name, COMMAND_CONSUMER)
            return info.delivered.stream_seq > before and info.num_pending == 0 and info.num_ack_pending == 0

        await wait_until(consumed, timeout=15, what="the create's command consumed by the re-elected leader")
    finally:
        await nc.close()


async def test_the_scheduler_freezes_its_start_up_heap(scheduler: Service) -> None:
    """Full collections skip what start-up made (decision 36)."""
    assert await frozen_objects(scheduler) > 10_000


async def test_deleting_a_sandbox_instance_drops_its_phones_mail_wherever_it_runs(
    client: httpx.AsyncClient, db, scheduler: Service, js: JetStreamContext, instance_rows: InstanceRows
) -> None:
    tenant = await create_tenant(client)
    instance_id = await instance_rows.add(tenant.id)  # on a node that never answers: no agent drops the mail
    phone = await db.fetchval("SELECT phone_number FROM instances WHERE id = $1", instance_id)
    waiting = SandboxEnvelope(kind="message", sender="491700000000", recipient=phone, body=b'{"batch": []}')
    await js.publish(subjects.sandbox_mail(phone), encode(waiting), stream=streams.SANDBOX_MAIL.name)
    assert await mailbox(js, phone) == [waiting]

    response = await client.delete(f"/api/instances/{instance_id}", headers=tenant.headers)
    assert response.status_code in (202, 204), response.text

    async def dropped() -> bool:
        return await mailbox(js, phone) == []

    await wait_until(dropped, timeout=15, what="the deleted instance's mail dropped")
