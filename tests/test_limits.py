"""Operation limits over HTTP: fragment bombs, aliases, depth, cost, introspection."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import uuid4

import httpx
import pytest
from graphql import get_introspection_query

from graph import Settings
from resolvers import Database
from tests.factories import Tenant, app_client, make_tenant
from tests.server import serve


def _bomb(levels: int, leaf: str) -> str:
    """Each fragment spreads the next twice: 2**levels copies of ``leaf`` once expanded."""
    chain = " ".join(f"fragment F{n} on Query {{ ...F{n + 1} ...F{n + 1} }}" for n in range(levels))
    return f"{{ ...F0 }} {chain} fragment F{levels} on Query {{ {leaf} }}"


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body.get("data") is None, body
    return body["errors"][0]


def _nested(leaf: str) -> str:
    """Introspection nested 9 deep plus ``leaf``, written through fragments (within
    graphql-core's own limit of three nested introspection lists)."""
    return (
        "{ __schema { ...S } } fragment S on __Schema { directives { args { ...T } } } "
        "fragment T on __InputValue { type { fields { args { type { fields { args { "
        f"{leaf} }} }} }} }} }} }} }}"
    )


@pytest.fixture(scope="module")
def server(mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("limits") / "serve.log"
    with serve(mongodb_uri=mongodb_uri, database=f"test_{uuid4().hex[:16]}", log=log) as base:
        yield base


@pytest.fixture
async def tenant(db: Database) -> Tenant:
    return await make_tenant(db)


@pytest.mark.parametrize("leaf", ["m: metrics { totalMessages }", "__typename"])
def test_a_fragment_bomb_of_depth_40_is_refused_at_once_and_health_answers_meanwhile(
    server: str, leaf: str
) -> None:
    query = _bomb(40, leaf)
    with ThreadPoolExecutor(max_workers=2) as pool:
        started = time.monotonic()
        bomb = pool.submit(httpx.post, f"{server}/graphql", json={"query": query}, timeout=10)
        health = pool.submit(httpx.get, f"{server}/health", timeout=10)
        refused = bomb.result()
        elapsed = time.monotonic() - started
        assert health.result().status_code == 200
    assert elapsed < 1.0
    error = _error(refused)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert str(2**40) in error["message"] or str(2 * 2**40) in error["message"]


async def test_eleven_aliases_are_refused_with_the_limit_and_the_count(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    aliases = " ".join(f"m{n}: metrics {{ totalMessages }}" for n in range(11))
    response = await http.post(
        "/graphql", json={"query": f"{{ {aliases} }}"}, headers={"token": tenant.account_token}
    )
    error = _error(response)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "at most 10 aliases" in error["message"] and "uses 11" in error["message"]


async def test_depth_is_limited_to_ten_through_fragments(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    headers = {"token": tenant.account_token}
    fits = await http.post("/graphql", json={"query": _nested("name")}, headers=headers)
    assert fits.json()["data"]["__schema"]["directives"], fits.json()
    deep = await http.post("/graphql", json={"query": _nested("type { name }")}, headers=headers)
    error = _error(deep)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "at most 10 deep" in error["message"] and "11 deep" in error["message"]


async def test_the_depth_limit_is_a_setting(
    settings: Settings, db: Database, tenant: Tenant
) -> None:
    query = "{ metrics { ...C } } fragment C on Metrics { messagesByType { key } }"
    async with app_client(settings.model_copy(update={"graphql_max_depth": 2})) as client:
        response = await client.post(
            "/graphql", json={"query": query}, headers={"token": tenant.account_token}
        )
    error = _error(response)
    assert "at most 2 deep" in error["message"] and "3 deep" in error["message"]


async def test_an_operation_over_the_maximum_cost_is_refused_before_it_runs(
    settings: Settings, db: Database, tenant: Tenant
) -> None:
    aliases = " ".join(f"m{n}: metrics {{ totalMessages }}" for n in range(4))
    headers = {"token": tenant.account_token}
    async with app_client(settings.model_copy(update={"graphql_max_cost": 3})) as client:
        response = await client.post(
            "/graphql", json={"query": f"{{ {aliases} }}"}, headers=headers
        )
    error = _error(response)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "at most 3 points" in error["message"] and "costs 4" in error["message"]
    assert response.headers["X-RateLimit-Remaining"] == "99"  # the request, not the cost


async def test_introspection_needs_a_valid_token(http: httpx.AsyncClient, tenant: Tenant) -> None:
    query = {"query": "{ __schema { queryType { name } } }"}
    for headers in ({}, {"token": "not-a-token"}):
        error = _error(await http.post("/graphql", json=query, headers=headers))
        assert error["extensions"]["code"] == "UNAUTHENTICATED"
        assert "token" in error["message"]
    named = await http.post("/graphql", json={"query": '{ __type(name: "Metrics") { name } }'})
    assert _error(named)["extensions"]["code"] == "UNAUTHENTICATED"
    typename = await http.post("/graphql", json={"query": "{ __typename }"})
    assert typename.json()["data"] == {"__typename": "Query"}
    allowed = await http.post("/graphql", json=query, headers={"token": tenant.account_token})
    assert allowed.json()["data"] == {"__schema": {"queryType": {"name": "Query"}}}


async def test_a_setting_opens_introspection_to_everyone(settings: Settings, db: Database) -> None:
    query = {"query": "{ __schema { queryType { name } } }"}
    for public, expected in ((False, None), (True, {"__schema": {"queryType": {"name": "Query"}}})):
        configured = settings.model_copy(update={"graphql_public_introspection": public})
        async with app_client(configured) as client:
            response = await client.post("/graphql", json=query)
        assert response.json()["data"] == expected


async def test_graphiql_introspection_query_fits_the_limits(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    query = get_introspection_query(
        descriptions=True,
        specified_by_url=True,
        directive_is_repeatable=True,
        schema_description=True,
        input_value_deprecation=True,
    )
    response = await http.post(
        "/graphql", json={"query": query}, headers={"token": tenant.account_token}
    )
    body = response.json()
    assert "errors" not in body, body["errors"]
    names = {named["name"] for named in body["data"]["__schema"]["types"]}
    assert {"Query", "Metrics", "RateLimit"} <= names


async def test_fields_repeated_past_the_validation_budget_are_refused_with_a_reason(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    query = "{ metrics {" + " messagesByType { key }" * 1_200 + " } }"
    started = time.monotonic()
    response = await http.post(
        "/graphql", json={"query": query}, headers={"token": tenant.account_token}
    )
    assert time.monotonic() - started < 1.0
    error = _error(response)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "too complex to check" in error["message"]


async def test_the_token_limit_is_a_setting(settings: Settings, db: Database) -> None:
    query = "{ " + "__typename " * 30 + "}"
    async with app_client(settings.model_copy(update={"graphql_max_tokens": 20})) as client:
        response = await client.post("/graphql", json={"query": query})
    error = _error(response)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "more than 20 tokens" in error["message"]
