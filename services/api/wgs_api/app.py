"""The Litestar application: routes, error handlers, OpenAPI, and the lifespan of DB and NATS."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from wgs_db.engine import close_database, open_database
from wgs_kit.lifecycle import freeze_startup_heap

from wgs_api.config import Settings, get_settings
from wgs_api.domain.accounts.controllers import TenantController
from wgs_api.domain.instances.controllers import InstanceController
from wgs_api.domain.messaging.controllers import MessagingController
from wgs_api.domain.messaging.leases import LEASES
from wgs_api.domain.messaging.services import LATE_RECORDS
from wgs_api.domain.nodes.controllers import NodeController
from wgs_api.domain.snapshots.controllers import SnapshotController
from wgs_api.domain.system.controllers import root
from wgs_api.domain.webhooks.controllers import WebhookController
from wgs_api.errors import EXCEPTION_HANDLERS
from wgs_api.ids import ids_in_range
from wgs_api.messaging import ApiMessaging
from wgs_api.tracing import trace_requests


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the API application."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await open_database(settings.database_url, max_size=20)
        LEASES.lease_seconds = settings.send_lease_seconds
        messaging = ApiMessaging(settings.nats_url, events_max_deliver=settings.events_max_deliver)
        await messaging.start()
        app.state.messaging = messaging
        freeze_startup_heap()
        try:
            yield
        finally:
            await messaging.stop()
            await LATE_RECORDS.stop()
            await close_database()

    return Litestar(
        route_handlers=[
            root,
            TenantController,
            NodeController,
            InstanceController,
            MessagingController,
            WebhookController,
            SnapshotController,
        ],
        lifespan=[lifespan],
        middleware=[trace_requests],
        logging_config=None,  # the service's own (`wgs_kit.logs.configure_logging`), with the request's trace id
        before_request=ids_in_range,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        openapi_config=OpenAPIConfig(
            title="WhatsApp gateway API",
            version="1.0.0",
            description="Tenants use `Authorization: Bearer <key>`; operators `X-Admin-API-Secret`.",
            path="/docs",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        ),
    )
