"""The Starlette application: lifespan (one database client), gate, GraphQL, REST, health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from graph.context import Clock, Context, build_context, system_clock
from graph.gate import Gate
from graph.health import health, service_version
from graph.logs import RequestLog, configure_logging
from graph.query import schema
from graph.ratelimit import RateLimiter
from graph.responses import envelope
from graph.rest import rest_routes
from graph.settings import Settings
from resolvers import Database, Unavailable, ensure_indexes, open_client

__all__ = ["GRAPHQL_PATH", "REST_PREFIXES", "MetricsGraphQL", "create_app"]

GRAPHQL_PATH = "/graphql"
REST_PREFIXES = ("/metrics", "/api/instance/metrics")

_log = logging.getLogger(__name__)


class MetricsGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with our typed context."""

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        return build_context(request)


def create_app(settings: Settings | None = None, *, clock: Clock = system_clock) -> Starlette:
    """The whole service; ``settings`` default to the environment (``MONGODB_URI`` required)."""
    settings = settings or Settings()
    if not settings.mongodb_uri:
        raise ValueError("MONGODB_URI is not set; `message-metrics serve` starts an embedded one.")
    configure_logging(settings.log_level)
    limiter = RateLimiter(
        per_minute=settings.rate_limit_per_minute, storage_uri=settings.rate_limit_storage_uri
    )
    routes = [
        Route(GRAPHQL_PATH, MetricsGraphQL(schema, graphql_ide="graphiql")),
        Route("/health", health, methods=["GET"]),
        *rest_routes(*REST_PREFIXES),
    ]
    middleware = [
        Middleware(RequestLog),
        Middleware(Gate, paths=(GRAPHQL_PATH, *REST_PREFIXES), limiter=limiter),
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=_lifespan(settings, settings.mongodb_uri, clock),
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )


def _lifespan(settings: Settings, uri: str, clock: Clock) -> Any:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        client = open_client(
            uri,
            server_selection_timeout_ms=settings.mongodb_server_selection_timeout_ms,
            query_timeout_ms=settings.mongodb_query_timeout_ms,
        )
        async with client:
            db = client[settings.mongodb_database]
            indexes = asyncio.create_task(_ensure_indexes_eventually(db))
            try:
                yield {
                    "db": db,
                    "clock": clock,
                    "query_timeout_ms": settings.mongodb_query_timeout_ms,
                    "started": time.monotonic(),
                    "version": service_version(),
                }
            finally:
                indexes.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await indexes

    return lifespan


async def _ensure_indexes_eventually(db: Database, *, max_delay: float = 60.0) -> None:
    """Create the indexes; while the database is unreachable, retry with backoff so the
    service can start before its database and still end up indexed."""
    delay = 1.0
    while True:
        try:
            await ensure_indexes(db)
            return
        except Unavailable:
            _log.warning("indexes not created yet (database unreachable); retry in %.0fs", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return envelope(status=exc.status_code, message=exc.detail, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    _log.error("unhandled error", exc_info=exc)
    return envelope(status=500, message="Internal server error.")
