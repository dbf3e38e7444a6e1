"""Bounded request bodies: 413 over the size limit, 408 when a body stalls, in the shape of
each surface; over real HTTP (uvicorn, raw sockets) and at the ASGI level."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from graph import Settings
from graph.body import BodyLimit
from graph.logs import RequestLog
from resolvers import Database
from tests.factories import make_tenant
from tests.live import (
    Live,
    is_closed,
    live_server,
    raw_connection,
    read_response,
    request_head,
)

LIMIT = 1024
QUERY = {"query": "{ metrics { instance totalMessages } }"}


@pytest.fixture
async def live(settings: Settings, db: Database) -> AsyncIterator[Live]:
    small = settings.model_copy(update={"max_body_bytes": LIMIT, "body_read_timeout_ms": 300})
    async with live_server(small) as server:
        yield server


def _graphql_error(body: Any, code: str) -> str:
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == code
    return str(body["errors"][0]["message"])


def _envelope(body: Any) -> str:
    assert body["success"] is False
    return str(body["error"]["message"])


# Over real HTTP ------------------------------------------------------------------------


async def test_a_body_over_the_limit_is_413_with_a_graphql_error(live: Live) -> None:
    padded = json.dumps(QUERY) + " " * LIMIT
    async with httpx.AsyncClient(base_url=live.url) as client:
        response = await client.post(
            "/graphql", content=padded, headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert str(LIMIT) in _graphql_error(response.json(), "PAYLOAD_TOO_LARGE")
    assert response.headers["x-request-id"]
    assert response.headers["connection"] == "close"


async def test_a_body_at_the_limit_is_served(live: Live, db: Database) -> None:
    tenant = await make_tenant(db)
    exact = json.dumps(QUERY).ljust(LIMIT)
    async with httpx.AsyncClient(base_url=live.url) as client:
        response = await client.post(
            "/graphql",
            content=exact,
            headers={"content-type": "application/json", "token": tenant.account_token},
        )
    assert response.status_code == 200
    assert response.json()["data"]["metrics"]["instance"] == "sales"


async def test_a_rest_path_body_over_the_limit_is_413_in_the_envelope(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url) as client:
        response = await client.request("GET", "/metrics/sales", content=b"x" * (LIMIT + 1))
    assert response.status_code == 413
    assert str(LIMIT) in _envelope(response.json())


async def test_a_declared_length_over_the_limit_is_refused_before_any_body(live: Live) -> None:
    head = request_head(
        "POST",
        "/graphql",
        {"Content-Type": "application/json", "Content-Length": str(400 * 1024 * 1024)},
    )
    async with raw_connection(live) as (reader, writer):
        writer.write(head)  # and not one byte of the 400 MB
        await writer.drain()
        response = await read_response(reader)
        assert response.status == 413
        _graphql_error(response.json(), "PAYLOAD_TOO_LARGE")
        assert await is_closed(reader)


async def test_a_chunked_body_is_refused_once_past_the_limit_not_at_its_end(live: Live) -> None:
    head = request_head(
        "POST",
        "/graphql",
        {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
    )
    chunk = b"x" * 256
    async with raw_connection(live) as (reader, writer):
        writer.write(head)
        for _ in range(LIMIT // len(chunk) + 1):  # past the limit, and never a last chunk
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
        response = await read_response(reader)
        assert response.status == 413
        _graphql_error(response.json(), "PAYLOAD_TOO_LARGE")
        assert await is_closed(reader)


async def test_a_body_shorter_than_its_length_ends_with_408(live: Live) -> None:
    head = request_head(
        "POST", "/graphql", {"Content-Type": "application/json", "Content-Length": "100"}
    )
    async with raw_connection(live) as (reader, writer):
        writer.write(head + b'{"query": ')  # 10 of the 100 bytes, then nothing
        await writer.drain()
        response = await read_response(reader, timeout=10)
        assert response.status == 408
        _graphql_error(response.json(), "REQUEST_TIMEOUT")
        assert await is_closed(reader)


async def test_a_stalled_body_does_not_hold_up_other_requests(live: Live) -> None:
    head = request_head(
        "POST", "/metrics/sales", {"Content-Type": "text/plain", "Content-Length": "100"}
    )
    async with raw_connection(live) as (reader, writer):
        writer.write(head + b"short")
        await writer.drain()
        async with httpx.AsyncClient(base_url=live.url) as client:
            assert (await client.get("/health")).status_code in (200, 503)
        response = await read_response(reader, timeout=10)
        assert response.status == 408
        _envelope(response.json())


# At the ASGI level ----------------------------------------------------------------------


class _Recorder:
    """An inner app that records the body it read, and answers 200."""

    def __init__(self) -> None:
        self.body: bytes | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        self.body = message["body"]
        assert message["more_body"] is False
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _scope(path: str = "/graphql", headers: dict[str, str] | None = None) -> dict[str, Any]:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return {"type": "http", "method": "POST", "path": path, "headers": raw, "state": {}}


async def _run(
    app: Any, scope: dict[str, Any], chunks: list[bytes], *, endless: bool = False
) -> tuple[list[dict[str, Any]], int]:
    """Run ``app`` on ``chunks`` (then, if ``endless``, stall forever); the messages sent
    and how many times it called ``receive``."""
    calls = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls <= len(chunks):
            more = calls < len(chunks) or endless
            return {"type": "http.request", "body": chunks[calls - 1], "more_body": more}
        await asyncio.Event().wait()  # a client that never sends the rest
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent, calls


def _limit(inner: Any, *, max_bytes: int = 10, read_timeout: float = 5.0) -> BodyLimit:
    return BodyLimit(inner, max_bytes=max_bytes, read_timeout=read_timeout, graphql_path="/graphql")


def _status_and_body(sent: list[dict[str, Any]]) -> tuple[int, Any]:
    return sent[0]["status"], json.loads(sent[1]["body"])


async def test_a_body_in_pieces_reaches_the_app_whole() -> None:
    inner = _Recorder()
    sent, _ = await _run(_limit(inner), _scope(), [b"abc", b"def", b"ghij"])
    assert inner.body == b"abcdefghij"
    assert sent[0]["status"] == 200


async def test_a_declared_length_over_the_limit_is_never_read() -> None:
    inner = _Recorder()
    scope = _scope(headers={"content-length": "11"})
    sent, calls = await _run(_limit(inner), scope, [b"x" * 11])
    assert calls == 0 and inner.body is None
    status, body = _status_and_body(sent)
    assert status == 413
    _graphql_error(body, "PAYLOAD_TOO_LARGE")


async def test_a_stream_is_read_no_further_than_past_the_limit() -> None:
    inner = _Recorder()
    sent, calls = await _run(_limit(inner), _scope("/metrics/a"), [b"1234"] * 5, endless=True)
    assert calls == 3  # 12 bytes > 10: the fourth and fifth chunks are never asked for
    assert inner.body is None
    status, body = _status_and_body(sent)
    assert status == 413
    _envelope(body)


async def test_a_stalled_stream_ends_with_408() -> None:
    inner = _Recorder()
    app = _limit(inner, read_timeout=0.05)
    sent, _ = await _run(app, _scope(), [b"{"], endless=True)
    assert inner.body is None
    status, body = _status_and_body(sent)
    assert status == 408
    _graphql_error(body, "REQUEST_TIMEOUT")


async def test_a_client_gone_mid_body_gets_no_answer_runs_nothing_and_logs_499(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inner = _Recorder()
    messages = iter(
        [
            {"type": "http.request", "body": b"12", "more_body": True},
            {"type": "http.disconnect"},
        ]
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> Any:
        return next(messages)

    async def send(message: Any) -> None:
        sent.append(message)

    caplog.set_level(logging.INFO, logger="message_metrics.access")
    await RequestLog(_limit(inner))(_scope(), receive, send)
    assert inner.body is None and sent == []
    [line] = [r for r in caplog.records if r.name == "message_metrics.access"]
    assert line.getMessage() == "client disconnected" and line.__dict__["status"] == 499


async def test_after_the_body_the_app_hears_the_server_again() -> None:
    heard: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        heard.append(await receive())
        heard.append(await receive())

    messages = iter(
        [{"type": "http.request", "body": b"hi", "more_body": False}, {"type": "http.disconnect"}]
    )

    async def receive() -> Any:
        return next(messages)

    async def send(message: Any) -> None:
        raise AssertionError("nothing to send")

    await _limit(inner)(_scope(), receive, send)
    assert heard[0]["body"] == b"hi"
    assert heard[1] == {"type": "http.disconnect"}
