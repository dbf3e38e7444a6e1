"""GraphQL error codes and the HTTP status each one maps to: the only such table."""

from __future__ import annotations

from graphql import GraphQLError

from resolvers.errors import MetricsError

__all__ = ["INTERNAL_CODE", "STATUS_BY_CODE", "error_code", "should_mask_error", "status_for"]

INTERNAL_CODE = "INTERNAL_SERVER_ERROR"

STATUS_BY_CODE = {
    "BAD_USER_INPUT": 400,
    "UNAUTHENTICATED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "RATE_LIMITED": 429,
    "UNAVAILABLE": 503,
    INTERNAL_CODE: 500,
}


def status_for(code: str | None) -> int:
    """The HTTP status of a GraphQL error code; unknown codes are server errors."""
    return STATUS_BY_CODE.get(code or INTERNAL_CODE, 500)


def error_code(error: GraphQLError) -> str:
    """``extensions.code`` of a GraphQL error, or the internal code when it has none."""
    code = (error.extensions or {}).get("code")
    return code if isinstance(code, str) else INTERNAL_CODE


def should_mask_error(error: GraphQLError) -> bool:
    """Hide everything but domain errors and GraphQL's own (syntax, validation) errors."""
    original = error.original_error
    return original is not None and not isinstance(original, MetricsError)
