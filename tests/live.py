"""The whole app behind a real uvicorn on a free loopback port, for tests over real HTTP
(keep-alive, chunked bodies, short bodies, connections the server closes)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

from graph import Settings, create_app
from graph.embedded import free_port
from tests.factories import NOW


@dataclass(frozen=True)
class Live:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@asynccontextmanager
async def live_server(settings: Settings) -> AsyncIterator[Live]:
    """uvicorn serving ``create_app(settings)`` (clock frozen at NOW) in a thread."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, clock=lambda: NOW),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started or not thread.is_alive():
                break
            await asyncio.sleep(0.05)
        assert server.started, "uvicorn did not start"
        yield Live("127.0.0.1", port)
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 15)


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@asynccontextmanager
async def raw_connection(
    live: Live,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A plain TCP connection to the server, to write any bytes at any pace."""
    reader, writer = await asyncio.open_connection(live.host, live.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_response(reader: asyncio.StreamReader, *, timeout: float = 10.0) -> RawResponse:
    """One HTTP/1.1 response: ``Content-Length`` bytes (what the app always sends), else
    whatever comes until the server closes."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in filter(None, lines):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length")
    read = reader.readexactly(int(length)) if length else reader.read(-1)
    body = await asyncio.wait_for(read, timeout)
    return RawResponse(int(status_line.split()[1]), headers, body)


async def is_closed(reader: asyncio.StreamReader, *, timeout: float = 5.0) -> bool:
    """Whether the server closed the connection (end of stream, or a reset) in time."""
    try:
        return await asyncio.wait_for(reader.read(1), timeout) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def request_head(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    """The request line and headers (with ``Host``), ready for a body."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
