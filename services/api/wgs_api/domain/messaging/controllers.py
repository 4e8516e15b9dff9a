"""Tenant endpoints to pair instances and send messages (the original `/qr` and `/send` kept)."""

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from wgs_api.domain.accounts.guards import current_tenant_id
from wgs_api.domain.messaging import schemas, send_keys, services


class MessagingController(Controller):
    """`/api/instances/{id}/...`: QR, pairing code, logout, sandbox scan, send, message status."""

    path = "/api/instances/{instance_id:int}"
    dependencies = {"tenant_id": Provide(current_tenant_id)}
    tags = ["messaging"]

    @get("/qr", operation_id="GetQr", media_type="image/png")
    async def qr(self, tenant_id: int, instance_id: int, state: State, request: Request) -> Response[Any]:
        """The pairing QR as `image/png`; `{"raw", "base64"}` to a client preferring `application/json`."""
        raw, png = await services.qr_code(state.messaging, tenant_id, instance_id)
        if services.prefers_json(request.headers.get("accept", "")):
            return Response(services.qr_json(raw, png), media_type="application/json")
        return Response(png, media_type="image/png")

    @post("/pair-code", operation_id="GetPairCode", status_code=HTTP_200_OK)
    async def pair_code(
        self, tenant_id: int, instance_id: int, state: State, data: schemas.PairCodeBody
    ) -> schemas.PairCode:
        """A code to link the instance by phone number instead of a QR."""
        return await services.pair_code(state.messaging, tenant_id, instance_id, data.phone)

    @post("/logout", operation_id="Logout", status_code=HTTP_200_OK)
    async def logout(self, tenant_id: int, instance_id: int, state: State) -> dict[str, Any]:
        """Unlink the phone (the session is forgotten); the instance shows a new QR to pair again."""
        return await services.logout(state.messaging, tenant_id, instance_id)

    @post("/sandbox/scan", operation_id="SandboxScan", status_code=HTTP_200_OK)
    async def sandbox_scan(
        self, tenant_id: int, instance_id: int, state: State, data: schemas.ScanBody | None = None
    ) -> dict[str, Any]:
        """Sandbox only: "scan" the current QR with a simulated phone (or enter a pairing `code`)."""
        code = data.code if data is not None else None
        return await services.sandbox_scan(state.messaging, tenant_id, instance_id, code)

    @post("/send", operation_id="SendMessage", status_code=HTTP_200_OK)
    async def send(
        self,
        tenant_id: int,
        instance_id: int,
        state: State,
        data: schemas.SendBody,
        idempotency_key: Annotated[str | None, Parameter(header=send_keys.HEADER, required=False)] = None,
    ) -> Response[schemas.SendResult]:
        """Send a message: `200` when sent, `202` when queued (instance restarting or moving).

        With an `Idempotency-Key` (1-255 visible ASCII characters), a retry gets the first
        request's message and answer, and the message is sent once.
        """
        result, sent = await services.send(state.messaging, tenant_id, instance_id, data, idempotency_key)
        return Response(result, status_code=HTTP_200_OK if sent else HTTP_202_ACCEPTED)

    @get("/messages", operation_id="ListMessages")
    async def messages(
        self,
        tenant_id: int,
        instance_id: int,
        limit: int = Parameter(default=20, ge=1, le=100),
        before: str | None = Parameter(
            default=None, min_length=1, max_length=40, description="the last message id of a page: the next page"
        ),
    ) -> list[schemas.MessageView]:
        """The instance's sent messages with their status histories, newest first."""
        return await services.list_messages(tenant_id, instance_id, limit, before)

    @get("/messages/{message_id:str}", operation_id="GetMessage")
    async def message(self, tenant_id: int, instance_id: int, message_id: str) -> schemas.MessageView:
        """A sent message and its status history (queued, sent, delivered, read, failed)."""
        return await services.message_view(tenant_id, instance_id, message_id)
