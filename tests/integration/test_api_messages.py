"""The list of an instance's sent messages (`GET /api/instances/{id}/messages`) through the real API and
PostgreSQL: newest first, with histories, a page at a time; bad paging values are 4xx."""

import uuid

import httpx

from tests.support.api import create_tenant, pending_instance


async def test_an_instances_messages_are_listed_newest_first_a_page_at_a_time(client: httpx.AsyncClient, db) -> None:
    tenant, other = await create_tenant(client), await create_tenant(client)
    instance_id = await pending_instance(client, tenant)
    neighbour = await pending_instance(client, tenant)
    # Five messages a second apart, the last two at the same time (the id breaks the tie), each with a
    # history; and one of another instance of the same tenant.
    ids = [f"m{n}-{uuid.uuid4().hex[:8]}" for n in range(5)]
    for n, message_id in enumerate(ids):
        await db.execute(
            "INSERT INTO messages (id, instance_id, tenant_id, recipient, type, created_at)"
            " VALUES ($1, $2, $3, '491700000000', 'text', now() - make_interval(secs => $4))",
            message_id,
            instance_id,
            tenant.id,
            float(max(4 - n, 1)),
        )
        await db.execute(
            "INSERT INTO message_statuses (message_id, status) VALUES ($1, 'sent'), ($1, 'delivered')", message_id
        )
    await db.execute(
        "INSERT INTO messages (id, instance_id, tenant_id, recipient, type) VALUES ($1, $2, $3, '49', 'text')",
        f"n-{uuid.uuid4().hex[:8]}",
        neighbour,
        tenant.id,
    )
    path = f"/api/instances/{instance_id}/messages"
    newest_first = [*sorted(ids[3:], reverse=True), *ids[2::-1]]

    async def page(**params) -> list[dict]:
        response = await client.get(path, params=params, headers=tenant.headers)
        assert response.status_code == 200, response.text
        return response.json()

    listed = await page()
    assert [m["id"] for m in listed] == newest_first
    assert listed[0] == {
        "id": newest_first[0],
        "to": "491700000000",
        "type": "text",
        "status": "delivered",
        "history": [
            {"status": s, "reason": None, "at": listed[0]["history"][i]["at"]}
            for i, s in enumerate(["sent", "delivered"])
        ],
    }
    first = await page(limit=2)
    second = await page(limit=2, before=first[-1]["id"])
    third = await page(limit=2, before=second[-1]["id"])
    assert [m["id"] for m in first + second + third] == newest_first
    assert await page(before=newest_first[-1]) == []

    for name, bad in (("limit", "0"), ("limit", "101"), ("before", "no-such-message"), ("before", "x" * 41)):
        response = await client.get(path, params={name: bad}, headers=tenant.headers)
        assert response.status_code in (400, 422), response.text
        assert response.json()["field"] == name
    neighbours = await client.get(f"/api/instances/{neighbour}/messages", headers=tenant.headers)
    assert [m["id"] for m in neighbours.json()] == [m["id"] for m in neighbours.json() if m["id"].startswith("n-")]
    assert (
        await client.get(path, params={"before": neighbours.json()[0]["id"]}, headers=tenant.headers)
    ).status_code == 422
    assert (await client.get(path, headers=other.headers)).status_code == 404
    await db.execute("DELETE FROM instances WHERE id = ANY($1::int[])", [instance_id, neighbour])
