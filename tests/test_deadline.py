"""One deadline (REQUEST_TIMEOUT_MS) for all the database work of a request, over real HTTP:
a frozen database and a computation that runs too long both answer UNAVAILABLE in time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from graph import Settings
from graph.embedded import EmbeddedDatabase
from resolvers import open_client
from resolvers.seed import generate_messages
from tests.factories import NOW
from tests.frozen import frozen, tenants
from tests.live import Live, live_server

DEADLINE_MS = 1_500
#: The deadline plus a margin for the answer to travel.
ANSWER_WITHIN_S = 5.0
#: A full scan of this many messages takes about twice the deadline on SecantusDB.
SLOW_MESSAGES = 9_000
QUERY = {"query": '{ metrics(instances: ["sales"]) { totalMessages } }'}


@pytest.fixture(scope="module")
def hanging_db() -> Iterator[EmbeddedDatabase]:
    with EmbeddedDatabase(data_dir=None) as server:
        yield server


@pytest.fixture
async def token(hanging_db: EmbeddedDatabase, database_name: str) -> AsyncIterator[str]:
    async with tenants(hanging_db.uri, database_name, "a") as made:
        yield made["a"].account_token


@pytest.fixture
async def live(hanging_db: EmbeddedDatabase, database_name: str, token: str) -> AsyncIterator[Live]:
    settings = Settings(
        mongodb_uri=hanging_db.uri,
        mongodb_database=database_name,
        request_timeout_ms=DEADLINE_MS,
        mongodb_server_selection_timeout_ms=5_000,  # the driver's monitor outlasts a freeze
    )
    async with live_server(settings) as server:
        yield server


async def test_a_frozen_database_answers_503_unavailable_within_the_deadline(
    live: Live, hanging_db: EmbeddedDatabase, token: str
) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=2 * ANSWER_WITHIN_S) as client:
        with frozen(hanging_db):
            started = time.monotonic()
            rest = asyncio.create_task(client.get("/metrics/sales", headers={"token": token}))
            graphql = asyncio.create_task(
                client.post("/graphql", json=QUERY, headers={"token": token})
            )
            health = await client.get("/health")
            rest_response, graphql_response = await rest, await graphql
            answered_within = time.monotonic() - started
    assert rest_response.status_code == 503
    assert "did not answer in time" in rest_response.json()["error"]["message"]
    assert graphql_response.status_code == 503
    assert graphql_response.json()["errors"][0]["extensions"]["code"] == "UNAVAILABLE"
    assert answered_within < ANSWER_WITHIN_S
    assert health.json()["status"] == "degraded"  # answered meanwhile, from its own check


async def test_the_deadline_also_bounds_the_metrics_computation(
    live: Live, hanging_db: EmbeddedDatabase, database_name: str, token: str
) -> None:
    await _fill_sales(hanging_db.uri, database_name, count=SLOW_MESSAGES)
    async with httpx.AsyncClient(base_url=live.url, timeout=2 * ANSWER_WITHIN_S) as client:
        started = time.monotonic()
        response = await client.post("/graphql", json=QUERY, headers={"token": token})
        answered_within = time.monotonic() - started
    error = response.json()["errors"][0]  # an execution error: HTTP status as GraphQL says
    assert error["extensions"]["code"] == "UNAVAILABLE"
    assert error["path"] == ["metrics"]  # the aggregation ran out of time, not the gate
    assert "did not answer in time" in error["message"]
    assert answered_within < ANSWER_WITHIN_S


async def _fill_sales(uri: str, database: str, *, count: int) -> None:
    client = open_client(uri, server_selection_timeout_ms=5_000)
    async with client:
        db = client[database]
        sales = await db.instances.find_one({"name": "sales"}, {"_id": 1})
        assert sales is not None
        messages = generate_messages(
            instance_id=sales["_id"], count=count, days=90, now=NOW, seed=3
        )
        await db.messages.insert_many(list(messages))
