"""Webhook endpoint and delivery bodies (camelCase JSON)."""

from datetime import datetime
from typing import Annotated, Any

import msgspec

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class EndpointCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """`POST /api/webhooks` (every instance of the tenant) and `POST /api/instances/{id}/webhooks` body."""

    url: str
    events: list[str] = msgspec.field(default_factory=lambda: ["*"])
    description: str | None = None
    enabled: bool = True
    ordered: bool = True
    headers: dict[str, str] = msgspec.field(default_factory=dict)


class EndpointUpdate(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """`PATCH /api/webhooks/{id}` body: only the given fields change."""

    url: str | msgspec.UnsetType = msgspec.UNSET
    events: list[str] | msgspec.UnsetType = msgspec.UNSET
    description: str | msgspec.UnsetType | None = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    ordered: bool | msgspec.UnsetType = msgspec.UNSET
    headers: dict[str, str] | msgspec.UnsetType = msgspec.UNSET


class Endpoint(msgspec.Struct, rename="camel"):
    """A webhook endpoint; `instanceId` null means every instance of the tenant. `ordered`: its
    deliveries go in creation order, a failing one holding back the next; else earliest due first."""

    id: int
    instance_id: int | None
    url: str
    events: list[str]
    enabled: bool
    ordered: bool
    description: str | None
    legacy: bool
    created_at: datetime


class EndpointWithSecret(Endpoint, rename="camel"):
    """An endpoint with its signing secret (`whsec_...`), until when the secret it replaced still
    signs too (null: none does), and the headers of the tenant's choosing sent with every delivery
    (shown here only: they may hold a token)."""

    secret: str
    previous_secret_expires_at: datetime | None
    headers: dict[str, str]


class SecretRotation(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """`POST /api/webhooks/{id}/rotate-secret` body (optional): how long the replaced secret keeps
    signing beside the new one (0: it stops at once, e.g. when it leaked)."""

    grace_seconds: int = 86_400


class Recovery(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """`POST /api/webhooks/{id}/recover` body: send again the endpoint's dead deliveries created from
    `since` until `until` (default now), oldest first, at most `limit` of them."""

    since: AwareDatetime
    until: AwareDatetime | None = None
    limit: int = 10_000


class Recovered(msgspec.Struct, rename="camel"):
    """What a recovery put back to `pending`; `more`: dead deliveries of the range are left (call again)."""

    redelivered: int
    more: bool


class Delivery(msgspec.Struct, rename="camel"):
    """One event for one endpoint and where its delivery stands."""

    id: int
    event_id: str
    type: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    last_latency_ms: int | None
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None


class Attempt(msgspec.Struct, rename="camel"):
    """One HTTP attempt (`latencyMs` null while it runs)."""

    attempt: int
    started_at: datetime
    status_code: int | None
    error: str | None
    latency_ms: int | None


class DeliveryDetail(Delivery, rename="camel"):
    """A delivery with the body it sends and every attempt so far."""

    payload: dict[str, Any]
    attempt_log: list[Attempt]
