"""GET /health, the unreachable database (503 everywhere), and recovery."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from graph import Settings
from graph.embedded import EmbeddedDatabase, free_port
from tests.factories import app_client

# A request deadline far longer than the server selection timeout: an unreachable
# database must be reported within the latter, as the README promises.
FAST = {"mongodb_server_selection_timeout_ms": 300, "request_timeout_ms": 30_000}


@pytest.fixture
async def no_database(database_name: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app pointed at a port where nothing listens."""
    uri = f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"
    settings = Settings(mongodb_uri=uri, mongodb_database=database_name, **FAST)
    async with app_client(settings) as client:
        yield client


async def test_health_is_ok_with_version_and_uptime(http: httpx.AsyncClient) -> None:
    response = await http.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["checks"]["db"] == "ok"
    assert body["uptime"] >= 0 and body["version"] == "0.1.0"


async def test_health_reports_the_rollups_building_then_ready(http: httpx.AsyncClient) -> None:
    seen = []
    for _ in range(300):
        rollups = (await http.get("/health")).json()["checks"]["rollups"]
        seen.append(rollups["state"])
        if rollups["state"] == "ready":
            break
        await asyncio.sleep(0.1)
    assert seen[-1] == "ready", seen
    assert rollups["percent"] == 100 and rollups["behind"] == 0


async def test_health_says_rollups_off_when_disabled(settings: Settings) -> None:
    async with app_client(settings.model_copy(update={"rollups": False})) as client:
        body = (await client.get("/health")).json()
    assert body["checks"]["rollups"]["state"] == "off"


async def test_health_is_503_degraded_when_the_database_is_down(
    no_database: httpx.AsyncClient,
) -> None:
    response = await no_database.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded" and body["checks"]["db"] != "ok"


@pytest.mark.parametrize("prefix", ["/metrics", "/api/instance/metrics"])
async def test_rest_and_graphql_answer_503_when_the_database_is_down(
    no_database: httpx.AsyncClient, prefix: str
) -> None:
    started = time.monotonic()
    rest = await no_database.get(f"{prefix}/sales", headers={"token": "t"})
    assert time.monotonic() - started < 10, "not within the server selection timeout"
    assert rest.status_code == 503
    assert set(rest.json()) == {"success", "error"} and rest.json()["success"] is False
    graphql = await no_database.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"token": "t"}
    )
    assert graphql.status_code == 503
    assert graphql.json()["errors"][0]["extensions"]["code"] == "UNAVAILABLE"


async def test_health_recovers_when_the_database_comes_back(database_name: str) -> None:
    server = EmbeddedDatabase(data_dir=None)
    server.start()
    try:
        settings = Settings(mongodb_uri=server.uri, mongodb_database=database_name, **FAST)
        async with app_client(settings) as client:
            assert (await client.get("/health")).status_code == 200
            server.stop()
            assert (await client.get("/health")).status_code == 503
            server.start()
            assert (await client.get("/health")).status_code == 200
    finally:
        server.stop()
