"""Path ids beyond PostgreSQL's `integer` range: no such row can exist, so they are 404.

Without this check such an id reaches a query and fails there as a server error; in a
statement shared by several requests (`wgs_kit.coalescing`) it would fail the others too.
"""

from litestar import Request

from wgs_api.errors import NotFound

MAX_ID = 2**31 - 1  # every id column is `integer` (serial)


async def ids_in_range(request: Request) -> None:
    """`before_request` hook: 404 for an integer path parameter outside the `integer` range."""
    for name, value in request.path_params.items():
        if isinstance(value, int) and not -MAX_ID - 1 <= value <= MAX_ID:
            raise NotFound(f"Not found: no {name} {value}.")
