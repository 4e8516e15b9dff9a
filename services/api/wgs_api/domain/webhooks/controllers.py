"""Tenant endpoints for webhooks: endpoints, their secrets, delivery logs and redelivery."""

from litestar import Controller, delete, get, patch, post
from litestar.di import Provide
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from wgs_api.domain.accounts.guards import current_tenant_id
from wgs_api.domain.webhooks import schemas, services

ENDPOINT = "/webhooks/{endpoint_id:int}"
DELIVERY = ENDPOINT + "/deliveries/{delivery_id:int}"


class WebhookController(Controller):
    """`/api/webhooks` and `/api/instances/{id}/webhooks`: where a tenant's events are delivered."""

    path = "/api"
    dependencies = {"tenant_id": Provide(current_tenant_id)}
    tags = ["webhooks"]

    @post("/webhooks", operation_id="CreateWebhook", status_code=HTTP_201_CREATED)
    async def create(self, tenant_id: int, data: schemas.EndpointCreate) -> schemas.EndpointWithSecret:
        """Create an endpoint receiving the events of all your instances."""
        return await services.create_endpoint(tenant_id, data)

    @get("/webhooks", operation_id="ListWebhooks")
    async def list_all(self, tenant_id: int) -> list[schemas.Endpoint]:
        """List your tenant-level endpoints (without secrets)."""
        return await services.list_endpoints(tenant_id)

    @post("/instances/{instance_id:int}/webhooks", operation_id="CreateInstanceWebhook", status_code=HTTP_201_CREATED)
    async def create_for_instance(
        self, tenant_id: int, instance_id: int, data: schemas.EndpointCreate
    ) -> schemas.EndpointWithSecret:
        """Create an endpoint receiving the events of one instance."""
        return await services.create_endpoint(tenant_id, data, instance_id)

    @get("/instances/{instance_id:int}/webhooks", operation_id="ListInstanceWebhooks")
    async def list_for_instance(self, tenant_id: int, instance_id: int) -> list[schemas.Endpoint]:
        """List an instance's endpoints, including the one of its `webhook` field (without secrets)."""
        return await services.list_endpoints(tenant_id, instance_id)

    @get(ENDPOINT, operation_id="GetWebhook")
    async def get_one(self, tenant_id: int, endpoint_id: int) -> schemas.EndpointWithSecret:
        """Get one endpoint with its signing secret."""
        return await services.get_endpoint(tenant_id, endpoint_id)

    @patch(ENDPOINT, operation_id="UpdateWebhook")
    async def update(
        self, tenant_id: int, endpoint_id: int, data: schemas.EndpointUpdate
    ) -> schemas.EndpointWithSecret:
        """Change an endpoint's URL, event filter, description, enabled or ordered flag, or own headers."""
        return await services.update_endpoint(tenant_id, endpoint_id, data)

    @delete(ENDPOINT, operation_id="DeleteWebhook", status_code=HTTP_204_NO_CONTENT)
    async def remove(self, tenant_id: int, endpoint_id: int) -> None:
        """Delete an endpoint and its delivery log."""
        await services.delete_endpoint(tenant_id, endpoint_id)

    @post(ENDPOINT + "/rotate-secret", operation_id="RotateWebhookSecret", status_code=HTTP_200_OK)
    async def rotate_secret(
        self, tenant_id: int, endpoint_id: int, data: schemas.SecretRotation | None = None
    ) -> schemas.EndpointWithSecret:
        """Replace the signing secret; the answer holds the new one. The replaced secret keeps
        signing beside it for `graceSeconds` (default a day, at most 7; 0 stops it at once)."""
        rotation = data if data is not None else schemas.SecretRotation()
        return await services.rotate_secret(tenant_id, endpoint_id, rotation.grace_seconds)

    @get(ENDPOINT + "/deliveries", operation_id="ListWebhookDeliveries")
    async def deliveries(
        self,
        tenant_id: int,
        endpoint_id: int,
        status: str | None = Parameter(default=None, description="pending, sending, delivered or dead"),
        limit: int = Parameter(default=50, ge=1, le=500),
        before: int | None = Parameter(
            default=None, ge=1, le=2**63 - 1, description="only deliveries with a smaller id: the next page"
        ),
        event_id: str | None = Parameter(
            query="eventId", default=None, description="only the event's (its webhook-id)"
        ),
    ) -> list[schemas.Delivery]:
        """The endpoint's deliveries, newest first; `before` the last id of a page gives the next one,
        `eventId` finds the delivery of one event (the `webhook-id` a receiver got, or did not)."""
        return await services.list_deliveries(tenant_id, endpoint_id, status, limit, before, event_id)

    @post(ENDPOINT + "/recover", operation_id="RecoverWebhookDeliveries", status_code=HTTP_202_ACCEPTED)
    async def recover(self, tenant_id: int, endpoint_id: int, data: schemas.Recovery) -> schemas.Recovered:
        """Send again the dead deliveries created from `since` until `until` (default now), oldest
        first, at most `limit` (1-10000, the default) per call; `more` says some are left."""
        return await services.recover(tenant_id, endpoint_id, data)

    @post(ENDPOINT + "/test", operation_id="SendWebhookTestEvent", status_code=HTTP_202_ACCEPTED)
    async def send_test_event(self, tenant_id: int, endpoint_id: int) -> schemas.Delivery:
        """Queue a signed `webhook.test` event for the endpoint (whatever its filter); its delivery
        is in the log like any other. `409` when the endpoint is disabled."""
        return await services.send_test_event(tenant_id, endpoint_id)

    @get(DELIVERY, operation_id="GetWebhookDelivery")
    async def delivery(self, tenant_id: int, endpoint_id: int, delivery_id: int) -> schemas.DeliveryDetail:
        """One delivery with its payload and every attempt."""
        return await services.get_delivery(tenant_id, endpoint_id, delivery_id)

    @post(DELIVERY + "/redeliver", operation_id="RedeliverWebhook", status_code=HTTP_202_ACCEPTED)
    async def redeliver(self, tenant_id: int, endpoint_id: int, delivery_id: int) -> schemas.Delivery:
        """Send a delivery again now (a fresh retry schedule; earlier attempts stay in the log)."""
        return await services.redeliver(tenant_id, endpoint_id, delivery_id)
