"""Structured logs: one JSON object per line, one line per request, never a token."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CLIENT_CLOSED_REQUEST",
    "JsonFormatter",
    "RequestLog",
    "configure_logging",
    "mark_disconnected",
]

#: The status logged for a request whose client left before its response (nginx's 499).
CLIENT_CLOSED_REQUEST = 499

_access = logging.getLogger("message_metrics.access")
_DISCONNECTED = "message_metrics.client_disconnected"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...extra fields}`` as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


JsonFormatter.converter = time.gmtime


def configure_logging(level: str) -> None:
    """JSON lines on stderr at ``level`` (idempotent: replaces our earlier handler)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h.formatter, JsonFormatter)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())


def mark_disconnected(scope: Scope) -> None:
    """Record that the client left before its response, and its work was cancelled."""
    scope[_DISCONNECTED] = True


class RequestLog:
    """ASGI middleware: a request id on every response (``X-Request-ID``) and one log line
    with method, path (no query string), status and duration; a request whose client left
    before its response is logged as ``client disconnected`` with status 499."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get("x-request-id", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            gone = scope.get(_DISCONNECTED, False)
            _access.info(
                "client disconnected" if gone else "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": CLIENT_CLOSED_REQUEST if gone else status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "request_id": request_id,
                },
            )
