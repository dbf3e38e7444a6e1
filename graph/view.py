"""Our Strawberry ASGI view: the typed context, and GraphQL over HTTP as the spec says.

- Every refusal is a GraphQL error body with ``extensions.code`` (Strawberry's own are
  plain text): unparsable, non-UTF-8, too deep or non-object JSON bodies, missing query,
  batches, unsupported content types and methods.
- A lone surrogate anywhere in the request's JSON is refused: it is not Unicode text,
  and nothing downstream (the database driver, say) can encode it.
- ``Accept`` picks ``application/graphql-response+json`` or ``application/json``; with
  the former, a request error (parse, validation, variable coercion: no execution)
  answers 400 without a ``data`` entry; with the latter it answers 200, as before.
- A mutation by GET is 405 with ``Allow: POST``, as the specification says (Strawberry
  answers 400).
"""

from __future__ import annotations

import json
import re
from typing import Any

from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.parse_content_type import parse_content_type
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionResult

from graph.context import Context, build_context
from graph.errors import code_for_status, status_for
from graph.responses import GRAPHQL_RESPONSE_JSON, JSON, dumps, graphql_error, negotiate

__all__ = ["MetricsGraphQL"]

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_WHITESPACE = b" \t\r\n"
_ALLOWED_METHODS = "GET, POST"


class MetricsGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with our typed context and GraphQL-shaped refusals."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope=scope, receive=receive)
        try:
            response = await self.run(request)
        except HTTPException as refusal:
            response = _refusal(request, status=refusal.status_code, message=refusal.reason)
        await response(scope, receive, send)

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        return build_context(request, response=response if isinstance(response, Response) else None)

    async def execute_single(self, *args: Any, **kwargs: Any) -> ExecutionResult:
        """Strawberry's, with a mutation by GET refused 405 instead of 400."""
        try:
            return await super().execute_single(*args, **kwargs)
        except HTTPException as refusal:
            if isinstance(refusal.__cause__, InvalidOperationTypeError):
                raise HTTPException(405, refusal.reason) from refusal
            raise

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        """Strawberry's sub-response, carrying the media type the client accepts."""
        sub_response = await super().get_sub_response(request)
        sub_response.media_type = negotiate(request.headers.get("accept", ""))
        return sub_response

    def encode_json(self, data: object) -> bytes:
        return dumps(data)

    def decode_json(self, data: str | bytes) -> object:
        """Strict UTF-8 JSON, not nested beyond the interpreter's limit, no lone surrogate."""
        if isinstance(data, bytes):
            data = _utf8(data)
        try:
            value = json.loads(data)
        except RecursionError:
            raise HTTPException(400, "The request's JSON is nested too deeply.") from None
        except ValueError as error:
            raise HTTPException(400, "Unable to parse the request's JSON.") from error
        if _has_lone_surrogate(value):
            raise HTTPException(400, "The JSON holds a lone surrogate (\\ud800-\\udfff).")
        return value

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        """A JSON body must be an object (or a list, which names a batch)."""
        if request.method == "POST" and _is_json(request.content_type):
            start = (await request.get_body()).lstrip(_JSON_WHITESPACE)[:1]
            if start not in (b"{", b"["):
                raise HTTPException(400, "The request body must be a JSON object.")
        return await super().parse_http_body(request)

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        media_type = sub_response.media_type or JSON
        body: object = response_data
        status = None
        if media_type == GRAPHQL_RESPONSE_JSON and isinstance(response_data, dict):
            status = _request_error_status(response_data)
            if status is not None:  # the specification: no ``data`` entry, a 4xx/5xx
                body = {key: value for key, value in response_data.items() if key != "data"}
        response = Response(
            self.encode_json(body),
            status_code=sub_response.status_code or status or 200,
            media_type=media_type,
            background=sub_response.background,
        )
        response.headers.raw.extend(sub_response.headers.raw)
        return response


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise HTTPException(400, "The request body is not valid UTF-8.") from error


def _is_json(content_type: str | None) -> bool:
    mime_type, _ = parse_content_type(content_type or "")
    return "application/json" in mime_type


def _has_lone_surrogate(value: object) -> bool:
    """Any string (key or value) with a surrogate code point; iterative, for any depth.
    (JSON's escaped surrogate pairs decode to one code point, so what remains is lone.)"""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _LONE_SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _request_error_status(response_data: GraphQLHTTPResponse) -> int | None:
    """The status of a request error (refused before execution: no data, and no error
    with a ``path``), from its first error's code; None when execution ran."""
    errors = response_data.get("errors") or []
    if response_data.get("data") is not None or not errors:
        return None
    if any(isinstance(error, dict) and error.get("path") for error in errors):
        return None
    first = errors[0]
    extensions = first.get("extensions") if isinstance(first, dict) else None
    code = extensions.get("code") if isinstance(extensions, dict) else None
    return status_for(code if isinstance(code, str) else None)


def _refusal(request: Request, *, status: int, message: str) -> Response:
    allowed = "POST" if request.method == "GET" else _ALLOWED_METHODS  # GET: a mutation
    headers = {"Allow": allowed} if status == 405 else None
    return graphql_error(
        code=code_for_status(status),
        message=message,
        headers=headers,
        media_type=negotiate(request.headers.get("accept", "")),
        status=status,
    )
