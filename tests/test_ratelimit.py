"""The per-token rate limit over HTTP, shared by REST and GraphQL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest

from graph import Settings
from resolvers import Database
from tests.factories import Tenant, app_client, make_tenant

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
