"""Bounded request bodies: no request may make us read more than a limit, or wait forever.

A pure ASGI middleware reads the whole body before the app runs, and

- refuses it with 413 as soon as ``Content-Length`` says it is over ``max_bytes``, or the
  streamed (also chunked) body passes it, without reading any further;
- refuses it with 408 when it has not all arrived within ``read_timeout`` seconds (a
  body shorter than its ``Content-Length``, or one trickled in, holds no worker longer);
- then replays it to the app in one message, and hands every later ``receive`` (the
  disconnect) to the server as is.

Both refusals close the connection (the rest of the body is never read) and take the
shape of the surface: a GraphQL error on the GraphQL path, the envelope elsewhere.
"""

from __future__ import annotations

import asyncio

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from graph.logs import mark_disconnected
from graph.responses import error_for_path

__all__ = ["BodyLimit"]


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


class BodyLimit:
    """ASGI middleware bounding each HTTP request body in size and in reading time."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, read_timeout: float, graphql_path: str
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout
        self.graphql_path = graphql_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _declared_length(scope) > self.max_bytes:
            await self._refuse(scope, receive, send, status=413)
            return
        try:
            async with asyncio.timeout(self.read_timeout):
                body = await _read(receive, limit=self.max_bytes)
        except _TooLarge:
            await self._refuse(scope, receive, send, status=413)
        except TimeoutError:
            await self._refuse(scope, receive, send, status=408)
        except _Disconnected:
            mark_disconnected(scope)  # nobody is left to answer: logged as a 499
        else:
            await self.app(scope, _replay(body, receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, *, status: int) -> None:
        if status == 413:
            code = "PAYLOAD_TOO_LARGE"
            message = f"The request body is over the limit of {self.max_bytes} bytes."
        else:
            code = "REQUEST_TIMEOUT"
            message = f"The request body did not arrive within {self.read_timeout:g} s."
        response = error_for_path(
            scope,
            graphql_path=self.graphql_path,
            code=code,
            message=message,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def _declared_length(scope: Scope) -> int:
    """``Content-Length`` as declared (0 when absent; the server rejects malformed ones)."""
    value = Headers(scope=scope).get("content-length", "")
    return int(value) if value.isdigit() else 0


async def _read(receive: Receive, *, limit: int) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        body += message.get("body", b"")
        if len(body) > limit:
            raise _TooLarge
        if not message.get("more_body", False):
            return bytes(body)


def _replay(body: bytes, receive: Receive) -> Receive:
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
