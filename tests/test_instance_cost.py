"""What a root field that reads instance by instance costs: one point per ten instances.

``metricsByInstance``, ``series`` and ``metrics`` with a range do their work once per
instance, so over 100 instances they cost 10 points where one instance costs 1; the
all-time ``metrics`` (and the legacy REST body) reads every instance at once and stays at
one point whatever the names.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from graph import Settings
from resolvers import Database
from tests.factories import Tenant, app_client, make_tenant

RANGE = {"from": "2026-11-20T00:00:00Z", "to": "2026-11-22T00:00:00Z"}
NAMES = [f"n{i:02d}" for i in range(25)]


@pytest.fixture
async def many(db: Database) -> Tenant:
    return await make_tenant(db, instances=dict.fromkeys(NAMES, False))


async def _post(
    http: httpx.AsyncClient, token: str, query: str, variables: dict[str, Any]
) -> httpx.Response:
    return await http.post(
        "/graphql", json={"query": query, "variables": variables}, headers={"token": token}
    )


BY_INSTANCE = "query($i: [String!]) { metricsByInstance(instances: $i) { totalMessages } }"
SERIES = """query($i: [String!], $r: TimeRange!) {
  series(instances: $i, range: $r, interval: DAY) { points { totalMessages } } }"""
RANGED = "query($i: [String!], $r: TimeRange) { metrics(instances: $i, range: $r) { instance } }"


@pytest.mark.parametrize(
    ("query", "variables", "names", "points"),
    [
        (BY_INSTANCE, {}, NAMES[:10], 1),
        (BY_INSTANCE, {}, NAMES[:11], 2),
        (BY_INSTANCE, {}, NAMES, 3),
        (BY_INSTANCE, {}, None, 3),  # every instance the token sees
        (SERIES, {"r": RANGE}, NAMES, 3),
        (RANGED, {"r": RANGE}, NAMES, 3),
        (RANGED, {"r": None}, NAMES, 1),  # all time: read at once, one point
    ],
    ids=["by10", "by11", "by25", "byAll", "series25", "ranged25", "allTime25"],
)
async def test_a_field_costs_a_point_per_ten_instances_it_reads(
    http: httpx.AsyncClient,
    many: Tenant,
    query: str,
    variables: dict[str, Any],
    names: list[str] | None,
    points: int,
) -> None:
    response = await _post(http, many.account_token, query, {**variables, "i": names})
    body = response.json()
    assert "errors" not in body, body
    assert body["extensions"]["cost"] == {
        "requested": points,
        "remaining": 100 - points,
        "limit": 100,
    }
    assert response.headers["X-RateLimit-Remaining"] == str(100 - points)


async def test_aliases_pay_each_for_their_instances(http: httpx.AsyncClient, many: Tenant) -> None:
    query = """query($i: [String!]) { a: metricsByInstance(instances: $i) { instance }
      b: metricsByInstance { instance } rateLimit { cost } }"""
    response = await _post(http, many.account_token, query, {"i": NAMES[:5]})
    body = response.json()
    assert body["extensions"]["cost"]["requested"] == 1 + 3
    assert response.headers["X-RateLimit-Remaining"] == "96"


async def test_rest_pays_for_a_range_or_series_of_many_instances_not_for_all_time(
    http: httpx.AsyncClient, many: Tenant
) -> None:
    headers = {"token": many.account_token}
    path = "/metrics/" + ",".join(NAMES)
    all_time = await http.get(path, headers=headers)
    assert all_time.status_code == 200, all_time.text
    assert all_time.headers["X-RateLimit-Remaining"] == "99"
    ranged = await http.get(path, params=RANGE, headers=headers)
    assert ranged.status_code == 200, ranged.text
    assert ranged.headers["X-RateLimit-Remaining"] == "96"
    series = await http.get(f"{path}/series", params={**RANGE, "interval": "day"}, headers=headers)
    assert series.status_code == 200, series.text
    assert series.headers["X-RateLimit-Remaining"] == "93"


async def test_a_field_the_bucket_cannot_pay_for_is_rate_limited_before_its_work(
    settings: Settings, db: Database, many: Tenant
) -> None:
    tight = settings.model_copy(update={"rate_limit_per_minute": 2})
    async with app_client(tight) as http:
        response = await _post(http, many.account_token, BY_INSTANCE, {"i": NAMES})
        body = response.json()
        assert body["data"] is None
        assert [error["extensions"]["code"] for error in body["errors"]] == ["RATE_LIMITED"]
        assert "costs 2" in body["errors"][0]["message"]
        assert int(response.headers["Retry-After"]) >= 1
        series = await http.get(
            "/metrics/" + ",".join(NAMES) + "/series",
            params={**RANGE, "interval": "day"},
            headers={"token": many.account_token},
        )
        assert series.status_code == 429, series.text
        assert series.json()["success"] is False
        assert int(series.headers["Retry-After"]) >= 1
