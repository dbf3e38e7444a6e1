"""The domain errors of the service.

Each error carries the GraphQL ``extensions.code`` it is reported under; the HTTP
status for each code is chosen once, in ``graph.errors``.
"""

from __future__ import annotations

__all__ = [
    "BadUserInput",
    "Forbidden",
    "MetricsError",
    "NotFound",
    "RateLimited",
    "Unauthenticated",
    "Unavailable",
]


class MetricsError(Exception):
    """Base of every error a client may see; its message is safe to show."""

    code = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def extensions(self) -> dict[str, str]:
        """What GraphQL reports under ``extensions`` when this error ends a field."""
        return {"code": self.code}


class BadUserInput(MetricsError):
    code = "BAD_USER_INPUT"


class Unauthenticated(MetricsError):
    code = "UNAUTHENTICATED"


class Forbidden(MetricsError):
    code = "FORBIDDEN"


class NotFound(MetricsError):
    code = "NOT_FOUND"


class RateLimited(MetricsError):
    code = "RATE_LIMITED"


class Unavailable(MetricsError):
    code = "UNAVAILABLE"
