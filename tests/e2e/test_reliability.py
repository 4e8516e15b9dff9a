"""Commands are never lost and never duplicate a container: redelivery, kill -9, reconcile, fencing."""

import aiodocker
import httpx
import nats
import pytest
from wgs_contracts import labels, subjects
from wgs_contracts.messages import CreateInstance, InstanceSpec, Provider, StartInstance
from wgs_devstack.docker_engine import DockerEngine
from wgs_devstack.services import Service
from wgs_kit.messaging import encode
from wgs_kit.waiting import wait_until
from wgs_node_agent.runtime.docker import freeze

from tests.e2e.conftest import NODE
from tests.support.api import Tenant, create_tenant, unique_phone
from tests.support.sandbox import containers_of

pytestmark = pytest.mark.docker
SMALL = {"cpu": "0.1", "memory": "64m"}


async def create_sandbox(client: httpx.AsyncClient, tenant: Tenant, *, wait: bool) -> dict:
    """A small sandbox instance: answered once running (`wait`), or at once while still pending."""
    response = await client.post(
        "/api/instances" if wait else "/api/instances?wait=0",
        json={"phone": unique_phone(), "provider": "sandbox", "resources": SMALL},
        headers=tenant.headers,
    )
    assert response.status_code == (200 if wait else 202), response.text
    return response.json()


async def wait_status(client: httpx.AsyncClient, tenant: Tenant, instance_id: int, status: str) -> dict:
    async def reached() -> dict | None:
        view = (await client.get(f"/api/instances/{instance_id}", headers=tenant.headers)).json()
        return view if view["status"] == status else None

    return await wait_until(reached, timeout=60, interval=0.2, what=f"instance {instance_id} {status}")


async def delete(client: httpx.AsyncClient, tenant: Tenant, instance_id: int) -> None:
    response = await client.delete(f"/api/instances/{instance_id}", headers=tenant.headers)
    assert response.status_code == 204, response.text


async def test_repeated_commands_create_one_container(
    client: httpx.AsyncClient, node_agent: Service, engines: list[DockerEngine], migrated: dict[str, str]
) -> None:
    tenant = await create_tenant(client)
    instance = await create_sandbox(client, tenant, wait=False)
    running = await wait_status(client, tenant, instance["id"], "running")
    nc = await nats.connect(migrated["NATS_URL"])
    try:
        js = nc.jetstream()
        again = CreateInstance(instance_id=instance["id"], tenant_id=tenant.id)
        for attempt in range(3):  # the same command as new messages (no dedup): handled idempotently
            await js.publish(subjects.INSTANCE_CREATE, encode(again), headers={"Nats-Msg-Id": f"replay-{attempt}"})
        start = StartInstance(
            spec=InstanceSpec(
                instance_id=instance["id"],
                tenant_id=tenant.id,
                provider=Provider.SANDBOX,
                nano_cpus=100_000_000,
                memory_bytes=64 * 2**20,
                pids_limit=256,
            ),
            generation=running["generation"],
        )
        for attempt in range(3):
            await js.publish(
                subjects.node_commands("e2e-n1"), encode(start), headers={"Nats-Msg-Id": f"start-replay-{attempt}"}
            )
        stale = StartInstance(spec=start.spec, generation=running["generation"] - 1)
        await js.publish(subjects.node_commands("e2e-n1"), encode(stale), headers={"Nats-Msg-Id": "stale"})
        # A marker command after the replays: once it is handled, the replays before it were too.
        marker = await create_sandbox(client, tenant, wait=False)
        await wait_status(client, tenant, marker["id"], "running")
    finally:
        await nc.close()
    [container] = await containers_of(engines[0], instance["id"])
    assert container["Config"]["Labels"][labels.GENERATION] == str(running["generation"])
    assert container["State"]["Running"]
    await delete(client, tenant, instance["id"])
    await delete(client, tenant, marker["id"])


async def test_scheduler_killed_before_the_command_still_runs_the_instance(
    client: httpx.AsyncClient, node_agent: Service, scheduler: Service, engines: list[DockerEngine]
) -> None:
    tenant = await create_tenant(client)
    await scheduler.kill9()
    try:
        instance = await create_sandbox(client, tenant, wait=False)
        assert instance["status"] == "pending"
    finally:
        scheduler.start()
    await wait_status(client, tenant, instance["id"], "running")
    assert len(await containers_of(engines[0], instance["id"])) == 1
    await delete(client, tenant, instance["id"])


async def heard_from_the_node_just_now(db) -> None:
    """Wait until the scheduler has recorded a heartbeat of the node within the last second, so that
    it still counts the node alive for the next few seconds (a scheduler restarted by the test
    before has recorded none yet, and its last record may be nearly as old as the timeout)."""

    async def fresh() -> bool:
        recent = await db.fetchval(
            "SELECT now() - last_heartbeat_at < interval '1 second' FROM nodes WHERE name = $1", NODE
        )
        return bool(recent)

    await wait_until(fresh, timeout=30, interval=0.1, what=f"a fresh heartbeat of {NODE}")


async def test_agent_killed_between_command_and_start_still_runs_the_instance(
    client: httpx.AsyncClient, node_agent: Service, engines: list[DockerEngine], db
) -> None:
    tenant = await create_tenant(client)
    await heard_from_the_node_just_now(db)  # placed on it while its agent is down, before it counts as lost
    await node_agent.kill9()
    try:
        instance = await create_sandbox(client, tenant, wait=False)
        await wait_status(client, tenant, instance["id"], "scheduled")
        assert await containers_of(engines[0], instance["id"]) == []
    finally:
        node_agent.start()
    await wait_status(client, tenant, instance["id"], "running")
    assert len(await containers_of(engines[0], instance["id"])) == 1
    await delete(client, tenant, instance["id"])


async def test_agent_removes_labelled_containers_it_should_not_run(
    node_agent: Service, engines: list[DockerEngine]
) -> None:
    orphan_id = 987654
    async with aiodocker.Docker(url=engines[0].host) as docker:
        container = await docker.containers.create(
            {
                "Image": "wgs-provider-sandbox:latest",
                "Labels": {
                    labels.MANAGED: "true",
                    labels.INSTANCE_ID: str(orphan_id),
                    labels.GENERATION: "1",
                    labels.TENANT_ID: "1",
                    labels.PROVIDER: "sandbox",
                },
                "HostConfig": {"NetworkMode": "none"},
            },
            name=f"wgs-orphan-{orphan_id}",
        )
        await container.start()

    async def gone() -> bool:
        return await containers_of(engines[0], orphan_id) == []

    await wait_until(gone, timeout=30, interval=0.3, what="orphan container removed by reconcile")


async def test_agent_restart_adopts_running_containers(
    client: httpx.AsyncClient, node_agent: Service, engines: list[DockerEngine]
) -> None:
    tenant = await create_tenant(client)
    instance = await create_sandbox(client, tenant, wait=True)
    [before] = await containers_of(engines[0], instance["id"])
    await node_agent.kill9()
    node_agent.start()
    marker = await create_sandbox(client, tenant, wait=False)  # handled only once the restarted agent reconciled
    await wait_status(client, tenant, marker["id"], "running")
    [after] = await containers_of(engines[0], instance["id"])
    assert after["Id"] == before["Id"]
    assert after["State"]["Running"]
    await delete(client, tenant, instance["id"])
    await delete(client, tenant, marker["id"])


async def test_agent_unpauses_a_container_left_paused_by_a_snapshot_it_never_finished(
    client: httpx.AsyncClient, node_agent: Service, engines: list[DockerEngine]
) -> None:
    tenant = await create_tenant(client)
    instance = await create_sandbox(client, tenant, wait=True)
    await node_agent.kill9()  # as if it died between pause and unpause
    async with aiodocker.Docker(url=engines[0].host) as docker:
        await freeze(docker.containers.container(f"wgs-instance-{instance['id']}"))
    node_agent.start()

    async def thawed() -> bool:
        [container] = await containers_of(engines[0], instance["id"])
        return container["State"]["Running"] and not container["State"]["Paused"]

    await wait_until(thawed, timeout=30, interval=0.2, what="container unpaused by the agent")
    await delete(client, tenant, instance["id"])
