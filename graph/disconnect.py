"""Work for a client that has gone is cancelled, and logged as a disconnect.

The request runs as a task. Beside it, a watcher reads the server's ``receive`` (the
body is handed on to the request as it asks for it, one message at a time) and, once
the body has been read, waits for ``http.disconnect``. When the client leaves before
its response has been sent, the watcher cancels the request's task: the database
operation in progress is abandoned (the driver closes its connection), nothing more is
sent, and the request log records a 499 instead of a status.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from graph.logs import mark_disconnected

__all__ = ["CancelOnDisconnect"]

_DISCONNECT: Message = {"type": "http.disconnect"}


class CancelOnDisconnect:
    """ASGI middleware for ``paths``: a request whose client disconnects is cancelled."""

    def __init__(self, app: ASGIApp, *, paths: tuple[str, ...]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.paths):
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(receive, send)
        work = asyncio.create_task(_run(self.app, scope, exchange.receive, exchange.send))
        watcher = asyncio.create_task(exchange.cancel_on_disconnect(work))
        try:
            await work
        except asyncio.CancelledError:
            if not exchange.client_gone or _cancelled_from_outside():
                raise
            mark_disconnected(scope)
        finally:
            await _stop(watcher)


class _Exchange:
    """The request's ``receive`` and ``send`` as its task sees them."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._server_receive = receive
        self._server_send = send
        self._body: asyncio.Queue[Message] = asyncio.Queue(maxsize=1)  # no reading ahead
        self._body_read = False
        self._responded = False
        self._gone = asyncio.Event()

    @property
    def client_gone(self) -> bool:
        return self._gone.is_set()

    async def cancel_on_disconnect(self, work: asyncio.Task[None]) -> None:
        """Hand the body on, then wait for the client to leave; cancel ``work`` if it
        leaves before the response is complete."""
        more_body = True
        while True:
            message = await self._server_receive()
            if message["type"] == "http.disconnect":
                break
            if more_body:
                await self._body.put(message)
                more_body = message.get("more_body", False)
        if not self._responded:  # after the response, the server reports a disconnect
            self._gone.set()
            work.cancel()

    async def receive(self) -> Message:
        if not self._body_read:
            message = await self._body.get()
            self._body_read = not message.get("more_body", False)
            return message
        await self._gone.wait()
        return _DISCONNECT

    async def send(self, message: Message) -> None:
        if self.client_gone:
            return  # nobody to answer: nothing is sent once the work is cancelled
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self._responded = True
        await self._server_send(message)


async def _run(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    await app(scope, receive, send)


def _cancelled_from_outside() -> bool:
    """Whether the current task itself is being cancelled (server shutdown, say)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved: a failed watcher must not warn at garbage collection
