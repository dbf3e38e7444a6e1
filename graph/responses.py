"""Error bodies for each surface, so both say the same thing with the same status.

``/graphql`` answers every error as a GraphQL response (``errors[].extensions.code``);
every other path answers the legacy envelope ``{"success": false, "error": {...}}``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from graph.errors import INTERNAL_CODE, status_for

__all__ = [
    "GRAPHQL_RESPONSE_JSON",
    "JSON",
    "InternalErrors",
    "JSONBody",
    "dumps",
    "envelope",
    "error_for_path",
    "graphql_body",
    "graphql_error",
    "negotiate",
    "rest_error",
]

#: The GraphQL over HTTP media types: the specification's own, and the legacy one.
GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
JSON = "application/json"

_Headers = Mapping[str, str] | None
_log = logging.getLogger(__name__)


def dumps(value: Any) -> bytes:
    """A response body's JSON, compact: orjson (an hourly series of a week, ~100 KB, took
    the standard library ~1.7 ms and orjson ~0.15 ms); what orjson refuses (a lone
    surrogate, an int past 64 bits) in the standard library's JSON, escaped to ASCII."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(value, separators=(",", ":")).encode("ascii")


class JSONBody(JSONResponse):
    """A JSON response written by ``dumps``."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


class _AsciiJSON(JSONResponse):
    """JSON escaped to ASCII: a message quoting the caller's text (a lone surrogate, say)
    can never fail to encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("ascii")


def envelope(*, status: int, message: str, headers: _Headers = None) -> JSONResponse:
    """The legacy envelope: ``{"success": false, "error": {"message": ...}}``."""
    body = {"success": False, "error": {"message": message}}
    return _AsciiJSON(body, status_code=status, headers=headers)


def rest_error(*, code: str, message: str, headers: _Headers = None) -> JSONResponse:
    """The legacy envelope with the status of a GraphQL error code."""
    return envelope(status=status_for(code), message=message, headers=headers)


def negotiate(accept: str) -> str:
    """The media type of a GraphQL response for an ``Accept`` header: the specification's
    ``application/graphql-response+json`` when the client prefers it (or likes it as well
    as JSON), else ``application/json`` (also for ``*/*``, none, or nothing we offer)."""
    weights = {GRAPHQL_RESPONSE_JSON: 0.0, JSON: 0.0}
    for media_range in accept.split(","):
        name, weight = _media_range(media_range)
        if name == GRAPHQL_RESPONSE_JSON:
            weights[GRAPHQL_RESPONSE_JSON] = max(weights[GRAPHQL_RESPONSE_JSON], weight)
        elif name in (JSON, "application/*", "*/*"):
            weights[JSON] = max(weights[JSON], weight)
    preferred = weights[GRAPHQL_RESPONSE_JSON]
    return GRAPHQL_RESPONSE_JSON if preferred > 0 and preferred >= weights[JSON] else JSON


def _media_range(text: str) -> tuple[str, float]:
    name, *params = (part.strip() for part in text.split(";"))
    weight = 1.0
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                weight = float(value.strip())
            except ValueError:
                weight = 0.0
    return name.lower(), weight


def graphql_body(*, code: str, message: str, media_type: str = JSON) -> dict[str, Any]:
    """A GraphQL response with one error; ``data`` is null, or absent as the GraphQL over
    HTTP specification wants for ``application/graphql-response+json``."""
    errors = [{"message": message, "extensions": {"code": code}}]
    if media_type == GRAPHQL_RESPONSE_JSON:
        return {"errors": errors}
    return {"data": None, "errors": errors}


def graphql_error(
    *,
    code: str,
    message: str,
    headers: _Headers = None,
    media_type: str = JSON,
    status: int | None = None,
) -> JSONResponse:
    """A GraphQL response that failed before execution, with the status of its code."""
    body = graphql_body(code=code, message=message, media_type=media_type)
    return _AsciiJSON(
        body,
        status_code=status or status_for(code),
        headers=headers,
        media_type=media_type,
    )


def error_for_path(
    scope: Scope,
    *,
    graphql_path: str,
    code: str,
    message: str,
    headers: _Headers = None,
) -> JSONResponse:
    """The error in the shape of the surface ``scope`` asked: GraphQL on ``graphql_path``
    (in the media type the client accepts), the envelope anywhere else."""
    if scope["path"] != graphql_path:
        return rest_error(code=code, message=message, headers=headers)
    media_type = negotiate(Headers(scope=scope).get("accept", ""))
    return graphql_error(code=code, message=message, headers=headers, media_type=media_type)


class InternalErrors:
    """ASGI middleware: an unexpected exception becomes a logged 500 in the shape of its
    surface, answered inside the request log (so it has its ``X-Request-ID``) and without
    dropping the connection."""

    def __init__(self, app: ASGIApp, *, graphql_path: str) -> None:
        self.app = app
        self.graphql_path = graphql_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            if started:
                raise
            _log.exception("unhandled error")
            response = error_for_path(
                scope,
                graphql_path=self.graphql_path,
                code=INTERNAL_CODE,
                message="Internal server error.",
            )
            await response(scope, receive, send)
