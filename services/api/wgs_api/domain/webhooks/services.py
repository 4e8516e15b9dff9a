"""Tenants' webhook endpoints and their delivery logs in PostgreSQL."""

import json
import re
from datetime import UTC, datetime
from typing import Any, Final
from uuid import uuid4

import msgspec
from wgs_contracts.instance_events import EVENT_KINDS
from wgs_contracts.webhook_envelope import TEST_EVENT_PREFIX, TEST_EVENT_TYPE, endpoint_test_body
from wgs_db.engine import DB
from wgs_db.tables import Tenant, WebhookAttempt, WebhookDelivery, WebhookEndpoint

from wgs_api.domain.instances.services import fetch_own
from wgs_api.domain.webhooks import schemas
from wgs_api.domain.webhooks.urls import validate_url
from wgs_api.errors import Conflict, Invalid, NotFound

EVENT_FILTERS: Final = frozenset({"*", *EVENT_KINDS})
DELIVERY_STATUSES: Final = ("pending", "sending", "delivered", "dead")
DESCRIPTION_MAX = 512
EVENT_ID_MAX = 200  # longer than any event id (`{instance}:{generation}:{seq}`, or a uuid)
# Headers a tenant may add to its deliveries (decision 51): a few, plain, and none that the gateway
# sets itself or that changes how the request is framed or routed.
HEADERS_MAX = 10
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}")  # an RFC 9110 token
HEADER_VALUE = re.compile(r"[\x20-\x7e\t]{0,1024}")  # visible ASCII, spaces and tabs: no line breaks
RESERVED_HEADERS = frozenset(
    {
        "connection",
        "content-encoding",
        "content-length",
        "content-type",
        "expect",
        "host",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
    }
)
# Endpoints of one scope (the tenant's own, or one instance's): every event is posted to each of
# its scope's endpoints, so a scope's count multiplies the webhooks service's work for every event.
MAX_ENDPOINTS_PER_SCOPE: Final = 25
MAX_GRACE_SECONDS: Final = 7 * 86_400  # how long a rotated-out secret may keep signing
MAX_RECOVERED: Final = 10_000  # dead deliveries one recovery puts back (one statement)

# The replaced secret signs beside the new one until the grace ends; with no grace it stops at
# once (and so does an earlier rotation's, still in its grace).
ROTATE_SECRET = """
UPDATE webhook_endpoints
   SET previous_secret = CASE WHEN {}::int > 0 THEN secret END,
       previous_secret_expires_at = CASE WHEN {}::int > 0 THEN now() + make_interval(secs => {}::int) END,
       secret = webhook_secret()
 WHERE id = {} AND tenant_id = {}
RETURNING *
"""

INSERT_ENDPOINT = """
INSERT INTO webhook_endpoints (tenant_id, instance_id, url, events, enabled, ordered, description, headers)
VALUES ({}, {}, {}, {}, {}, {}, {}, {}::jsonb)
RETURNING *
"""

# Deleting the endpoint adopted from an instance's `webhook` field clears that field (or it would come back).
DELETE_ENDPOINT = """
WITH gone AS (
    DELETE FROM webhook_endpoints WHERE id = {} AND tenant_id = {} RETURNING instance_id, legacy
), cleared AS (
    UPDATE instances SET webhook_url = NULL, updated_at = now()
      FROM gone
     WHERE gone.legacy AND instances.id = gone.instance_id
)
SELECT count(*) AS deleted FROM gone
"""

# What sending a delivery again sets: due now, with a fresh retry schedule (its attempts so far kept).
AGAIN = "status = 'pending', next_attempt_at = now(), retry_base = attempts, lease_until = NULL, delivered_at = NULL"

REDELIVER = f"""
UPDATE webhook_deliveries SET {AGAIN}
 WHERE id = {{}} AND endpoint_id = {{}} AND status <> 'sending'
RETURNING *
"""

# The endpoint's dead deliveries created in [since, until), oldest first: `limit` of them back to
# pending as a redelivery does (the one more looked at says whether some are left).
RECOVER = f"""
WITH dead AS (
    SELECT id, created_at FROM webhook_deliveries
     WHERE endpoint_id = {{}} AND status = 'dead' AND created_at >= {{}} AND created_at < {{}}
     ORDER BY created_at, id
     LIMIT {{}}::int + 1
), recovered AS (
    UPDATE webhook_deliveries d SET {AGAIN}
      FROM (SELECT id FROM dead ORDER BY created_at, id LIMIT {{}}) picked
     WHERE d.id = picked.id AND d.status = 'dead'
    RETURNING 1
)
SELECT (SELECT count(*) FROM recovered) AS redelivered, (SELECT count(*) FROM dead) > {{}} AS more
"""

# A test event joins the endpoint's queue as any event does, if the endpoint is still there and enabled.
INSERT_TEST_DELIVERY = """
INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, payload)
SELECT id, {}, {}, {} FROM webhook_endpoints WHERE id = {} AND tenant_id = {} AND enabled
RETURNING *
"""


def endpoint_view(row: dict[str, Any]) -> schemas.Endpoint:
    """The tenant's view of an endpoint row, without its secret."""
    return schemas.Endpoint(
        id=row["id"],
        instance_id=row["instance_id"],
        url=row["url"],
        events=list(row["events"]),
        enabled=row["enabled"],
        ordered=row["ordered"],
        description=row["description"],
        legacy=row["legacy"],
        created_at=row["created_at"],
    )


def endpoint_with_secret(row: dict[str, Any]) -> schemas.EndpointWithSecret:
    """The view of an endpoint row with its signing secret."""
    view = endpoint_view(row)
    expires_at = row["previous_secret_expires_at"]
    if expires_at is not None and expires_at <= datetime.now(UTC):
        expires_at = None  # its grace is over: it no longer signs (the retention sweep erases it)
    headers = row["headers"]
    return schemas.EndpointWithSecret(
        **msgspec.structs.asdict(view),
        secret=row["secret"],
        previous_secret_expires_at=expires_at,
        headers=json.loads(headers) if isinstance(headers, str) else headers,
    )


def delivery_view(row: dict[str, Any]) -> schemas.Delivery:
    """The delivery log's view of a delivery row."""
    return schemas.Delivery(
        id=row["id"],
        event_id=row["event_id"],
        type=row["event_type"],
        status=row["status"],
        attempts=row["attempts"],
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        last_latency_ms=row["last_latency_ms"],
        next_attempt_at=row["next_attempt_at"] if row["status"] == "pending" else None,
        created_at=row["created_at"],
        delivered_at=row["delivered_at"],
    )


def validate_events(events: list[str]) -> list[str]:
    """The event filter without repeats; 422 naming `events` when empty or unknown."""
    unknown = [e for e in events if e not in EVENT_FILTERS]
    if not events or unknown:
        allowed = ", ".join(sorted(EVENT_FILTERS))
        raise Invalid(f"events: expected a non-empty list of {allowed}", field="events")
    return list(dict.fromkeys(events))


def validate_headers(headers: dict[str, str]) -> str:
    """The headers as JSON for the `headers` column; 422 naming `headers` when there are too many, a
    name is not a token, is reserved (`RESERVED_HEADERS`, `webhook-*`) or repeated in another case,
    or a value is not one line of at most 1024 visible ASCII characters."""
    if len(headers) > HEADERS_MAX:
        raise Invalid(f"headers: at most {HEADERS_MAX}", field="headers")
    seen: set[str] = set()
    for name, value in headers.items():
        lowered = name.lower()
        if not HEADER_NAME.fullmatch(name) or lowered in seen:
            raise Invalid(f"headers: {name!r} is not a header name, or is given twice", field="headers")
        if lowered in RESERVED_HEADERS or lowered.startswith("webhook-"):
            raise Invalid(f"headers: {name!r} is set by the gateway", field="headers")
        if not HEADER_VALUE.fullmatch(value):
            raise Invalid(
                f"headers: the value of {name!r} must be one line of visible ASCII, 1024 at most", field="headers"
            )
        seen.add(lowered)
    return json.dumps(headers)


def validate_description(description: str | None) -> None:
    """422 naming `description` when it is too long."""
    if description is not None and len(description) > DESCRIPTION_MAX:
        raise Invalid(f"description: at most {DESCRIPTION_MAX} characters", field="description")


async def fetch_own_endpoint(tenant_id: int, endpoint_id: int) -> dict[str, Any]:
    """The tenant's endpoint row; another tenant's is as missing as a deleted one."""
    row = (
        await WebhookEndpoint.select()
        .where((WebhookEndpoint.id == endpoint_id) & (WebhookEndpoint.tenant == tenant_id))
        .first()
    )
    if row is None:
        raise NotFound("Webhook endpoint not found")
    return row


async def create_endpoint(
    tenant_id: int, data: schemas.EndpointCreate, instance_id: int | None = None
) -> schemas.EndpointWithSecret:
    """Create an endpoint for one of the tenant's instances, or (no `instance_id`) for all of them."""
    if instance_id is not None:
        await fetch_own(tenant_id, instance_id)
    events = validate_events(data.events)
    validate_description(data.description)
    headers = validate_headers(data.headers)
    await validate_url(data.url)
    async with DB.transaction():  # the tenant's row lock makes concurrent creations count one after the other
        await Tenant.select(Tenant.id).where(Tenant.id == tenant_id).first().lock_rows("NO KEY UPDATE")
        scope = WebhookEndpoint.instance.is_null() if instance_id is None else WebhookEndpoint.instance == instance_id
        if (
            await WebhookEndpoint.count().where((WebhookEndpoint.tenant == tenant_id) & scope)
            >= MAX_ENDPOINTS_PER_SCOPE
        ):
            owner = "the tenant" if instance_id is None else "an instance"
            raise Conflict(f"At most {MAX_ENDPOINTS_PER_SCOPE} webhook endpoints for {owner}; delete one first.")
        rows = await WebhookEndpoint.raw(
            INSERT_ENDPOINT,
            tenant_id,
            instance_id,
            data.url,
            events,
            data.enabled,
            data.ordered,
            data.description,
            headers,
        )
    return endpoint_with_secret(rows[0])


async def list_endpoints(tenant_id: int, instance_id: int | None = None) -> list[schemas.Endpoint]:
    """The tenant-level endpoints, or those of one instance (its `webhook` field adopted first)."""
    query = WebhookEndpoint.select().where(WebhookEndpoint.tenant == tenant_id)
    if instance_id is None:
        query = query.where(WebhookEndpoint.instance.is_null())
    else:
        await fetch_own(tenant_id, instance_id)
        await WebhookEndpoint.adopt_instance_webhook(instance_id)
        query = query.where(WebhookEndpoint.instance == instance_id)
    return [endpoint_view(r) for r in await query.order_by(WebhookEndpoint.id)]


async def get_endpoint(tenant_id: int, endpoint_id: int) -> schemas.EndpointWithSecret:
    """One endpoint with its secret."""
    return endpoint_with_secret(await fetch_own_endpoint(tenant_id, endpoint_id))


async def update_endpoint(tenant_id: int, endpoint_id: int, data: schemas.EndpointUpdate) -> schemas.EndpointWithSecret:
    """Change the given fields; a new URL is checked as on creation."""
    await fetch_own_endpoint(tenant_id, endpoint_id)
    changes: dict[Any, Any] = {}
    if not isinstance(data.events, msgspec.UnsetType):
        changes[WebhookEndpoint.events] = validate_events(data.events)
    if not isinstance(data.description, msgspec.UnsetType):
        validate_description(data.description)
        changes[WebhookEndpoint.description] = data.description
    if not isinstance(data.url, msgspec.UnsetType):
        await validate_url(data.url)
        changes[WebhookEndpoint.url] = data.url
    if not isinstance(data.enabled, msgspec.UnsetType):
        changes[WebhookEndpoint.enabled] = data.enabled
    if not isinstance(data.ordered, msgspec.UnsetType):
        changes[WebhookEndpoint.ordered] = data.ordered
    if not isinstance(data.headers, msgspec.UnsetType):
        changes[WebhookEndpoint.headers] = validate_headers(data.headers)
    if changes:
        await WebhookEndpoint.update(changes).where(
            (WebhookEndpoint.id == endpoint_id) & (WebhookEndpoint.tenant == tenant_id)
        )
    return await get_endpoint(tenant_id, endpoint_id)


async def delete_endpoint(tenant_id: int, endpoint_id: int) -> None:
    """Delete an endpoint and its delivery log."""
    rows = await WebhookEndpoint.raw(DELETE_ENDPOINT, endpoint_id, tenant_id)
    if not rows[0]["deleted"]:
        raise NotFound("Webhook endpoint not found")


async def rotate_secret(tenant_id: int, endpoint_id: int, grace_seconds: int) -> schemas.EndpointWithSecret:
    """Replace the endpoint's secret; the old one keeps signing beside it for `grace_seconds`."""
    if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise Invalid(f"graceSeconds: must be 0-{MAX_GRACE_SECONDS}", field="graceSeconds")
    rows = await WebhookEndpoint.raw(ROTATE_SECRET, grace_seconds, grace_seconds, grace_seconds, endpoint_id, tenant_id)
    if not rows:
        raise NotFound("Webhook endpoint not found")
    return endpoint_with_secret(rows[0])


async def list_deliveries(
    tenant_id: int,
    endpoint_id: int,
    status: str | None,
    limit: int,
    before: int | None = None,
    event_id: str | None = None,
) -> list[schemas.Delivery]:
    """The endpoint's deliveries, newest first, optionally of one status, with ids below `before`, or
    of one event (its `webhook-id`)."""
    if status is not None and status not in DELIVERY_STATUSES:
        raise Invalid(f"status: expected one of {', '.join(DELIVERY_STATUSES)}", field="status")
    if event_id is not None and not 1 <= len(event_id) <= EVENT_ID_MAX:
        raise Invalid(f"eventId: 1-{EVENT_ID_MAX} characters", field="eventId")
    await fetch_own_endpoint(tenant_id, endpoint_id)
    query = WebhookDelivery.select().where(WebhookDelivery.endpoint == endpoint_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if before is not None:
        query = query.where(WebhookDelivery.id < before)
    if event_id is not None:
        query = query.where(WebhookDelivery.event_id == event_id)
    rows = await query.order_by(WebhookDelivery.id, ascending=False).limit(limit)
    return [delivery_view(r) for r in rows]


async def fetch_delivery(tenant_id: int, endpoint_id: int, delivery_id: int) -> dict[str, Any]:
    """A delivery of the tenant's endpoint, or 404."""
    await fetch_own_endpoint(tenant_id, endpoint_id)
    row = (
        await WebhookDelivery.select()
        .where((WebhookDelivery.id == delivery_id) & (WebhookDelivery.endpoint == endpoint_id))
        .first()
    )
    if row is None:
        raise NotFound("Delivery not found")
    return row


async def get_delivery(tenant_id: int, endpoint_id: int, delivery_id: int) -> schemas.DeliveryDetail:
    """One delivery with its payload and attempts."""
    row = await fetch_delivery(tenant_id, endpoint_id, delivery_id)
    attempts = (
        await WebhookAttempt.select().where(WebhookAttempt.delivery == delivery_id).order_by(WebhookAttempt.attempt)
    )
    view = delivery_view(row)
    return schemas.DeliveryDetail(
        **msgspec.structs.asdict(view),
        payload=json.loads(row["payload"]),
        attempt_log=[
            schemas.Attempt(
                attempt=a["attempt"],
                started_at=a["started_at"],
                status_code=a["status_code"],
                error=a["error"],
                latency_ms=a["latency_ms"],
            )
            for a in attempts
        ],
    )


async def redeliver(tenant_id: int, endpoint_id: int, delivery_id: int) -> schemas.Delivery:
    """Send a delivery again now, with a fresh retry schedule; its attempts so far stay in the log."""
    await fetch_delivery(tenant_id, endpoint_id, delivery_id)
    rows = await WebhookDelivery.raw(REDELIVER, delivery_id, endpoint_id)
    if not rows:
        raise Conflict("The delivery is being sent right now.")
    return delivery_view(rows[0])


async def recover(tenant_id: int, endpoint_id: int, recovery: schemas.Recovery) -> schemas.Recovered:
    """Send again the endpoint's dead deliveries of a time range (after an outage longer than the retries)."""
    await fetch_own_endpoint(tenant_id, endpoint_id)
    if not 1 <= recovery.limit <= MAX_RECOVERED:
        raise Invalid(f"limit: must be 1-{MAX_RECOVERED}", field="limit")
    until = recovery.until if recovery.until is not None else datetime.now(UTC)
    if recovery.since >= until:
        raise Invalid("since: must be before until (default now)", field="since")
    rows = await WebhookDelivery.raw(
        RECOVER, endpoint_id, recovery.since, until, recovery.limit, recovery.limit, recovery.limit
    )
    return schemas.Recovered(redelivered=rows[0]["redelivered"], more=rows[0]["more"])


async def send_test_event(tenant_id: int, endpoint_id: int) -> schemas.Delivery:
    """Queue a `webhook.test` event for the endpoint, whatever its event filter; 409 when it is disabled
    (it would wait there). It is signed, retried and logged as any delivery."""
    endpoint = await fetch_own_endpoint(tenant_id, endpoint_id)
    event_id = f"{TEST_EVENT_PREFIX}{uuid4().hex}"
    body = endpoint_test_body(event_id, endpoint["instance_id"], endpoint_id, datetime.now(UTC))
    rows = await WebhookDelivery.raw(
        INSERT_TEST_DELIVERY, event_id, TEST_EVENT_TYPE, body.decode(), endpoint_id, tenant_id
    )
    if not rows:
        await fetch_own_endpoint(tenant_id, endpoint_id)  # 404 when it was deleted meanwhile
        raise Conflict("The endpoint is disabled: enable it to send it a test event.")
    return delivery_view(rows[0])
