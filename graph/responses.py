"""Error bodies for each surface, so both say the same thing with the same status."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse

from graph.errors import status_for

__all__ = ["envelope", "graphql_error", "rest_error"]

_Headers = Mapping[str, str] | None


def envelope(*, status: int, message: str, headers: _Headers = None) -> JSONResponse:
    """The legacy envelope: ``{"success": false, "error": {"message": ...}}``."""
    body = {"success": False, "error": {"message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def rest_error(*, code: str, message: str, headers: _Headers = None) -> JSONResponse:
    """The legacy envelope with the status of a GraphQL error code."""
    return envelope(status=status_for(code), message=message, headers=headers)


def graphql_error(*, code: str, message: str, headers: _Headers = None) -> JSONResponse:
    """A GraphQL response that failed before execution, with the status of its code."""
    body = {"data": None, "errors": [{"message": message, "extensions": {"code": code}}]}
    return JSONResponse(body, status_code=status_for(code), headers=headers)
