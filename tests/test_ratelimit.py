"""The per-token rate limit over HTTP, shared by REST and GraphQL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from asgi_lifespan import LifespanManager

from graph import Settings, create_app
from graph.embedded import free_port
from resolvers import Database
from tests.factories import Tenant, app_client, make_tenant
from tests.server import serve

LIGHT_QUERY = {"query": "{ __typename }"}


@pytest.fixture
async def tenant(db: Database) -> Tenant:
    return await make_tenant(db, instances={"sales": False, "support": False})


@pytest.fixture
async def tight(settings: Settings, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a limit of 3 requests per minute."""
    async with app_client(settings.model_copy(update={"rate_limit_per_minute": 3})) as client:
        yield client


async def test_the_101st_request_in_a_minute_is_429_across_rest_and_graphql(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    headers = {"token": tenant.account_token}
    for n in range(100):
        response = (
            await http.get("/metrics/sales", headers=headers)
            if n % 2
            else await http.post("/graphql", json=LIGHT_QUERY, headers=headers)
        )
        assert response.status_code == 200, n
        assert response.headers["X-RateLimit-Remaining"] == str(99 - n)
    rest = await http.get("/metrics/sales", headers=headers)
    assert rest.status_code == 429
    assert rest.json() == {"success": False, "error": {"message": rest.json()["error"]["message"]}}
    assert 1 <= int(rest.headers["Retry-After"]) <= 60
    graphql = await http.post("/graphql", json=LIGHT_QUERY, headers=headers)
    assert graphql.status_code == 429
    assert graphql.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert "Retry-After" in graphql.headers


async def test_every_response_carries_the_rate_limit_headers(
    tight: httpx.AsyncClient, tenant: Tenant
) -> None:
    before = int(time.time())
    response = await tight.get("/metrics/sales", headers={"token": tenant.account_token})
    assert response.headers["X-RateLimit-Limit"] == "3"
    assert response.headers["X-RateLimit-Remaining"] == "2"
    assert before + 59 <= int(response.headers["X-RateLimit-Reset"]) <= before + 61
    error = await tight.get("/metrics/ghost", headers={"token": tenant.account_token})
    assert error.status_code == 404 and error.headers["X-RateLimit-Remaining"] == "1"


async def test_another_token_has_its_own_bucket(tight: httpx.AsyncClient, tenant: Tenant) -> None:
    for _ in range(3):
        await tight.get("/metrics/sales", headers={"token": tenant.account_token})
    limited = await tight.get("/metrics/sales", headers={"token": tenant.account_token})
    assert limited.status_code == 429
    other = await tight.get("/metrics/sales", headers={"token": tenant.instance_tokens["sales"]})
    assert other.status_code == 200


async def test_bearer_and_token_header_share_one_bucket(
    tight: httpx.AsyncClient, tenant: Tenant
) -> None:
    token = tenant.account_token
    await tight.get("/metrics/sales", headers={"token": token})
    await tight.get("/metrics/sales", headers={"Authorization": f"Bearer {token}"})
    await tight.post("/graphql", json=LIGHT_QUERY, headers={"token": token})
    limited = await tight.get("/metrics/sales", headers={"Authorization": f"Bearer {token}"})
    assert limited.status_code == 429


async def test_unknown_tokens_are_limited_per_client_address(
    tight: httpx.AsyncClient, tenant: Tenant
) -> None:
    for guess in ("guess-1", "guess-2", "guess-3"):
        response = await tight.get("/metrics/sales", headers={"token": guess})
        assert response.status_code == 401
    assert (await tight.get("/metrics/sales", headers={"token": "guess-4"})).status_code == 429
    assert (await tight.get("/metrics/sales")).status_code == 429  # no token: same address
    valid = await tight.get("/metrics/sales", headers={"token": tenant.account_token})
    assert valid.status_code == 200


async def test_health_is_outside_the_limit(tight: httpx.AsyncClient) -> None:
    for _ in range(5):
        response = await tight.get("/health")
        assert response.status_code == 200
        assert "X-RateLimit-Limit" not in response.headers


@pytest.mark.parametrize("prefix", ["/metrics", "/api/instance/metrics"])
async def test_both_rest_paths_answer_429_in_the_envelope_with_retry_after(
    tight: httpx.AsyncClient, tenant: Tenant, prefix: str
) -> None:
    headers = {"token": tenant.account_token}
    for _ in range(3):
        assert (await tight.get(f"{prefix}/sales", headers=headers)).status_code == 200
    limited = await tight.get(f"{prefix}/sales", headers=headers)
    assert limited.status_code == 429
    assert set(limited.json()) == {"success", "error"} and limited.json()["success"] is False
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert int(limited.headers["Retry-After"]) >= 1


def _aliases(count: int) -> str:
    return " ".join(f"m{n}: metrics {{ totalMessages }}" for n in range(count))


async def test_each_metrics_computation_costs_one_point(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    query = f"{{ metrics {{ totalMessages }} {_aliases(10)} }}"
    response = await http.post("/graphql", json={"query": query}, headers=_token(tenant))
    body = response.json()
    assert response.status_code == 200 and "errors" not in body, body
    assert response.headers["X-RateLimit-Remaining"] == "89"
    assert body["extensions"]["cost"] == {"requested": 11, "remaining": 89, "limit": 100}


async def test_a_plain_request_costs_one_point_whatever_names_it_lists(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    names = ["sales"] * 100
    rest = await http.get(f"/metrics/{','.join(names)}", headers=_token(tenant))
    assert rest.status_code == 200 and rest.headers["X-RateLimit-Remaining"] == "99"
    query = "query ($i: [String!]) { metrics(instances: $i) { totalMessages } }"
    graphql = await http.post(
        "/graphql", json={"query": query, "variables": {"i": names}}, headers=_token(tenant)
    )
    assert graphql.headers["X-RateLimit-Remaining"] == "98"
    assert graphql.json()["extensions"]["cost"] == {"requested": 1, "remaining": 98, "limit": 100}


async def test_rate_limit_field_reports_the_bucket_and_this_operations_cost(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    query = "{ a: metrics { totalMessages } b: metrics { totalMessages } "
    query += "rateLimit { limit remaining resetAt cost } }"
    before = time.time()
    response = await http.post("/graphql", json={"query": query}, headers=_token(tenant))
    rate_limit = response.json()["data"]["rateLimit"]
    assert {key: rate_limit[key] for key in ("limit", "remaining", "cost")} == {
        "limit": 100,
        "remaining": 98,
        "cost": 2,
    }
    reset_at = datetime.fromisoformat(rate_limit["resetAt"].replace("Z", "+00:00")).timestamp()
    assert before + 59 <= reset_at <= before + 62


async def test_an_operation_costing_more_than_remains_is_429_and_takes_nothing_more(
    settings: Settings, db: Database, tenant: Tenant
) -> None:
    async with app_client(settings.model_copy(update={"rate_limit_per_minute": 5})) as client:
        for _ in range(2):
            await client.post("/graphql", json=LIGHT_QUERY, headers=_token(tenant))
        query = f"{{ {_aliases(4)} }}"  # 4 points: the gate takes 1, 3 more than the 2 left
        refused = await client.post("/graphql", json={"query": query}, headers=_token(tenant))
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.headers["X-RateLimit-Remaining"] == "2"
        body = refused.json()
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        assert "5 points per minute" in body["errors"][0]["message"]
        assert body["extensions"]["cost"] == {"requested": 4, "remaining": 2, "limit": 5}
        plain = await client.post("/graphql", json=LIGHT_QUERY, headers=_token(tenant))
        assert plain.status_code == 200 and plain.headers["X-RateLimit-Remaining"] == "1"


async def test_instance_tokens_of_two_accounts_have_their_own_buckets(
    tight: httpx.AsyncClient, db: Database
) -> None:
    acme = await make_tenant(db, name="Acme", instances={"sales": False})
    other = await make_tenant(db, name="Other", instances={"desk": False})
    for _ in range(3):
        await tight.get("/metrics/sales", headers={"token": acme.instance_tokens["sales"]})
    limited = await tight.get("/metrics/sales", headers={"token": acme.instance_tokens["sales"]})
    assert limited.status_code == 429
    fresh = await tight.get("/metrics/desk", headers={"token": other.instance_tokens["desk"]})
    assert fresh.status_code == 200 and fresh.headers["X-RateLimit-Remaining"] == "2"


async def test_unknown_tokens_are_limited_per_client_address_each_with_its_own_tries(
    settings: Settings, db: Database
) -> None:
    app = create_app(settings.model_copy(update={"rate_limit_per_minute": 3}))
    async with LifespanManager(app) as manager:
        first, second = (
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app, client=(address, 40_000)),
                base_url="http://testserver",
            )
            for address in ("198.51.100.1", "198.51.100.2")
        )
        async with first, second:
            for guess in ("guess-1", "guess-2", "guess-3"):
                assert (await first.get("/metrics/x", headers={"token": guess})).status_code == 401
            assert (await first.get("/metrics/x", headers={"token": "g4"})).status_code == 429
            other = await second.get("/metrics/x", headers={"token": "guess-1"})
            assert other.status_code == 401 and other.headers["X-RateLimit-Remaining"] == "2"


async def test_429_bodies_state_the_limit(tight: httpx.AsyncClient, tenant: Tenant) -> None:
    for _ in range(3):
        await tight.get("/metrics/sales", headers=_token(tenant))
    rest = await tight.get("/metrics/sales", headers=_token(tenant))
    assert "3 points per minute" in rest.json()["error"]["message"]
    graphql = await tight.post("/graphql", json=LIGHT_QUERY, headers=_token(tenant))
    assert "3 points per minute" in graphql.json()["errors"][0]["message"]


async def test_503_bodies_state_the_reason(database_name: str) -> None:
    uri = f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"
    down = Settings(
        mongodb_uri=uri,
        mongodb_database=database_name,
        mongodb_server_selection_timeout_ms=300,
        request_timeout_ms=1_000,
    )
    async with app_client(down) as client:
        rest = await client.get("/metrics/sales", headers={"token": "any"})
        graphql = await client.post("/graphql", json=LIGHT_QUERY, headers={"token": "any"})
    assert rest.status_code == 503 and "database" in rest.json()["error"]["message"]
    error = graphql.json()["errors"][0]
    assert graphql.status_code == 503 and error["extensions"]["code"] == "UNAVAILABLE"
    assert "database" in error["message"]


def test_serve_trusts_forwarded_for_only_from_forwarded_allow_ips(
    mongodb_uri: str, tmp_path: Path
) -> None:
    """Spoofed ``X-Forwarded-For`` values share the caller's bucket unless the caller is
    a trusted proxy."""
    seen = {}
    for trusted in ("", "127.0.0.1"):
        env = {"FORWARDED_ALLOW_IPS": trusted} if trusted else {}
        database = f"test_{uuid4().hex[:16]}"
        with serve(
            mongodb_uri=mongodb_uri, database=database, log=tmp_path / "s.log", env=env
        ) as base:
            seen[trusted] = [
                httpx.get(
                    f"{base}/metrics/sales",
                    headers={"X-Forwarded-For": f"203.0.113.{n}"},
                    timeout=10,
                ).headers["X-RateLimit-Remaining"]
                for n in range(1, 4)
            ]
    assert seen == {"": ["99", "98", "97"], "127.0.0.1": ["99", "99", "99"]}


def _token(tenant: Tenant) -> dict[str, str]:
    return {"token": tenant.account_token}
