"""Error codes and the JSON error body every REST endpoint returns on failure."""

from enum import StrEnum

import msgspec


class ErrorCode(StrEnum):
    """Stable machine-readable error codes (the `code` field of an error body)."""

    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    VALIDATION = "validation_error"
    CONFLICT = "conflict"
    NO_CAPACITY = "no_capacity"
    START_FAILED = "start_failed"
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"


class ErrorBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`{"error": "...", "code": "...", "field": "..."}`: `error` as in the original gateway."""

    error: str
    code: ErrorCode
    field: str | None = None
