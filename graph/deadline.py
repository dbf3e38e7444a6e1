"""One deadline for all the database work of a request.

PyMongo's ``pymongo.timeout()`` sets a deadline in a context variable; every operation
started inside it (server selection, connection checkout, the command itself, with a
``maxTimeMS`` computed from what is left) shares it, and so do the tasks the request
starts (they copy the context). When it passes, the driver raises a timeout error,
which ``translate_driver_errors`` reports as ``UNAVAILABLE``: 503 on REST, the
``UNAVAILABLE`` code on GraphQL.
"""

from __future__ import annotations

import pymongo
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["Deadline"]


class Deadline:
    """ASGI middleware: every HTTP request's database work ends within ``seconds``."""

    def __init__(self, app: ASGIApp, *, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("the request deadline must be positive")
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with pymongo.timeout(self.seconds):
            await self.app(scope, receive, send)
