"""Time ranges, series and per-instance metrics over HTTP, through GraphQL and REST.

The numbers are checked against the plain-Python reference (``tests/reference.py``) and,
for the Kolkata days, by hand: Asia/Kolkata is UTC+05:30, so its midnights are 18:30 UTC.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from bson import ObjectId

import resolvers.rollups.service as service_module
import resolvers.timeranges as timeranges_module
from graph.rest import reshape
from resolvers import Database
from resolvers.rollups.service import RollupService
from tests.factories import Tenant, make_tenant, message
from tests.reference import KNOWN_STATUSES, KNOWN_TYPES, reference_metrics, reference_series

FROM = "2026-11-21T00:00:00+05:30"  # 2026-11-20T18:30:00Z
TO = "2026-11-24T00:00:00+05:30"  # 2026-11-23T18:30:00Z
RANGE = (datetime(2026, 11, 20, 18, 30, tzinfo=UTC), datetime(2026, 11, 23, 18, 30, tzinfo=UTC))
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # the app's frozen clock (tests.factories)

FORMULA = '=HYPERLINK("http://x","y")'
ODD_STATUS = '+cmd|" /C calc"!A0'

METRIC_FIELDS = """instance instances totalMessages messagesReceived messagesSent
  messagesByType { key count } groupMessages individualMessages messagesWithMedia
  mediaByType { key count } messagesByStatus { key count } uniqueChats uniqueGroups
  uniqueContacts messagesLast7Days messagesLast30Days firstMessageAt lastMessageAt"""

POINT_FIELDS = """start end totalMessages messagesSent messagesReceived groupMessages
  individualMessages messagesWithMedia messagesByType { key count }
  messagesByStatus { key count }"""

METRICS = f"""query ($i: [String!], $r: TimeRange) {{
  metrics(instances: $i, range: $r) {{ {METRIC_FIELDS} }} }}"""

BY_INSTANCE = f"""query ($i: [String!], $r: TimeRange) {{
  metricsByInstance(instances: $i, range: $r) {{ {METRIC_FIELDS} }} }}"""

SERIES = f"""query ($i: [String!], $r: TimeRange!, $n: Interval!, $z: String!) {{
  series(instances: $i, range: $r, interval: $n, timezone: $z) {{
    instance instances interval timezone points {{ {POINT_FIELDS} }} }} }}"""


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.fixture
async def acme(db: Database) -> tuple[Tenant, list[dict[str, Any]]]:
    """sales and support (which ignores group messages), messages on and next to the
    Kolkata midnights of the range, odd keys, an undated and an old message."""
    tenant = await make_tenant(db, instances={"sales": False, "support": True})
    sales, support = tenant.instance_ids["sales"], tenant.instance_ids["support"]
    docs = [
        message(sales, timestamp=_at("2026-11-20T18:29:59.999Z")),  # before the range
        message(
            sales,
            timestamp=_at("2026-11-20T18:30:00Z"),  # Kolkata 21 Nov, 00:00
            fromMe=True,
            type="image",
            media={"type": "image"},
            status="sent",
        ),
        message(
            sales,
            timestamp=_at("2026-11-21T10:00:00Z"),
            isGroup=True,
            chatId="g@g.us",
            sender="7@s.whatsapp.net",
            type=FORMULA,
            status=ODD_STATUS,
        ),
        message(sales, timestamp=_at("2026-11-22T18:30:00Z"), status="delivered"),  # 23 Nov
        message(
            sales, timestamp=_at("2026-11-23T00:00:00Z"), type="ptt", chatId="2@s.whatsapp.net"
        ),
        message(sales, timestamp=_at("2026-11-23T18:30:00Z")),  # Kolkata 24 Nov: after `to`
        message(sales, timestamp=None),  # undated: in no range
        message(sales, timestamp=_at("2026-10-01T00:00:00Z")),
        message(support, timestamp=_at("2026-11-21T05:00:00Z"), isGroup=True, chatId="h@g.us"),
        message(support, timestamp=_at("2026-11-21T06:00:00Z"), type="sticker"),
        message(support, timestamp=_at("2026-11-24T18:29:00Z")),
    ]
    await db.messages.insert_many([dict(doc) for doc in docs])
    return tenant, docs


def _refs(tenant: Tenant, *names: str) -> list[tuple[ObjectId, bool]]:
    ignoring = {"sales": False, "support": True}
    return [(tenant.instance_ids[name], ignoring[name]) for name in names]


async def _graphql(
    http: httpx.AsyncClient, token: str | None, query: str, variables: dict[str, Any]
) -> dict[str, Any]:
    headers = {"token": token} if token else {}
    response = await http.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _data(
    http: httpx.AsyncClient, token: str, query: str, variables: dict[str, Any]
) -> dict[str, Any]:
    body = await _graphql(http, token, query, variables)
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


def _code(body: dict[str, Any]) -> str:
    assert body.get("data") is None, body
    code: str = body["errors"][0]["extensions"]["code"]
    return code


def _counts(items: list[dict[str, Any]]) -> dict[str, int]:
    return {item["key"]: item["count"] for item in items}


def _metrics_as_reference(metrics: dict[str, Any]) -> dict[str, Any]:
    """A GraphQL ``Metrics`` in the reference's terms (maps, datetimes)."""
    shaped = {k: v for k, v in metrics.items() if k not in ("instance", "instances")}
    for field in ("messagesByType", "mediaByType", "messagesByStatus"):
        shaped[field] = _counts(metrics[field])
    for field in ("firstMessageAt", "lastMessageAt"):
        shaped[field] = _at(metrics[field]) if metrics[field] else None
    return shaped


def _point_as_reference(point: dict[str, Any]) -> dict[str, Any]:
    shaped = {**point, "start": _at(point["start"]), "end": _at(point["end"])}
    for field in ("messagesByType", "messagesByStatus"):
        shaped[field] = _counts(point[field])
    return shaped


def _range(start: str = FROM, end: str = TO) -> dict[str, str]:
    return {"from": start, "to": end}


# GraphQL: metrics with a range ------------------------------------------------------


async def test_metrics_over_a_range_count_only_its_messages(
    http: httpx.AsyncClient, acme: tuple[Tenant, list[dict[str, Any]]]
) -> None:
    tenant, docs = acme
    variables = {"i": ["sales", "support"], "r": _range()}
    metrics = (await _data(http, tenant.account_token, METRICS, variables))["metrics"]
    assert metrics["totalMessages"] == 5  # by hand: 3 on the 21st, 2 on the 23rd (Kolkata)
    assert metrics["firstMessageAt"] == "2026-11-20T18:30:00Z"
    assert metrics["lastMessageAt"] == "2026-11-23T00:00:00Z"
    expected = reference_metrics(
        docs, instances=_refs(tenant, "sales", "support"), now=NOW, range=RANGE
    )
    assert _metrics_as_reference(metrics) == expected


async def test_unique_counts_in_a_range_are_counted_when_selected_through_a_fragment(
    http: httpx.AsyncClient, acme: tuple[Tenant, list[dict[str, Any]]]
) -> None:
    tenant, _ = acme
    query = """query ($r: TimeRange) { metrics(instances: ["sales"], range: $r) { ...U } }
      fragment U on Metrics { uniqueChats uniqueGroups uniqueContacts }"""
    metrics = (await _data(http, tenant.account_token, query, {"r": _range()}))["metrics"]
    # chats 5511900000001, 2@ and g@g.us; contacts the two one-to-one chats and sender 7@
    assert metrics == {"uniqueChats": 3, "uniqueGroups": 1, "uniqueContacts": 3}


@pytest.mark.parametrize(
    ("selection", "unique"),
    [
        ("totalMessages uniqueChats: messagesSent", False),
        ("totalMessages ...U", True),
        ("... on Metrics { uniqueContacts }", True),
    ],
)
async def test_distinct_counts_are_asked_for_only_when_selected(
    http: httpx.AsyncClient,
    acme: tuple[Tenant, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    selection: str,
    unique: bool,
) -> None:
    tenant, _ = acme
    asked: list[tuple[str, bool]] = []
    for method in ("metrics", "metrics_by_instance"):
        real = getattr(RollupService, method)

        async def spy(
            self: RollupService, real: Any = real, method: str = method, **kwargs: Any
        ) -> Any:
            asked.append((method, kwargs["unique"]))
            return await real(self, **kwargs)

        monkeypatch.setattr(RollupService, method, spy)
    fragment = "fragment U on Metrics { uniqueGroups }" if "...U" in selection else ""
    query = f"""query ($r: TimeRange) {{ metrics(range: $r) {{ {selection} }}
      metricsByInstance(range: $r) {{ {selection} }} }} {fragment}"""
    await _data(http, tenant.account_token, query, {"r": _range()})
    assert {"metrics", "metrics_by_instance"} == {method for method, _ in asked}
    assert {flag for _, flag in asked} == {unique}


async def test_an_empty_range_has_no_messages(
    http: httpx.AsyncClient, acme: tuple[Tenant, list[dict[str, Any]]]
) -> None:
    tenant, _ = acme
    variables = {"i": ["sales"], "r": _range(FROM, FROM)}
    metrics = (await _data(http, tenant.account_token, METRICS, variables))["metrics"]
    assert metrics["totalMessages"] == 0 and metrics["firstMessageAt"] is None


# GraphQL: metricsByInstance ---------------------------------------------------------


async def test_metrics_by_instance_follow_the_order_named_once_each_and_sum_to_metrics(
    http: httpx.AsyncClient, acme: tuple[Tenant, list[dict[str, Any]]]
) -> None:
    tenant, docs = acme
    names = ["support", " sales", "support"]
    for range_, window in ((None, None), (_range(), RANGE)):
        variables = {"i": names, "r": range_}
        parts = (await _data(http, tenant.account_token, BY_INSTANCE, variables))[
            "metricsByInstance"
        ]
        assert [(m["instance"], m["instances"]) for m in parts] == [
            ("support", ["support"]),
            ("sales", ["sales"]),
        ]
        for part, name in zip(parts, ("support", "sales"), strict=True):
            expected = reference_metrics(docs, instances=_refs(tenant, name), now=NOW, range=window)
            assert _metrics_as_reference(part) == expected
        summed = (await _data(http, tenant.account_token, METRICS, variables))["metrics"]
        assert summed["totalMessages"] == sum(m["totalMessages"] for m in parts)
        assert summed["uniqueContacts"] == sum(m["uniqueContacts"] for m in parts)


async def test_metrics_by_instance_without_names_go_by_name(
    http: httpx.AsyncClient, db: Database
) -> None:
    tenant = await make_tenant(db, instances={"zeta": False, "alpha": False, "mid": True})
    await make_tenant(db, name="Rival", instances={"beta": False})
    data = await _data(http, tenant.account_token, "{ metricsByInstance { instance } }", {})
    assert [m["instance"] for m in data["metricsByInstance"]] == ["alpha", "mid", "zeta"]
    own = await _data(http, tenant.instance_tokens["mid"], "{ metricsByInstance { instance } }", {})
    assert own["metricsByInstance"] == [{"instance": "mid"}]


# GraphQL: series --------------------------------------------------------------------


async def test_a_kolkata_day_series_runs_midnight_to_midnight_zero_filled(
    http: httpx.AsyncClient, acme: tuple[Tenant, list[dict[str, Any]]]
) -> None:
    tenant, docs = acme
    variables = {"i": ["sales", "support"], "r": _range(), "n": "DAY", "z": "Asia/Kolkata"}
    series = (await _data(http, tenant.account_token, SERIES, variables))["series"]
    assert series["instance"] == "sales,support" and series["instances"] == ["sales", "support"]
    assert (series["interval"], series["timezone"]) == ("DAY", "Asia/Kolkata")
    points = series["points"]
    assert [(p["start"], p["end"], p["totalMessages"]) for p in points] == [
        ("2026-11-20T18:30:00Z", "2026-11-21T18:30:00Z", 3),
        ("2026-11-21T18:30:00Z", "2026-11-22T18:30:00Z", 0),
        ("2026-11-22T18:30:00Z", "2026-11-23T18:30:00Z", 2),
    ]
    assert [key["key"] for key in points[1]["messagesByType"]] == KNOWN_TYPES
    assert [key["key"] for key in points[1]["messagesByStatus"]] == KNOWN_STATUSES
    expected = reference_series(
        docs,
        instances=_refs(tenant, "sales", "support"),
        range=RANGE,
        interval="DAY",
        timezone="Asia/Kolkata",
    )
    assert [_point_as_reference(p) for p in points] == expected


async def test_a_utc_series_is_clipped_to_the_range_and_sums_to_metrics(
    http: httpx.AsyncClient, acme: tuple[Tenant, list[dict[str, Any]]]
) -> None:
    tenant, docs = acme
    variables = {"i": ["sales", "support"], "r": _range(), "n": "DAY", "z": "UTC"}
    points = (await _data(http, tenant.account_token, SERIES, variables))["series"]["points"]
    assert [(p["start"], p["totalMessages"]) for p in points] == [
        ("2026-11-20T18:30:00Z", 1),
        ("2026-11-21T00:00:00Z", 2),
        ("2026-11-22T00:00:00Z", 1),
        ("2026-11-23T00:00:00Z", 1),
    ]
    assert points[-1]["end"] == "2026-11-23T18:30:00Z"
    metrics = (
        await _data(http, tenant.account_token, METRICS, {"i": variables["i"], "r": _range()})
    )["metrics"]
    for field in ("totalMessages", "messagesSent", "groupMessages", "messagesWithMedia"):
        assert sum(p[field] for p in points) == metrics[field]
    by_type: dict[str, int] = {}
    for point in points:
        for key, count in _counts(point["messagesByType"]).items():
            by_type[key] = by_type.get(key, 0) + count
    assert by_type == _counts(metrics["messagesByType"])
    expected = reference_series(
        docs,
        instances=_refs(tenant, "sales", "support"),
        range=RANGE,
        interval="DAY",
        timezone="UTC",
    )
    assert [_point_as_reference(p) for p in points] == expected


async def test_the_default_timezone_is_utc_and_a_week_starts_on_monday(
    http: httpx.AsyncClient, acme: tuple[Tenant, list[dict[str, Any]]]
) -> None:
    tenant, _ = acme
    query = """{ series(range: {from: "2026-11-18T00:00:00Z", to: "2026-12-01T00:00:00Z"},
      interval: WEEK) { timezone points { start end totalMessages } } }"""
    series = (await _data(http, tenant.account_token, query, {}))["series"]
    assert series["timezone"] == "UTC"
    assert series["points"] == [  # 2026-11-23 is a Monday; support ignores its group message
        {"start": "2026-11-18T00:00:00Z", "end": "2026-11-23T00:00:00Z", "totalMessages": 5},
        {"start": "2026-11-23T00:00:00Z", "end": "2026-11-30T00:00:00Z", "totalMessages": 3},
        {"start": "2026-11-30T00:00:00Z", "end": "2026-12-01T00:00:00Z", "totalMessages": 0},
    ]


# GraphQL: bad input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "why"),
    [
        ("2026-11-21T00:00:00", TO, "with a UTC offset"),  # no offset
        (FROM, "2026-11-24", "with a UTC offset"),  # a date alone
        ("yesterday", TO, "with a UTC offset"),
        ("0001-01-01T00:00:00+05:00", TO, "out of range"),  # before year 1 in UTC
        (TO, FROM, "`from` is after its `to`"),
    ],
)
async def test_a_bad_range_is_bad_user_input(
    http: httpx.AsyncClient,
    acme: tuple[Tenant, list[dict[str, Any]]],
    start: str,
    end: str,
    why: str,
) -> None:
    tenant, _ = acme
    series = {"r": _range(start, end), "n": "DAY", "z": "UTC"}
    for query, variables in (
        (METRICS, {"r": _range(start, end)}),
        (BY_INSTANCE, {"r": _range(start, end)}),
        (SERIES, series),
    ):
        body = await _graphql(http, tenant.account_token, query, variables)
        assert _code(body) == "BAD_USER_INPUT", body
        assert why in body["errors"][0]["message"], body


async def test_a_date_without_offset_written_in_the_query_is_bad_user_input(
    http: httpx.AsyncClient, acme: tuple[Tenant, list[dict[str, Any]]]
) -> None:
    tenant, _ = acme
    query = """{ metrics(range: {from: "2026-11-21T00:00:00", to: "2026-11-22T00:00:00Z"}) {
      totalMessages } }"""
    body = await _graphql(http, tenant.account_token, query, {})
    assert _code(body) == "BAD_USER_INPUT"
    assert "offset" in body["errors"][0]["message"]


async def test_an_unknown_timezone_is_bad_user_input(
    http: httpx.AsyncClient, acme: tuple[Tenant, list[dict[str, Any]]]
) -> None:
    tenant, _ = acme
    for zone in ("Mars/Olympus", "", "../../etc/passwd"):
        body = await _graphql(
            http, tenant.account_token, SERIES, {"r": _range(), "n": "DAY", "z": zone}
        )
        assert _code(body) == "BAD_USER_INPUT", zone
        assert body["errors"][0]["message"].startswith("Unknown timezone"), body


async def test_more_than_a_thousand_points_is_bad_user_input_naming_the_limit(
    http: httpx.AsyncClient, acme: tuple[Tenant, list[dict[str, Any]]]
) -> None:
    tenant, _ = acme
    hours = {"r": _range("2026-10-01T00:00:00Z", "2026-11-11T17:00:00Z"), "n": "HOUR", "z": "UTC"}
    body = await _graphql(http, tenant.account_token, SERIES, hours)  # 1,000 hours and 1
    assert _code(body) == "BAD_USER_INPUT"
    assert "1000" in body["errors"][0]["message"]
    hours["r"] = _range("2026-10-01T00:00:00Z", "2026-11-11T16:00:00Z")  # exactly 1,000
    points = (await _data(http, tenant.account_token, SERIES, hours))["series"]["points"]
    assert len(points) == 1000


async def test_series_keeps_the_authorization_of_metrics(
    http: httpx.AsyncClient, acme: tuple[Tenant, list[dict[str, Any]]], db: Database
) -> None:
    tenant, _ = acme
    await make_tenant(db, name="Rival", instances={"theirs": False})
    base = {"r": _range(), "n": "DAY", "z": "UTC"}
    assert _code(await _graphql(http, None, SERIES, base)) == "UNAUTHENTICATED"
    forbidden = {**base, "i": ["support"]}
    assert _code(await _graphql(http, tenant.instance_tokens["sales"], SERIES, forbidden)) == (
        "FORBIDDEN"
    )
    theirs = {**base, "i": ["theirs"]}
    assert _code(await _graphql(http, tenant.account_token, SERIES, theirs)) == "NOT_FOUND"
    own = await _data(http, tenant.instance_tokens["sales"], SERIES, base)
    assert own["series"]["instances"] == ["sales"]


# Cost ---------------------------------------------------------------------------------


async def test_each_new_root_field_is_one_computation_and_nested_instances_are_free(
    http: httpx.AsyncClient, acme: tuple[Tenant, list[dict[str, Any]]]
) -> None:
    tenant, _ = acme
    query = """{ m: metrics { instances } b: metricsByInstance { instances }
      s: series(range: {from: "2026-11-20T00:00:00Z", to: "2026-11-21T00:00:00Z"},
                interval: DAY) { instances }
      instances { name } }"""
    response = await http.post(
        "/graphql", json={"query": query}, headers={"token": tenant.account_token}
    )
    assert "errors" not in response.json(), response.json()
    assert response.json()["extensions"]["cost"] == {"requested": 4, "remaining": 96, "limit": 100}
    assert response.headers["X-RateLimit-Remaining"] == "96"


# REST: the legacy body for a range ------------------------------------------------------


def _envelope(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"success", "error"} and body["success"] is False
    assert set(body["error"]) == {"message"}
    text: str = body["error"]["message"]
    return text


async def test_rest_metrics_for_a_range_equal_graphql_reshaped(
    http: httpx.AsyncClient, acme: tuple[Tenant, list[dict[str, Any]]]
) -> None:
    tenant, docs = acme
    headers = {"token": tenant.account_token}
    params = {"from": FROM, "to": TO}
    response = await http.get("/metrics/sales,support", params=params, headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["message"] == "Metrics retrieved successfully"
    metrics = body["metrics"]
    assert metrics["instance"] == "sales,support" and metrics["totalMessages"] == 5
    expected = reference_metrics(
        docs, instances=_refs(tenant, "sales", "support"), now=NOW, range=RANGE
    )
    assert metrics["messagesByType"] == expected["messagesByType"]
    assert metrics["uniqueContacts"] == expected["uniqueContacts"]
    assert metrics["messagesLast7Days"] == expected["messagesLast7Days"]
    graphql = await _data(
        http, tenant.account_token, METRICS, {"i": ["sales", "support"], "r": _range()}
    )
    legacy = {k: v for k, v in graphql["metrics"].items() if k != "instances"}
    assert metrics == reshape(legacy)


async def test_rest_reads_an_unencoded_plus_of_the_offset(
    http: httpx.AsyncClient, acme: tuple[Tenant, list[dict[str, Any]]]
) -> None:
    tenant, _ = acme
    # a bare "+" in a query string means a space; the offset is still understood
    response = await http.get(
        f"/metrics/sales?from={FROM}&to={TO}", headers={"token": tenant.account_token}
    )
    assert response.status_code == 200, response.text
    assert response.json()["metrics"]["totalMessages"] == 4


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"from": FROM}, "together"),
        ({"to": TO}, "together"),
        ({"from": "2026-11-21T00:00:00", "to": TO}, "from"),
        ({"from": FROM, "to": "soon"}, "to"),
        ({"from": TO, "to": FROM}, "after"),
    ],
)
async def test_rest_refuses_a_bad_range_with_400(
    http: httpx.AsyncClient,
    acme: tuple[Tenant, list[dict[str, Any]]],
    params: dict[str, str],
    named: str,
) -> None:
    tenant, _ = acme
    response = await http.get(
        "/metrics/sales", params=params, headers={"token": tenant.account_token}
    )
    assert named in _envelope(response, 400)


# REST: series as JSON and CSV ---------------------------------------------------------

SERIES_PARAMS = {"from": FROM, "to": TO, "interval": "day", "timezone": "Asia/Kolkata"}


async def test_rest_series_is_the_graphql_series_with_points_reshaped(
    http: httpx.AsyncClient, acme: tuple[Tenant, list[dict[str, Any]]]
) -> None:
    tenant, _ = acme
    headers = {"token": tenant.account_token}
    params = {**SERIES_PARAMS, "interval": "Day"}  # any case
    response = await http.get("/metrics/sales,support/series", params=params, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["X-RateLimit-Remaining"] == "99"
    body = response.json()
    assert set(body) == {"success", "series"} and body["success"] is True
    series = body["series"]
    assert series["points"][0]["messagesByType"]["image"] == 1
    assert series["points"][0]["messagesByStatus"][ODD_STATUS] == 1
    variables = {"i": ["sales", "support"], "r": _range(), "n": "DAY", "z": "Asia/Kolkata"}
    graphql = (await _data(http, tenant.account_token, SERIES, variables))["series"]
    assert series == {
        **graphql,
        "points": [
            {
                **point,
                "messagesByType": _counts(point["messagesByType"]),
                "messagesByStatus": _counts(point["messagesByStatus"]),
            }
            for point in graphql["points"]
        ],
    }


@pytest.mark.parametrize(
    ("headers", "params"),
    [({"Accept": "text/csv"}, {}), ({}, {"format": "csv"}), ({"Accept": "*/*"}, {"format": "CSV"})],
)
async def test_rest_series_as_csv_parses_back_to_the_json_numbers(
    http: httpx.AsyncClient,
    acme: tuple[Tenant, list[dict[str, Any]]],
    headers: dict[str, str],
    params: dict[str, str],
) -> None:
    tenant, _ = acme
    path = "/metrics/sales,support/series"
    token = {"token": tenant.account_token}
    response = await http.get(
        path, params={**SERIES_PARAMS, **params}, headers={**token, **headers}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment; filename=") and disposition.endswith('.csv"')
    assert response.headers["X-RateLimit-Remaining"] == "99"
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8"), newline="")))
    header, values = rows[0], rows[1:]
    counters = [
        "start",
        "end",
        "totalMessages",
        "messagesSent",
        "messagesReceived",
        "groupMessages",
        "individualMessages",
        "messagesWithMedia",
    ]
    types = [f"byType.{key}" for key in KNOWN_TYPES] + [f"byType.{FORMULA}", "byType.ptt"]
    statuses = [f"byStatus.{key}" for key in [*KNOWN_STATUSES, ODD_STATUS]]
    assert header == counters + types + statuses
    # no cell, header included, starts as a spreadsheet formula would
    assert not [cell for row in rows for cell in row if cell[:1] in ("=", "+", "-", "@")]
    json_points = (await http.get(path, params=SERIES_PARAMS, headers=token)).json()["series"][
        "points"
    ]
    assert len(values) == len(json_points) == 3
    for row, point in zip(values, json_points, strict=True):
        cells = dict(zip(header, row, strict=True))
        assert (cells["start"], cells["end"]) == (point["start"], point["end"])
        for counter in counters[2:]:
            assert int(cells[counter]) == point[counter]
        for column in types:
            assert int(cells[column]) == point["messagesByType"].get(column[len("byType.") :], 0)
        for column in statuses:
            key = column[len("byStatus.") :]
            assert int(cells[column]) == point["messagesByStatus"].get(key, 0)


async def test_rest_series_csv_of_an_empty_range_has_the_known_columns(
    http: httpx.AsyncClient, acme: tuple[Tenant, list[dict[str, Any]]]
) -> None:
    tenant, _ = acme
    params = {**SERIES_PARAMS, "to": FROM, "format": "csv"}
    response = await http.get(
        "/metrics/sales/series", params=params, headers={"token": tenant.account_token}
    )
    rows = list(csv.reader(io.StringIO(response.text, newline="")))
    assert len(rows) == 1
    assert rows[0][-1] == "byStatus.failed" and len(rows[0]) == 8 + 10 + 6


async def test_an_instance_named_series_keeps_its_metrics_path(
    http: httpx.AsyncClient, db: Database
) -> None:
    tenant = await make_tenant(db, instances={"series": False})
    await db.messages.insert_one(message(tenant.instance_ids["series"], days_ago=2))
    headers = {"token": tenant.account_token}
    metrics = await http.get("/metrics/series", headers=headers)
    assert metrics.json()["metrics"]["instance"] == "series"
    series = await http.get("/metrics/series/series", params=SERIES_PARAMS, headers=headers)
    assert series.json()["series"]["instances"] == ["series"]
    empty = await http.get("/metrics//series", params=SERIES_PARAMS, headers=headers)
    _envelope(empty, 400)


@pytest.mark.parametrize(
    ("change", "status", "named"),
    [
        ({"interval": None}, 400, "interval"),
        ({"interval": "fortnight"}, 400, "interval"),
        ({"from": None}, 400, "together"),
        ({"to": "2026-11-24T00:00:00"}, 400, "to"),
        ({"timezone": "Mars/Olympus"}, 400, "Mars/Olympus"),
        ({"timezone": ""}, 400, "timezone"),
        ({"interval": "hour", "from": "2026-01-01T00:00:00Z"}, 400, "1000"),
        ({"format": "xml"}, 400, "format"),
    ],
)
async def test_rest_series_refuses_bad_input_with_400(
    http: httpx.AsyncClient,
    acme: tuple[Tenant, list[dict[str, Any]]],
    change: dict[str, str | None],
    status: int,
    named: str,
) -> None:
    tenant, _ = acme
    params = {k: v for k, v in {**SERIES_PARAMS, **change}.items() if v is not None}
    response = await http.get(
        "/metrics/sales/series", params=params, headers={"token": tenant.account_token}
    )
    assert named in _envelope(response, status)


async def test_rest_series_keeps_the_statuses_of_the_contract(
    http: httpx.AsyncClient, acme: tuple[Tenant, list[dict[str, Any]]], db: Database
) -> None:
    tenant, _ = acme
    await make_tenant(db, name="Rival", instances={"theirs": False})
    path = "/metrics/{}/series"
    _envelope(await http.get(path.format("sales"), params=SERIES_PARAMS), 401)
    forbidden = await http.get(
        path.format("support"),
        params=SERIES_PARAMS,
        headers={"token": tenant.instance_tokens["sales"]},
    )
    _envelope(forbidden, 403)
    theirs = await http.get(
        path.format("theirs"), params=SERIES_PARAMS, headers={"token": tenant.account_token}
    )
    assert "theirs" in _envelope(theirs, 404)
    for prefix in ("/api/instance/metrics",):
        other = await http.get(
            f"{prefix}/sales/series", params=SERIES_PARAMS, headers={"token": tenant.account_token}
        )
        assert other.status_code == 200
    _envelope(await http.post(path.format("sales"), headers={"token": tenant.account_token}), 405)


@pytest.mark.parametrize("name", ["from", "to", "interval", "timezone", "format"])
async def test_rest_refuses_a_parameter_given_twice(
    http: httpx.AsyncClient, acme: tuple[Tenant, list[dict[str, Any]]], name: str
) -> None:
    """Which of two values counts would be a guess (a proxy may check the first while the
    service used the last), so neither is used."""
    tenant, _ = acme
    first = {**SERIES_PARAMS, "format": "json"}
    second = {"from": "2026-11-01T00:00:00Z", "to": TO, "interval": "hour"}
    second |= {"timezone": "UTC", "format": "csv"}
    params = [*first.items(), (name, second[name])]
    headers = {"token": tenant.account_token}
    response = await http.get("/metrics/sales/series", params=params, headers=headers)
    assert f"`{name}`" in _envelope(response, 400)
    if name in ("from", "to"):
        response = await http.get("/metrics/sales", params=params, headers=headers)
        assert f"`{name}`" in _envelope(response, 400)


async def test_rest_reads_an_unencoded_plus_in_a_timezone_name(
    http: httpx.AsyncClient, acme: tuple[Tenant, list[dict[str, Any]]]
) -> None:
    """``Etc/GMT+5`` written as is: the query string turns its ``+`` into a space, and no
    IANA name has a space, so it is read back."""
    tenant, _ = acme
    headers = {"token": tenant.account_token}
    query = "from=2026-11-21T00:00:00Z&to=2026-11-24T00:00:00Z&interval=day"
    bare = await http.get(f"/metrics/sales/series?{query}&timezone=Etc/GMT+5", headers=headers)
    assert bare.status_code == 200, bare.text
    encoded = await http.get(f"/metrics/sales/series?{query}&timezone=Etc/GMT%2B5", headers=headers)
    assert bare.json() == encoded.json()
    assert bare.json()["series"]["timezone"] == "Etc/GMT+5"


async def test_a_series_request_works_out_its_local_boundaries_once(
    http: httpx.AsyncClient,
    acme: tuple[Tenant, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The boundaries checked before any database work are the ones the series is read
    with (1,000 points cost ~4 ms on the event loop each time)."""
    calls: list[str] = []
    original = timeranges_module.series_bounds

    def counted(**kwargs: Any) -> Any:
        calls.append(kwargs["timezone"])
        return original(**kwargs)

    monkeypatch.setattr(timeranges_module, "series_bounds", counted)
    monkeypatch.setattr(service_module, "series_bounds", counted, raising=False)
    tenant, _ = acme
    variables = {
        "i": ["sales"],
        "r": {"from": "2026-11-20T18:30:00Z", "to": "2026-11-23T18:30:00Z"},
        "n": "DAY",
        "z": "Asia/Kolkata",
    }
    data = await _data(http, tenant.account_token, SERIES, variables)

    assert len(data["series"]["points"]) == 3
    assert calls == ["Asia/Kolkata"]
