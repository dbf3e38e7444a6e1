"""The gate in front of every metrics surface: who is calling, and how often.

It authenticates the token (by hash), charges one point to the caller's bucket (the
token's, or the client address's when the token is missing or unknown), refuses callers
over the limit, and adds the rate-limit headers to whatever the route answers. It leaves
a ``Meter`` in the request state: GraphQL charges the rest of an operation's cost to the
same bucket once it is known, and the headers report the last charge. When the bucket
storage cannot be reached, requests are refused with 503 (fail closed).
"""

from __future__ import annotations

import pymongo
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from graph.ratelimit import Decision, Meter, RateLimiter
from graph.responses import graphql_error, rest_error
from resolvers import Caller, Database, MetricsError, RateLimited, authenticate

__all__ = ["Gate", "bucket_key", "rate_limited", "token_from_headers"]


def token_from_headers(headers: Headers) -> str | None:
    """The token from the ``token`` header, else from ``Authorization: Bearer``."""
    token = headers.get("token", "").strip()
    if token:
        return token
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def bucket_key(scope: Scope, caller: Caller | None) -> str:
    """The caller's bucket: its token's, else its client address's."""
    if caller is not None:
        return f"token:{caller.token_hash}"
    client = scope.get("client")
    return f"address:{client[0] if client else 'unknown'}"


class Gate:
    """ASGI middleware for ``paths``; leaves the caller (or None) in the request state."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        paths: tuple[str, ...],
        limiter: RateLimiter,
        lookup_timeout_s: float,
        graphql_path: str = "/graphql",
    ) -> None:
        self.app = app
        self.paths = paths
        self.limiter = limiter
        self.lookup_timeout_s = lookup_timeout_s
        self.graphql_path = graphql_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.paths):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        caller, failure = await self._authenticate(state["db"], scope)
        state["caller"] = caller
        key = bucket_key(scope, caller)
        try:
            decision = await self.limiter.hit(key)
        except MetricsError as error:  # the bucket storage is unreachable: fail closed
            await self._refuse(scope, error, None)(scope, receive, send)
            return
        if not decision.allowed:
            failure = rate_limited(decision)
        if failure is not None:
            await self._refuse(scope, failure, decision)(scope, receive, send)
            return
        meter = state["meter"] = Meter(limiter=self.limiter, key=key, decision=decision)
        await self.app(scope, receive, _with_headers(send, meter))

    async def _authenticate(
        self, db: Database, scope: Scope
    ) -> tuple[Caller | None, MetricsError | None]:
        """The caller, or why it cannot be known. The token lookup gets at most
        ``lookup_timeout_s`` of the request's deadline: inside a deadline PyMongo waits
        the whole of it for a server, so an unreachable database would otherwise answer
        only when the request deadline passes."""
        token = token_from_headers(Headers(scope=scope))
        try:
            with pymongo.timeout(self.lookup_timeout_s):
                return await authenticate(db=db, token=token), None
        except MetricsError as error:  # the database is unreachable
            return None, error

    def _refuse(self, scope: Scope, error: MetricsError, decision: Decision | None) -> JSONResponse:
        respond = graphql_error if scope["path"] == self.graphql_path else rest_error
        headers = decision.headers() if decision is not None else None
        return respond(code=error.code, message=error.message, headers=headers)


def rate_limited(decision: Decision, *, cost: int = 1) -> RateLimited:
    """The refusal of a charge of ``cost`` points that ``decision`` did not allow."""
    return RateLimited(
        f"Too many requests: the limit is {decision.limit} points per minute; this costs "
        f"{cost} and {decision.remaining} remain. Retry after the Retry-After delay."
    )


def _with_headers(send: Send, meter: Meter) -> Send:
    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            for name, value in meter.decision.headers().items():
                headers[name] = value
        await send(message)

    return send_with_headers
