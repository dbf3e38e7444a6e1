"""``GET /health``: no token, no rate limit, a one-second database check."""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version

import pymongo
from pymongo.errors import PyMongoError
from starlette.requests import Request
from starlette.responses import JSONResponse

from graph.embedded import EmbeddedDatabase
from resolvers import Database, MetricsError
from resolvers.rollups.service import RollupService
from resolvers.rollups.source import source_fields

__all__ = ["DB_CHECK_TIMEOUT_S", "health", "service_version"]

DB_CHECK_TIMEOUT_S = 1.0


def service_version() -> str:
    try:
        return version("message-metrics")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


async def health(request: Request) -> JSONResponse:
    """200 ``ok`` when the database answers ``ping`` within a second, else 503 ``degraded``."""
    state = request.state
    reason = await _check_db(state.db)
    if reason is not None:
        reason = _embedded_exit(request) or reason
    body = {
        "status": "ok" if reason is None else "degraded",
        "checks": {
            "db": "ok" if reason is None else reason,
            "rollups": await _check_rollups(state.rollups),
        },
        "uptime": round(time.monotonic() - state.started, 3),
        "version": state.version,
    }
    return JSONResponse(body, status_code=200 if reason is None else 503)


async def _check_rollups(rollups: RollupService) -> dict[str, object]:
    """The rollups' state; reported, not judged: while they build or lag, requests are
    answered exactly by the full scan, so the service stays healthy."""
    try:
        with pymongo.timeout(DB_CHECK_TIMEOUT_S):
            return {**(await rollups.health()).as_dict(), **source_fields(rollups.consumer)}
    except MetricsError as exc:
        return {"state": "unknown", "error": exc.message}


def _embedded_exit(request: Request) -> str | None:
    """Why the embedded database that ``serve`` started ended, if it ended on its own."""
    embedded = getattr(request.app.state, "embedded", None)
    return embedded.exit_reason if isinstance(embedded, EmbeddedDatabase) else None


async def _check_db(db: Database) -> str | None:
    try:
        with pymongo.timeout(DB_CHECK_TIMEOUT_S):
            await db.command("ping")
    except PyMongoError as exc:
        kind = "no answer within 1s" if exc.timeout else "unreachable"
        return f"{kind} ({type(exc).__name__})"
    return None
