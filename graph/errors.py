"""GraphQL error codes and the HTTP status each one maps to: the only such table."""

from __future__ import annotations

from graphql import GraphQLError

from resolvers.errors import MetricsError

__all__ = [
    "BAD_USER_INPUT",
    "INTERNAL_CODE",
    "STATUS_BY_CODE",
    "code_for_status",
    "error_code",
    "should_mask_error",
    "status_for",
]

BAD_USER_INPUT = "BAD_USER_INPUT"
INTERNAL_CODE = "INTERNAL_SERVER_ERROR"

STATUS_BY_CODE = {
    BAD_USER_INPUT: 400,
    "UNAUTHENTICATED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "REQUEST_TIMEOUT": 408,
    "PAYLOAD_TOO_LARGE": 413,
    "RATE_LIMITED": 429,
    "UNAVAILABLE": 503,
    INTERNAL_CODE: 500,
}

_CODE_BY_STATUS = {status: code for code, status in STATUS_BY_CODE.items()}


def status_for(code: str | None) -> int:
    """The HTTP status of a GraphQL error code; unknown codes are server errors."""
    return STATUS_BY_CODE.get(code or INTERNAL_CODE, 500)


def code_for_status(status: int) -> str:
    """The code of an HTTP refusal: its own when it has one, else by class (4xx, 5xx)."""
    if status in _CODE_BY_STATUS:
        return _CODE_BY_STATUS[status]
    return BAD_USER_INPUT if 400 <= status < 500 else INTERNAL_CODE


def error_code(error: GraphQLError) -> str:
    """``extensions.code`` of a GraphQL error, or the internal code when it has none."""
    code = (error.extensions or {}).get("code")
    return code if isinstance(code, str) else INTERNAL_CODE


def should_mask_error(error: GraphQLError) -> bool:
    """Hide everything but domain errors and GraphQL's own errors: syntax, validation, and
    variable coercion (graphql-core wraps the value's own ``GraphQLError`` there)."""
    original = error.original_error
    return original is not None and not isinstance(original, MetricsError | GraphQLError)
