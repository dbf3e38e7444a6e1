"""Admission over real HTTP: in-flight bounds per token and in all, and clients that hang up.

Requests are held in flight by a frozen database (their token lookup waits on it), so
what is refused is refused before any database work, and at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from graph import Settings
from graph.embedded import EmbeddedDatabase
from tests.frozen import frozen, tenants
from tests.live import Live, live_server, raw_connection, request_head

QUERY = {"query": "{ metrics { instance totalMessages } }"}
#: Long enough for a request just sent to be admitted and waiting on the database.
SETTLE = 0.3


@pytest.fixture(scope="module")
def hanging_db() -> Iterator[EmbeddedDatabase]:
    with EmbeddedDatabase(data_dir=None) as server:
        yield server


@pytest.fixture
async def tokens(hanging_db: EmbeddedDatabase, database_name: str) -> AsyncIterator[dict[str, str]]:
    async with tenants(hanging_db.uri, database_name, "a", "b", "c") as made:
        yield {name: tenant.account_token for name, tenant in made.items()}


@pytest.fixture
async def live(
    hanging_db: EmbeddedDatabase, database_name: str, tokens: dict[str, str]
) -> AsyncIterator[Live]:
    """One request in flight per token, two in all; a generous deadline, so held requests
    answer 200 once the database is resumed."""
    settings = Settings(
        mongodb_uri=hanging_db.uri,
        mongodb_database=database_name,
        max_in_flight_per_token=1,
        max_in_flight=2,
        request_timeout_ms=5_000,
        mongodb_server_selection_timeout_ms=5_000,
    )
    async with live_server(settings) as server:
        yield server


def _metrics(client: httpx.AsyncClient, token: str) -> asyncio.Task[httpx.Response]:
    return asyncio.create_task(client.get("/metrics/sales", headers={"token": token}))


def _graphql(client: httpx.AsyncClient, token: str) -> asyncio.Task[httpx.Response]:
    return asyncio.create_task(client.post("/graphql", json=QUERY, headers={"token": token}))


async def test_a_token_over_its_cap_gets_429_while_another_token_gets_through(
    live: Live, hanging_db: EmbeddedDatabase, tokens: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        with frozen(hanging_db):
            held = _metrics(client, tokens["a"])
            await asyncio.sleep(SETTLE)
            rest = await _metrics(client, tokens["a"])
            graphql = await _graphql(client, tokens["a"])
            other = _metrics(client, tokens["b"])
            await asyncio.sleep(SETTLE)
        held_response, other_response = await held, await other
    assert rest.status_code == 429
    assert rest.headers["retry-after"] == "1"
    assert rest.json()["success"] is False
    assert "at most 1 in flight per token" in rest.json()["error"]["message"]
    assert graphql.status_code == 429
    assert graphql.headers["retry-after"] == "1"
    assert graphql.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert held_response.status_code == 200
    assert other_response.status_code == 200  # admitted while "a" was at its cap


async def test_a_full_service_answers_503_at_once_and_health_still_answers(
    live: Live, hanging_db: EmbeddedDatabase, tokens: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        with frozen(hanging_db):
            held = [_metrics(client, tokens["a"]), _graphql(client, tokens["b"])]
            await asyncio.sleep(SETTLE)
            started = time.monotonic()
            rest = await _metrics(client, tokens["c"])
            graphql = await _graphql(client, tokens["c"])
            refused_within = time.monotonic() - started
            health = await client.get("/health")
        held_statuses = [(await request).status_code for request in held]
    assert rest.status_code == 503
    assert rest.headers["retry-after"] == "1"
    assert "busy: 2 requests are already in flight" in rest.json()["error"]["message"]
    assert graphql.status_code == 503
    assert graphql.headers["retry-after"] == "1"
    assert graphql.json()["errors"][0]["extensions"]["code"] == "UNAVAILABLE"
    assert refused_within < 1.0  # at once, not after the database or the deadline
    assert health.json()["status"] == "degraded"  # its own check answered, not a refusal
    assert held_statuses == [200, 200]


async def test_a_client_that_hangs_up_has_its_work_cancelled_and_logged_as_499(
    live: Live,
    hanging_db: EmbeddedDatabase,
    tokens: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    rest = request_head("GET", "/metrics/sales", {"token": tokens["a"], "X-Request-ID": "rest"})
    body = json.dumps(QUERY).encode()
    graphql = request_head(
        "POST",
        "/graphql",
        {
            "token": tokens["b"],
            "X-Request-ID": "graphql",
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
        },
    )
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        with frozen(hanging_db):
            async with raw_connection(live) as (_, first), raw_connection(live) as (_, second):
                first.write(rest)
                second.write(graphql + body)
                await first.drain()
                await second.drain()
                await asyncio.sleep(SETTLE)  # admitted; their token lookups wait on the database
            entries = [await _access_record(caplog, request_id=id_) for id_ in ("rest", "graphql")]
            again = [_metrics(client, tokens["a"]), _graphql(client, tokens["c"])]
            await asyncio.sleep(SETTLE)
            refused = [request.done() for request in again]
        statuses = [(await request).status_code for request in again]
    for entry in entries:
        assert entry is not None, "no request log line while the database was still frozen"
        assert entry.getMessage() == "client disconnected"
        assert entry.__dict__["status"] == 499
    assert refused == [False, False]  # both slots came back: neither was refused at once
    assert statuses == [200, 200]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def _access_record(
    caplog: pytest.LogCaptureFixture, *, request_id: str, wait: float = 3.0
) -> logging.LogRecord | None:
    """The request log record of ``request_id``, once the server has written it."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        for record in caplog.records:
            if (
                record.name == "message_metrics.access"
                and record.__dict__.get("request_id") == request_id
            ):
                return record
        await asyncio.sleep(0.05)
    return None
