"""The Starlette application: lifespan (one database client), gate, GraphQL, REST, health."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from graph.admission import Admission
from graph.body import BodyLimit
from graph.context import Clock, OperationLimits, system_clock
from graph.deadline import Deadline
from graph.disconnect import CancelOnDisconnect
from graph.errors import INTERNAL_CODE, code_for_status
from graph.gate import Gate
from graph.health import health, service_version
from graph.logs import RequestLog, configure_logging
from graph.pages import GraphQLWithGraphiQL, page_routes
from graph.query import schema
from graph.ratelimit import RateLimiter
from graph.responses import InternalErrors, error_for_path
from graph.rest import rest_routes
from graph.settings import Settings
from resolvers import Database, Unavailable, ensure_indexes, open_client
from resolvers.rollups.consumer import ConsumerOptions
from resolvers.rollups.service import RollupService
from resolvers.rollups.source import RollupSource, reconcile_period
from resolvers.rollups.warm import WarmOptions

__all__ = ["GRAPHQL_PATH", "REST_PREFIXES", "create_app"]

GRAPHQL_PATH = "/graphql"
REST_PREFIXES = ("/metrics", "/api/instance/metrics")

_log = logging.getLogger(__name__)


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
        Route(GRAPHQL_PATH, GraphQLWithGraphiQL(schema, graphql_ide="graphiql")),
        Route("/health", health, methods=["GET"]),
        *rest_routes(*REST_PREFIXES),
        *page_routes(),
    ]
    middleware = [
        Middleware(RequestLog),
        Middleware(InternalErrors, graphql_path=GRAPHQL_PATH),
        Middleware(
            BodyLimit,
            max_bytes=settings.max_body_bytes,
            read_timeout=settings.body_read_timeout_ms / 1000,
            graphql_path=GRAPHQL_PATH,
        ),
        Middleware(Deadline, seconds=settings.request_timeout_ms / 1000),
        Middleware(
            Admission,
            paths=(GRAPHQL_PATH, *REST_PREFIXES),
            per_caller=settings.max_in_flight_per_token,
            overall=settings.max_in_flight,
            graphql_path=GRAPHQL_PATH,
        ),
        Middleware(CancelOnDisconnect, paths=(GRAPHQL_PATH, *REST_PREFIXES)),
        Middleware(
            Gate,
            paths=(GRAPHQL_PATH, *REST_PREFIXES),
            limiter=limiter,
            lookup_timeout_s=settings.mongodb_server_selection_timeout_ms / 1000,
        ),
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
        )
        async with client:
            db = client[settings.mongodb_database]
            indexes = asyncio.create_task(_ensure_indexes_eventually(db))
            rollups = RollupService(
                db=db,
                consumer=(
                    RollupSource(
                        db=db,
                        source=settings.rollups_source,
                        reconcile_every=reconcile_period(settings.rollups_reconcile_minutes),
                        options=ConsumerOptions(
                            cache_entries=settings.rollups_cache_entries,
                            cache_values=settings.rollups_cache_values,
                        ),
                    )
                    if settings.rollups
                    else None
                ),
                wait_s=settings.rollups_wait_ms / 1000,
                warm=WarmOptions(days=settings.rollups_warm_days),
            )
            rollups.start()
            try:
                yield {
                    "db": db,
                    "clock": clock,
                    "limits": OperationLimits.from_settings(settings),
                    "rollups": rollups,
                    "started": time.monotonic(),
                    "version": service_version(),
                }
            finally:
                await _cancel(indexes)
                await rollups.stop()

    return lifespan


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it to end. The cancel is repeated: on Python 3.11 one
    that lands while the driver completes an ``asyncio.wait_for`` can be swallowed, and
    the task would then sleep through its backoff."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.5)


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
    """Routing's refusals (unknown path, wrong method) in the shape of their surface."""
    assert isinstance(exc, HTTPException)
    code = code_for_status(exc.status_code)
    return _shaped(request, code=code, message=exc.detail, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    """The last resort, outside every middleware (``InternalErrors`` answers the rest)."""
    _log.error("unhandled error", exc_info=exc)
    return _shaped(request, code=INTERNAL_CODE, message="Internal server error.")


def _shaped(
    request: Request, *, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return error_for_path(
        request.scope, graphql_path=GRAPHQL_PATH, code=code, message=message, headers=headers
    )
