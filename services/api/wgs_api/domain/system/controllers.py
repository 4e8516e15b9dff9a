"""Liveness of the API process."""

from litestar import get


@get("/", operation_id="Root", tags=["system"])
async def root() -> dict[str, str]:
    """`{"status": "ok"}` as the original gateway."""
    return {"status": "ok"}
