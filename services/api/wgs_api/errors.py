"""API errors and the handlers that render every failure as `{"error", "code", "field"}` JSON."""

import logging
import math
import re

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_401_UNAUTHORIZED,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from nats.errors import Error as NatsError
from wgs_contracts.errors import ErrorBody, ErrorCode
from wgs_db.engine import DATABASE_OUTAGES

log = logging.getLogger(__name__)
NATS_UNREACHABLE = "The gateway's message bus (NATS) is unreachable; try again shortly."
DATABASE_UNAVAILABLE = "The gateway's database (PostgreSQL) is unavailable; try again shortly."
# msgspec names a missing or unknown field in its message; Litestar's key is then the whole body ("data").
NAMED_FIELD = re.compile(r"(?:missing required|unknown) field `([^`]+)`")


class ApiError(Exception):
    """An expected failure with its HTTP status, message and code (and `Retry-After` when set)."""

    status_code = HTTP_400_BAD_REQUEST
    code = ErrorCode.VALIDATION
    retry_after: float | None = None

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class Unauthorized(ApiError):
    status_code = HTTP_401_UNAUTHORIZED
    code = ErrorCode.UNAUTHORIZED


class NotFound(ApiError):
    status_code = HTTP_404_NOT_FOUND
    code = ErrorCode.NOT_FOUND


class Conflict(ApiError):
    status_code = HTTP_409_CONFLICT
    code = ErrorCode.CONFLICT


class Invalid(ApiError):
    """Well-formed JSON whose content is wrong: 422 naming the field."""

    status_code = HTTP_422_UNPROCESSABLE_ENTITY
    code = ErrorCode.VALIDATION


class Unavailable(ApiError):
    status_code = HTTP_503_SERVICE_UNAVAILABLE
    code = ErrorCode.UNAVAILABLE


class Outage(Unavailable):
    """The gateway's own NATS or PostgreSQL failed: `503` with `Retry-After: 1`, to be tried again."""

    retry_after = 1.0


class NoCapacity(ApiError):
    status_code = HTTP_503_SERVICE_UNAVAILABLE
    code = ErrorCode.NO_CAPACITY


class RateLimited(ApiError):
    """Too many requests: 429 with `Retry-After`."""

    status_code = 429
    code = ErrorCode.RATE_LIMITED

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StartFailed(ApiError):
    status_code = 502
    code = ErrorCode.START_FAILED


class TimedOut(ApiError):
    status_code = 504
    code = ErrorCode.TIMEOUT


ERROR_BY_STATUS: dict[int, type[ApiError]] = {
    404: NotFound,
    409: Conflict,
    422: Invalid,
    503: NoCapacity,
    504: TimedOut,
}


CODE_BY_STATUS: dict[int, ErrorCode] = {
    400: ErrorCode.VALIDATION,
    401: ErrorCode.UNAUTHORIZED,
    404: ErrorCode.NOT_FOUND,
    409: ErrorCode.CONFLICT,
    422: ErrorCode.VALIDATION,
    429: ErrorCode.RATE_LIMITED,
    504: ErrorCode.TIMEOUT,
}


def code_for_status(status: int) -> ErrorCode:
    """The error code that goes with an HTTP status not raised as an ApiError (a provider's, Litestar's)."""
    return CODE_BY_STATUS.get(status, ErrorCode.UNAVAILABLE if status >= 500 else ErrorCode.VALIDATION)


def error_for_status(status: int, message: str) -> ApiError:
    """The ApiError answering with `status` (502 start_failed for any other failure)."""
    return ERROR_BY_STATUS.get(status, StartFailed)(message)


def error_response(status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> Response[bytes]:
    """A JSON error response."""
    return Response(
        content=msgspec.json.encode(body), status_code=status, media_type="application/json", headers=headers
    )


def handle_api_error(_: Request, exc: ApiError) -> Response[bytes]:
    """Render an ApiError (with `Retry-After` when rate limited)."""
    headers = None if exc.retry_after is None else {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    return error_response(exc.status_code, ErrorBody(error=exc.message, code=exc.code, field=exc.field), headers)


def handle_validation(_: Request, exc: ValidationException) -> Response[bytes]:
    """Litestar's body/query validation: 422 naming the first bad field, 400 for malformed JSON."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    if extra and isinstance(extra[0], dict) and extra[0].get("key"):
        first = extra[0]
        detail = str(first.get("message", "invalid value"))
        named = NAMED_FIELD.search(detail)
        field = named.group(1) if named else str(first["key"]).replace("[...]", "")  # a value of a mapping field
        message = f"{field}: {detail}"
        return error_response(
            HTTP_422_UNPROCESSABLE_ENTITY,
            ErrorBody(error=message, code=ErrorCode.VALIDATION, field=field),
        )
    return error_response(HTTP_400_BAD_REQUEST, ErrorBody(error=str(exc.detail), code=ErrorCode.VALIDATION))


def handle_http(_: Request, exc: HTTPException) -> Response[bytes]:
    """Other HTTP errors raised by Litestar itself (404 route, 405 method...)."""
    return error_response(exc.status_code, ErrorBody(error=str(exc.detail), code=code_for_status(exc.status_code)))


def handle_nats(request: Request, exc: NatsError) -> Response[bytes]:
    """NATS unreachable, or no answer from it in time: `503`, to be tried again."""
    log.warning("NATS failed on %s %s: %r", request.method, request.url.path, exc)
    return handle_api_error(request, Outage(NATS_UNREACHABLE))


def handle_database_outage(request: Request, exc: Exception) -> Response[bytes]:
    """PostgreSQL unavailable (`DATABASE_OUTAGES`): `503`, to be tried again."""
    log.warning("PostgreSQL failed on %s %s: %r", request.method, request.url.path, exc)
    return handle_api_error(request, Outage(DATABASE_UNAVAILABLE))


def handle_unexpected(request: Request, exc: Exception) -> Response[bytes]:
    """Anything else: logged with its traceback, answered as a generic 500."""
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(
        HTTP_500_INTERNAL_SERVER_ERROR,
        ErrorBody(error="Internal server error", code=ErrorCode.UNAVAILABLE),
    )


EXCEPTION_HANDLERS = {
    ApiError: handle_api_error,
    ValidationException: handle_validation,
    HTTPException: handle_http,
    NatsError: handle_nats,
    **dict.fromkeys(DATABASE_OUTAGES, handle_database_outage),
    Exception: handle_unexpected,
}

__all__ = [
    "EXCEPTION_HANDLERS",
    "ApiError",
    "Conflict",
    "Invalid",
    "NoCapacity",
    "NotFound",
    "Outage",
    "RateLimited",
    "StartFailed",
    "Unauthorized",
    "Unavailable",
    "code_for_status",
]
