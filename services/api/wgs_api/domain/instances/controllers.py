"""Tenant endpoints for instances (paths, bodies and status codes as the original gateway)."""

from litestar import Controller, Response, delete, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from wgs_api.config import get_settings
from wgs_api.domain.accounts.guards import current_tenant_id
from wgs_api.domain.instances import schemas, services
from wgs_api.ids import MAX_ID


class InstanceController(Controller):
    """`/api/instances`: a tenant's WhatsApp numbers."""

    path = "/api/instances"
    dependencies = {"tenant_id": Provide(current_tenant_id)}
    tags = ["instances"]

    @post(
        "/",
        operation_id="CreateInstance",
        responses={},
        status_code=HTTP_200_OK,
    )
    async def create(
        self,
        tenant_id: int,
        state: State,
        data: schemas.InstanceCreate,
        wait: float | None = Parameter(
            default=None,
            ge=0,
            le=3600,
            description="Seconds to wait for `running` (default 30; 0 answers 202 at once).",
        ),
    ) -> Response[schemas.Instance]:
        """Create an instance; `200` once its container runs, `202` if still on its way."""
        settings = get_settings()
        wait_seconds = settings.default_wait_seconds if wait is None else wait
        view, settled = await services.create_instance(
            tenant_id,
            data,
            wait_seconds=min(wait_seconds, settings.max_wait_seconds),
            settings=settings,
            messaging=state.messaging,
        )
        return Response(view, status_code=HTTP_200_OK if settled else HTTP_202_ACCEPTED)

    @get("/", operation_id="ListInstances")
    async def list_all(
        self,
        tenant_id: int,
        limit: int | None = Parameter(default=None, ge=1, le=1000, description="at most this many (default: all)"),
        after: int | None = Parameter(default=None, ge=0, le=MAX_ID, description="only ids above: the next page"),
    ) -> list[schemas.Instance]:
        """List your instances, oldest first; `after` the last id of a page (with `limit`) gives the next one."""
        return await services.list_own(tenant_id, limit=limit, after=after)

    @get("/{instance_id:int}", operation_id="GetInstance")
    async def get_one(self, tenant_id: int, instance_id: int) -> schemas.Instance:
        """Get one of your instances."""
        return services.instance_view(await services.fetch_own(tenant_id, instance_id))

    @delete(
        "/{instance_id:int}",
        operation_id="DeleteInstance",
        status_code=HTTP_200_OK,
        responses={
            HTTP_204_NO_CONTENT: ResponseSpec(None, description="The container and the instance are gone."),
            HTTP_202_ACCEPTED: ResponseSpec(
                schemas.InstanceDeleting, description="Deletion accepted; the container is still going."
            ),
        },
    )
    async def delete(self, tenant_id: int, instance_id: int, state: State) -> Response[schemas.InstanceDeleting | None]:
        """Delete an instance: `204` once its container is gone, `202` if it is still going."""
        gone = await services.delete_instance(
            tenant_id, instance_id, settings=get_settings(), messaging=state.messaging
        )
        if gone:
            return Response(None, status_code=HTTP_204_NO_CONTENT)
        return Response(
            schemas.InstanceDeleting(id=instance_id, status="deleting"),
            status_code=HTTP_202_ACCEPTED,
        )

    @post("/{instance_id:int}/migrate", operation_id="MigrateInstance", status_code=HTTP_200_OK)
    async def migrate(
        self, tenant_id: int, instance_id: int, state: State, data: schemas.MigrateBody
    ) -> schemas.Migrated:
        """Move the instance to `target_node` (a node name, or `"any"`); answers once it runs there.

        Its session state moves with it (final snapshot, restore); sends made meanwhile are queued (`202`)
        and delivered after. `404` unknown node, `409` same or cordoned node, `503` no room.
        """
        return await services.migrate_instance(
            tenant_id, instance_id, data, settings=get_settings(), messaging=state.messaging
        )
