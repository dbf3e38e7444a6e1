"""The Starlette application: lifespan (one database client), gate, GraphQL and REST."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from graph.context import Clock, Context, build_context, system_clock
from graph.gate import Gate
from graph.schema import schema
from graph.settings import Settings
from resolvers import Database, Unavailable, ensure_indexes, open_client

__all__ = ["MetricsGraphQL", "create_app"]

_log = logging.getLogger(__name__)


class MetricsGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with our typed context."""

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        return build_context(request)


def create_app(settings: Settings | None = None, *, clock: Clock = system_clock) -> Starlette:
    """The whole service; ``settings`` default to the environment."""
    settings = settings or Settings()
    if not settings.mongodb_uri:
        raise ValueError(
            "MONGODB_URI is not set; `message-metrics serve` starts the embedded database."
        )
    uri = settings.mongodb_uri

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
                yield {"db": db, "clock": clock, "settings": settings}
            finally:
                indexes.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await indexes

    graphql = MetricsGraphQL(schema, graphql_ide="graphiql")
    routes = [Route("/graphql", graphql)]
    middleware = [Middleware(Gate, paths=("/graphql",))]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


async def _ensure_indexes_eventually(db: Database, *, max_delay: float = 60.0) -> None:
    """Create the indexes; while the database is unreachable, retry with backoff so the
    service can start before its database and still end up indexed."""
    delay = 1.0
    while True:
        try:
            await ensure_indexes(db)
            return
        except Unavailable:
            _log.warning("indexes not created yet: database unreachable; retrying in %.0fs", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
