"""Every route of the OpenAPI document answers malformed or out-of-range input with a JSON
error, never a 500.

A sweep over the document, so that a new route is covered without a new test: each operation
with each bad body and each of its query parameters with bad values, its path ids either the
test's own (a tenant, a pending instance, a disabled webhook endpoint, a cordoned node without
a Docker engine) or ids that cannot exist. DELETEs go to ids that cannot exist only. Every
answer must be a 2xx, or a JSON error that is a 4xx or a 503. What the sweep created (API
keys, instances, webhook endpoints, a node) is deleted after it. It found the tenant limits
that reached PostgreSQL unchecked (`maxInstances` and `sendBurst` beyond its `integer` were
500s).
"""

import json
import uuid
from typing import Any

import httpx

from tests.support.api import ADMIN, Tenant, create_tenant, pending_instance

HUGE = 99_999_999_999  # beyond PostgreSQL's integer
BAD_BODIES: tuple[bytes, ...] = (
    b"",
    b"{",
    b"[]",
    b"null",
    b'"text"',
    b"\xff\xfe",
    b'{"to": 1, "text": null}',
    b'{"to": "491700000002", "type": "image", "image": {"base64": "!!!"}}',
    b'{"to": "491700000002", "type": "location", "location": {"latitude": 1e400, "longitude": "x"}}',
    b'{"to": "' + b"4" * 50 + b'", "text": "x"}',
    b'{"name": "' + b"x" * 5000 + b'", "phone": "' + b"1" * 5000 + b'"}',
    json.dumps({"maxInstances": HUGE, "sendBurst": HUGE}).encode(),
    b'{"sendRatePerSecond": 1e308}',
    b'{"cpuLimit": "1e308", "memoryLimit": "99999999999999g"}',
    b'{"phone": "491700000003", "provider": "nope", "node": ' + str(HUGE * HUGE).encode() + b"}",
    b'{"url": "http://127.0.0.1:9/' + b"p" * 5000 + b'", "secret": "' + b"s" * 100_000 + b'"}',
    b'{"url": "ftp://example.com", "events": 5}',
    b'{"name": "n", "dockerHost": "h", "publicHost": "' + b"h" * 5000 + b'"}',
    b'{"seq": true, "code": 5, "schedulable": "yes", "retentionDays": "thirty"}',
)
IMPOSSIBLE_IDS = ("0", "-1", "2147483648", "99999999999999999999", "abc")
BAD_QUERY_VALUES = ("", "-1", "abc", "1e308", "99999999999999999999")


def bad_answer(response: httpx.Response) -> str | None:
    """What is wrong with an answer to bad input (None: a 2xx, or a 4xx JSON error). A `503` JSON
    error is a state, not a failure: the instance is not running, no scheduler leads (none runs here)."""
    if response.status_code >= 500 and response.status_code != 503:
        return f"{response.status_code} {response.text[:120]}"
    if response.status_code >= 400:
        if "json" not in response.headers.get("content-type", ""):
            return f"{response.status_code} not JSON: {response.headers.get('content-type')}"
        if "error" not in response.json():
            return f"{response.status_code} without an `error`: {response.text[:120]}"
    return None


async def own_things(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, str]:
    """Path ids of things this test made: its tenant, a pending instance, a disabled endpoint, a node."""
    instance_id = await pending_instance(client, tenant)
    endpoint = await client.post(
        "/api/webhooks", json={"url": "http://127.0.0.1:9/hook", "enabled": False}, headers=tenant.headers
    )
    assert endpoint.status_code == 201, endpoint.text
    node = await client.post(
        "/admin/nodes",
        json={"name": f"bad-input-{uuid.uuid4().hex[:8]}", "dockerHost": "none", "publicHost": "none",
              "schedulable": False},
        headers=ADMIN,
    )  # fmt: skip
    assert node.status_code == 200, node.text
    return {
        "tenant_id": str(tenant.id),
        "instance_id": str(instance_id),
        "endpoint_id": str(endpoint.json()["id"]),
        "node_id": str(node.json()["id"]),
        "key_id": "1",
        "delivery_id": "1",
        "message_id": "none",
        "version": "1",
    }


def urls(path: str, method: str, ids: dict[str, str]) -> list[str]:
    """The path with the test's own ids (not for DELETE), and with each impossible id."""
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]

    def filled(last: str | None = None) -> str:
        url = path
        for name in names:
            url = url.replace("{" + name + "}", last if last is not None and name == names[-1] else ids[name])
        return url

    odd = [filled(odd_id) for odd_id in IMPOSSIBLE_IDS] if names else []
    return odd if method == "delete" else [filled(), *odd]


async def delete_what_the_sweep_made(client: httpx.AsyncClient, tenant: Tenant, node_ids: set[int]) -> None:
    for instance in (await client.get("/api/instances", headers=tenant.headers)).json():
        await client.delete(f"/api/instances/{instance['id']}", headers=tenant.headers)
    for endpoint in (await client.get("/api/webhooks", headers=tenant.headers)).json():
        await client.delete(f"/api/webhooks/{endpoint['id']}", headers=tenant.headers)
    for node_id in node_ids:
        await client.delete(f"/admin/nodes/{node_id}", headers=ADMIN)


async def test_bad_input_to_every_route_is_a_4xx_json_error(client: httpx.AsyncClient) -> None:
    document = (await client.get("/docs/openapi.json")).json()
    nodes_before = {node["id"] for node in (await client.get("/admin/nodes", headers=ADMIN)).json()}
    tenant = await create_tenant(client)
    ids = await own_things(client, tenant)
    problems: list[str] = []
    answered = 0
    try:
        for path, operations in document["paths"].items():
            headers: dict[str, Any] = {**(ADMIN if path.startswith("/admin") else tenant.headers)}
            headers["content-type"] = "application/json"
            for method in operations.keys() & {"get", "post", "put", "patch", "delete"}:
                bodies = BAD_BODIES if method in ("post", "put", "patch") else (None,)
                queries = [
                    {parameter["name"]: value}
                    for parameter in operations[method].get("parameters", [])
                    if parameter["in"] == "query"
                    for value in BAD_QUERY_VALUES
                ]
                for url in urls(path, method, ids):
                    for body, query in [(body, {}) for body in bodies] + [(bodies[0], query) for query in queries]:
                        response = await client.request(
                            method.upper(), url, params=query, content=body, headers=headers
                        )
                        answered += 1
                        if (problem := bad_answer(response)) is not None:
                            problems.append(f"{method.upper()} {url} {query} {(body or b'')[:60]!r}: {problem}")
    finally:
        nodes_after = {node["id"] for node in (await client.get("/admin/nodes", headers=ADMIN)).json()}
        await delete_what_the_sweep_made(client, tenant, nodes_after - nodes_before)
    assert answered > 1000  # the document was read and swept
    assert problems == [], "\n".join(problems)
