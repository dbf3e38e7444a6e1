"""The gate in front of every metrics surface: who is calling (by token hash)."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from graph.responses import graphql_error, rest_error
from resolvers import Database, MetricsError, authenticate

__all__ = ["Gate", "token_from_headers"]


def token_from_headers(headers: Headers) -> str | None:
    """The token from the ``token`` header, else from ``Authorization: Bearer``."""
    token = headers.get("token", "").strip()
    if token:
        return token
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


class Gate:
    """ASGI middleware: leaves the caller (or None) in the request state for the context."""

    def __init__(
        self, app: ASGIApp, *, paths: tuple[str, ...], graphql_path: str = "/graphql"
    ) -> None:
        self.app = app
        self.paths = paths
        self.graphql_path = graphql_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.paths):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        db: Database = state["db"]
        try:
            state["caller"] = await authenticate(
                db=db, token=token_from_headers(Headers(scope=scope))
            )
        except MetricsError as error:
            await self._refuse(scope, error)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refuse(self, scope: Scope, error: MetricsError) -> JSONResponse:
        respond = graphql_error if scope["path"] == self.graphql_path else rest_error
        return respond(code=error.code, message=error.message)
