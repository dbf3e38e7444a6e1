"""Admission: how many requests may be in flight at once, per caller and in all.

Every request on the metrics surfaces holds, for as long as it runs, one slot of its
caller and one of the process. It takes them before any database work (the gate's
token lookup included) and gives them back when it ends: answered, failed, or cancelled
because its client left. When its caller already has ``per_caller`` requests in
flight it is refused with 429 ``RATE_LIMITED``; when the process has ``overall``, with
503 ``UNAVAILABLE``. Both answer at once, with ``Retry-After``, instead of queueing
behind work that is already late. ``/health`` is not admitted here and keeps answering.

The caller is the token presented (by its SHA-256 hash; checked later by the gate) or,
without one, the client address. The counts are per process.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from graph.gate import token_from_headers
from graph.responses import error_for_path
from resolvers import MetricsError, RateLimited, Unavailable, hash_token

__all__ = ["RETRY_AFTER_S", "Admission", "Slots", "caller_key"]

#: What ``Retry-After`` says when a request is refused for want of a slot.
RETRY_AFTER_S = 1

_ALL = "all"


class Slots:
    """How many slots each key holds, at most ``limit`` per key."""

    def __init__(self, *, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}

    def take(self, key: str) -> bool:
        """Take a slot for ``key``; False, taking nothing, when it already holds ``limit``."""
        held = self._held.get(key, 0)
        if held >= self.limit:
            return False
        self._held[key] = held + 1
        return True

    def give_back(self, key: str) -> None:
        held = self._held.pop(key) - 1
        if held:
            self._held[key] = held


def caller_key(scope: Scope) -> str:
    """The token presented, by hash; without one, the client address."""
    token = token_from_headers(Headers(scope=scope))
    if token is not None:
        return f"token:{hash_token(token)}"
    client = scope.get("client")
    return f"address:{client[0] if client else 'unknown'}"


class Admission:
    """ASGI middleware for ``paths``: refuses what would go over either bound."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        paths: tuple[str, ...],
        per_caller: int,
        overall: int,
        graphql_path: str = "/graphql",
    ) -> None:
        self.app = app
        self.paths = paths
        self.graphql_path = graphql_path
        self.per_caller = Slots(limit=per_caller)
        self.overall = Slots(limit=overall)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.paths):
            await self.app(scope, receive, send)
            return
        key = caller_key(scope)
        refusal = self._take(key)
        if refusal is not None:
            await self._refuse(scope, refusal)(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.overall.give_back(_ALL)
            self.per_caller.give_back(key)

    def _take(self, key: str) -> MetricsError | None:
        """Take both slots, or neither and say why."""
        if not self.per_caller.take(key):
            return RateLimited(
                f"Too many requests at once: at most {self.per_caller.limit} in flight per "
                "token (per client address without one). Retry after the Retry-After delay."
            )
        if not self.overall.take(_ALL):
            self.per_caller.give_back(key)
            return Unavailable(
                f"The service is busy: {self.overall.limit} requests are already in flight. "
                "Retry after the Retry-After delay."
            )
        return None

    def _refuse(self, scope: Scope, error: MetricsError) -> JSONResponse:
        return error_for_path(
            scope,
            graphql_path=self.graphql_path,
            code=error.code,
            message=error.message,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
