"""Snapshot endpoints: operators list and download an instance's snapshots; tenants see the last one."""

from litestar import Controller, get
from litestar.di import Provide
from litestar.response import Stream

from wgs_api.domain.accounts.guards import current_tenant_id, require_admin
from wgs_api.domain.snapshots import schemas, services


class SnapshotController(Controller):
    """`/admin/instances/{id}/snapshots` and `/api/instances/{id}/snapshot`."""

    path = "/"

    @get(
        "/admin/instances/{instance_id:int}/snapshots",
        operation_id="ListSnapshots",
        guards=[require_admin],
        tags=["admin: snapshots"],
    )
    async def list_all(self, instance_id: int) -> list[schemas.Snapshot]:
        """List an instance's snapshots (every version kept, with status and checksums), newest first."""
        return await services.list_snapshots(instance_id)

    @get(
        "/admin/instances/{instance_id:int}/snapshots/{version:int}/download",
        operation_id="DownloadSnapshot",
        guards=[require_admin],
        tags=["admin: snapshots"],
        media_type="application/zstd",
    )
    async def download(self, instance_id: int, version: int) -> Stream:
        """Download a snapshot's stored bytes (a zstd-compressed tar); `X-Checksum-Sha256` is its sha256."""
        row, content = await services.stored_snapshot(instance_id, version)
        return Stream(
            content,
            media_type="application/zstd",
            headers={
                "X-Checksum-Sha256": row["sha256"],
                "Content-Disposition": f'attachment; filename="instance-{instance_id}-v{version}.tar.zst"',
            },
        )

    @get(
        "/api/instances/{instance_id:int}/snapshot",
        operation_id="GetLastSnapshot",
        dependencies={"tenant_id": Provide(current_tenant_id)},
        tags=["instances"],
    )
    async def last(self, tenant_id: int, instance_id: int) -> schemas.LastSnapshot:
        """When your instance's session state was last saved, and its size."""
        return await services.last_snapshot(tenant_id, instance_id)
