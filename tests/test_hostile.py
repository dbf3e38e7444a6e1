"""A hostile corpus over real HTTP: malformed bodies, bad variables, fragment bombs,
oversized bodies, odd methods, content types, paths and headers. Whatever comes in, no
answer is a 5xx, the log holds no traceback, and every body has the documented shape:
a GraphQL error with ``extensions.code`` on ``/graphql``, the envelope everywhere else."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from graph import Settings
from resolvers import Database
from tests.factories import make_tenant
from tests.live import Live, live_server, raw_connection, read_response, request_head

JSON = {"content-type": "application/json"}
GRAPHQL_RESPONSE = "application/graphql-response+json"
METRICS = "{ metrics { instance totalMessages } }"
LIMIT = Settings().max_body_bytes
VARIABLES = "query($i: [String!]) { metrics(instances: $i) { instance } }"


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    token: bool = True


def _post(name: str, body: bytes | object, **headers: str) -> Case:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Case(name, "POST", "/graphql", raw, {**JSON, **headers})


def _fragment_chain(depth: int) -> str:
    spreads = " ".join(
        f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(depth)
    )
    return f"{{ ...F0 }} {spreads} fragment F{depth} on Query {{ __typename }}"


def _malformed_bodies() -> Iterator[Case]:
    for name, body in {
        "string": b'"{ __typename }"',
        "number": b"5",
        "null": b"null",
        "true": b"true",
        "empty": b"",
        "whitespace": b" \r\n\t ",
        "truncated": b'{"query": "{ metrics',
        "invalid UTF-8": b'{"query": "\xff\xfe"}',
        "UTF-8 encoded surrogate": b'{"query": "\xed\xa0\x80"}',
        "UTF-16": '{"query": "{ __typename }"}'.encode("utf-16"),
        "BOM": b'\xef\xbb\xbf{"query": "{ __typename }"}',
        "list nested 1,000 deep": b"[" * 1000 + b"]" * 1000,
        "object nested 1,000 deep": b'{"a":' * 1000 + b"1" + b"}" * 1000,
        "list nested 30,000 deep": b"[" * 30_000 + b"]" * 30_000,
        "NaN and Infinity": b'{"query": "{ __typename }", "variables": {"x": NaN, "y": -Infinity}}',
        "empty batch": b"[]",
        "batch": b'[{"query": "{ __typename }"}, {"query": "{ __typename }"}]',
        "batch of junk": b"[1, null, true]",
        "null query": b'{"query": null}',
        "no query": b'{"variables": {}}',
        "numeric query": b'{"query": 5}',
        "object query": b'{"query": {"a": 1}}',
        "string variables": b'{"query": "{ __typename }", "variables": "x"}',
        "list extensions": b'{"query": "{ __typename }", "extensions": [1]}',
        "object operationName": b'{"query": "{ __typename }", "operationName": {}}',
        "unknown operationName": b'{"query": "{ __typename }", "operationName": "Nope"}',
        "two operations, no name": b'{"query": "query A { __typename } query B { __typename }"}',
        "syntax error": b'{"query": "{"}',
        "unknown field": b'{"query": "{ noSuchField }"}',
        "lone surrogate in the query": b'{"query": "{ __typename } # \\udfff"}',
        "NUL in the query": b'{"query": "{ __typename \\u0000 }"}',
        "huge number": b'{"query": "{ __typename }", "variables": {"x": 1' + b"0" * 5000 + b"}}",
    }.items():
        yield _post(f"malformed body: {name}", body)


def _bad_variables() -> Iterator[Case]:
    values: list[Any] = [{"i": 5}, [1], [None], ["sales", None], {}, True, [["sales"]], 5]
    values += [[[[[[[[[["x"]]]]]]]]], ["x" * 100_00], ["sales"] * 101, [""], ["a" * 129]]
    for value in values:
        yield _post(
            f"bad variables: {str(value)[:40]}", {"query": VARIABLES, "variables": {"i": value}}
        )
    yield _post(
        "bad variables: missing required",
        {"query": "query($i: [String!]!) { metrics(instances: $i) { instance } }", "variables": {}},
    )
    for name, raw in [("lone surrogate", '["\\ud800"]'), ("500 deep", "[" * 500 + "]" * 500)]:
        body = f'{{"query": {json.dumps(VARIABLES)}, "variables": {{"i": {raw}}}}}'
        yield _post(f"bad variables: {name}", body.encode())
    yield _post("bad variables: undeclared", {"query": METRICS, "variables": {"zzz": [1]}})
    broken = urlencode({"query": VARIABLES, "variables": "{"})
    yield Case("bad variables: GET with broken JSON", "GET", f"/graphql?{broken}")


def _expensive_documents() -> Iterator[Case]:
    yield _post("fragment bomb: chain of 40", {"query": _fragment_chain(40)})
    yield _post("fragment bomb: chain of 40, no token", {"query": _fragment_chain(40)})
    yield _post(
        "fragment bomb: a cycle",
        {"query": "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }"},
    )
    aliases = " ".join(f"m{i}: metrics {{ instance }}" for i in range(50))
    yield _post("alias bomb: 50 metrics", {"query": f"{{ {aliases} }}"})
    yield _post("token bomb: 20,000 tokens", {"query": "{ " + "__typename " * 20_000 + "}"})
    deep = "{ __schema { types { " + "fields { type { " * 12 + "name" + " } }" * 12 + " } } }"
    yield _post("depth bomb: introspection 26 deep", {"query": deep})
    nested = "{ metrics " + "{ instance " * 2000 + "}" * 2001
    yield _post("depth bomb: 2,000 nested selections", {"query": nested})
    yield _post("directive bomb", {"query": "{ __typename " + "@skip(if: false) " * 1000 + "}"})


def _oversized_bodies() -> Iterator[Case]:
    """Just over the limit: the server closes the connection after its 413 without reading
    the rest, so a client still sending a larger body may see a reset before the answer
    (the raw cases below declare large lengths and send nothing)."""
    yield _post("oversized: query over 64 KiB", {"query": METRICS + " " * LIMIT})
    yield _post("oversized: junk over 64 KiB", b"x" * (LIMIT + 1))
    yield Case("oversized: REST GET with a body", "GET", "/metrics/sales", b"x" * (LIMIT + 1))


def _odd_methods_paths_and_types() -> Iterator[Case]:
    for method in ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PURGE"]:
        for path in ["/graphql", "/metrics/sales", "/api/instance/metrics/sales", "/health", "/x"]:
            yield Case(f"odd method: {method} {path}", method, path, b"{}", JSON)
    yield Case("odd method: HEAD /graphql", "HEAD", "/graphql")
    query = json.dumps({"query": METRICS}).encode()
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/graphql",
        "application/json; charset=utf-16",
        "application/json; charset=latin-1",
        "application/xml",
        ";;;",
        "",
    ]:
        yield Case(
            f"content type: {content_type!r}",
            "POST",
            "/graphql",
            query,
            {"content-type": content_type},
        )
    yield Case("content type: none", "POST", "/graphql", query)
    for accept in [GRAPHQL_RESPONSE, f"{GRAPHQL_RESPONSE};q=abc", "text/html", "image/png", ",,,"]:
        yield _post(f"accept: {accept} on a syntax error", {"query": "{"}, accept=accept)
        yield _post(f"accept: {accept} on a success", {"query": METRICS}, accept=accept)
    yield Case(
        "GET /graphql without a query", "GET", "/graphql", headers={"accept": "application/json"}
    )
    yield Case("GET mutation", "GET", "/graphql?query=mutation%20%7B%20x%20%7D")
    for path in [
        "/metrics/%ff%fe",
        "/metrics/%ed%a0%80",
        "/metrics/%00",
        "/metrics/" + "a" * 129,
        "/metrics/" + ",".join(f"n{i}" for i in range(101)),
        "/metrics/,,,",
        "/metrics/",
        "/metrics/../graphql",
        "/api/instance/metrics/",
        "/graphql/extra",
        "/GRAPHQL",
        "/nope",
        "/" + "x" * 5000,
    ]:
        yield Case(f"path: {path[:40]}", "GET", path)
    yield Case("token: junk", "GET", "/metrics/sales", headers={"token": "x" * 4000}, token=False)
    yield _post("token: unknown on graphql", {"query": METRICS}, token="not-a-token")


SERIES = """query($r: TimeRange!, $n: Interval!, $z: String!) {
  series(range: $r, interval: $n, timezone: $z) { points { start totalMessages } } }"""
RANGED = "query($r: TimeRange) { metrics(range: $r) { totalMessages uniqueContacts } }"
UPDATE = """mutation($n: String!, $g: Boolean!) {
  updateInstanceSettings(instance: $n, ignoreGroupMessages: $g) { name } }"""
DAY = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"}
EDGES = [
    ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"),
    ("9999-12-01T00:00:00Z", "9999-12-31T23:59:59.999Z"),
    ("0001-01-01T00:00:00Z", "0001-03-01T00:00:00Z"),
    ("0001-01-01T00:00:00+05:00", "0001-03-01T00:00:00Z"),
    ("0000-01-01T00:00:00Z", "0001-03-01T00:00:00Z"),
    ("9999-12-31T23:59:59.9999999Z", "9999-12-31T23:59:59.9999999Z"),
    ("10000-01-01T00:00:00Z", "10000-01-02T00:00:00Z"),
    ("", ""),
]


def _rest_ranges_and_series() -> Iterator[Case]:
    series = "/metrics/sales/series?"
    for low, high in EDGES:
        for interval in ("hour", "day", "week", "month"):
            for zone in ("UTC", "Pacific/Kiritimati", "America/New_York"):
                query = urlencode({"from": low, "to": high, "interval": interval, "timezone": zone})
                yield Case(f"REST series {low}..{high} {interval} {zone}", "GET", series + query)
        yield Case(
            f"REST range {low}..{high}",
            "GET",
            "/metrics/sales?" + urlencode({"from": low, "to": high}),
        )
    for zone in [
        "../../etc/passwd",
        "/etc/localtime",
        "\x00",
        "\u65e5\u672c",
        "Asia",
        "zone.tab",
        "__init__.py",
        "x" * 5000,
        "UTC\x00",
        "",
    ]:
        yield Case(
            f"REST timezone {zone[:30]!r}",
            "GET",
            series + urlencode({**DAY, "interval": "day", "timezone": zone}),
        )
    for extra in [
        "interval=%00",
        "interval=day&interval=hour",
        "interval=day&format=x",
        "interval=day&format=csv&format=json",
        "interval=" + "d" * 5000,
        "interval=day&from=" + "2" * 5000,
        "interval=day&timezone=%ff%fe",
    ]:
        yield Case(f"REST series params {extra[:40]}", "GET", series + urlencode(DAY) + "&" + extra)
    for accept in [
        "text/csv;q=nan",
        "text/csv;q=1e999, application/json;q=inf",
        "text/csv;q=-1",
        "text/csv;;;q",
        "a/b;q=1," * 2000 + "text/csv",
    ]:
        yield Case(
            f"REST series accept {accept[:30]}",
            "GET",
            series + urlencode({**DAY, "interval": "day"}),
            headers={"accept": accept},
        )


def _graphql_ranges_series_and_mutation() -> Iterator[Case]:
    day = {"r": DAY, "n": "DAY", "z": "UTC"}
    for name, variables in {
        "null range": {**day, "r": None},
        "range of numbers": {**day, "r": {"from": 5, "to": [1]}},
        "range with an extra field": {**day, "r": {**DAY, "x": 1}},
        "lower-case interval": {**day, "n": "day"},
        "interval object": {**day, "n": {"a": 1}},
        "timezone with NUL": {**day, "z": "UTC\x00"},
        "timezone null": {**day, "z": None},
        "timezone 5000 long": {**day, "z": "A" * 5000},
        "timezone path": {**day, "z": "../../../../etc/passwd"},
        "a thousand and one hours": {
            **day,
            "n": "HOUR",
            "r": {**DAY, "to": "2026-12-13T00:00:00Z"},
        },
        **{
            f"edge {low}..{high} {n}": {"r": {"from": low, "to": high}, "n": n, "z": zone}
            for low, high in EDGES
            for n in ("HOUR", "MONTH")
            for zone in ("UTC", "Etc/GMT-14")
        },
    }.items():
        yield _post(f"GraphQL series: {name}", {"query": SERIES, "variables": variables})
    for low, high in EDGES:
        yield _post(
            f"GraphQL metrics range {low}..{high}",
            {"query": RANGED, "variables": {"r": {"from": low, "to": high}}},
        )
    for name, value in {
        "empty": "",
        "spaces": "   ",
        "129 long": "a" * 129,
        "NUL": "a\x00b",
        "operator object": {"$ne": None},
        "list": ["sales"],
        "number": 5,
        "elsewhere": "nope",
        "HTML": "<img src=x onerror=alert(1)>",
    }.items():
        yield _post(
            f"GraphQL mutation name: {name}",
            {"query": UPDATE, "variables": {"n": value, "g": True}},
        )
    yield _post(
        "GraphQL mutation: string boolean",
        {"query": UPDATE, "variables": {"n": "sales", "g": "yes"}},
    )


def corpus() -> list[Case]:
    return [
        *_malformed_bodies(),
        *_bad_variables(),
        *_expensive_documents(),
        *_oversized_bodies(),
        *_odd_methods_paths_and_types(),
        *_rest_ranges_and_series(),
        *_graphql_ranges_series_and_mutation(),
    ]


def _shape_problems(case: Case, response: httpx.Response) -> list[str]:
    """What is wrong with one answer, if anything."""
    problems = []
    if response.status_code >= 500:
        problems.append(f"status {response.status_code}")
    if not response.headers.get("x-request-id"):
        problems.append("no X-Request-ID")
    content_type = response.headers.get("content-type", "")
    if case.method == "HEAD" or content_type.startswith(("text/html", "text/csv")):
        return problems
    try:
        body = response.json()
    except ValueError:
        return [*problems, f"not JSON: {response.text[:80]!r}"]
    if case.path.split("?")[0] == "/graphql":
        problems += _graphql_problems(body, response.status_code)
    elif response.status_code >= 400:
        problems += _envelope_problems(body)
    return problems


def _graphql_problems(body: Any, status: int) -> list[str]:
    if not isinstance(body, dict) or not ("data" in body or "errors" in body):
        return [f"not a GraphQL response: {body!r:.80}"]
    errors = body.get("errors")
    if status != 200 and not errors:
        return [f"status {status} without errors"]
    for error in errors or []:
        code = (error.get("extensions") or {}).get("code")
        if not isinstance(error.get("message"), str) or not isinstance(code, str):
            return [f"an error without message or code: {error!r:.80}"]
    return []


def _envelope_problems(body: Any) -> list[str]:
    ok = (
        isinstance(body, dict)
        and body.get("success") is False
        and isinstance((body.get("error") or {}).get("message"), str)
    )
    return [] if ok else [f"not the envelope: {body!r:.80}"]


async def _send(client: httpx.AsyncClient, case: Case, token: str) -> httpx.Response:
    headers = dict(case.headers)
    if case.token and "token" not in headers:
        headers["token"] = token
    request = client.build_request(case.method, case.path, content=case.body, headers=headers)
    if "content-type" not in case.headers:
        request.headers.pop("content-type", None)
    return await client.send(request)


@pytest.fixture
def hostile_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"rate_limit_per_minute": 100_000})


async def test_the_hostile_corpus_gets_no_5xx_no_traceback_and_documented_shapes(
    hostile_settings: Settings, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = await make_tenant(db)
    problems: list[str] = []
    async with (
        live_server(hostile_settings) as live,
        httpx.AsyncClient(base_url=live.url, timeout=20) as client,
    ):
        for case in corpus():
            try:
                response = await _send(client, case, tenant.account_token)
            except httpx.HTTPError as error:
                problems.append(f"{case.name}: {type(error).__name__} {error}")
                continue
            problems += [f"{case.name}: {problem}" for problem in _shape_problems(case, response)]
        problems += await _raw_cases(live)
    assert problems == []
    logged = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert logged == [], [r.getMessage() for r in logged]


async def _raw_cases(live: Live) -> list[str]:
    """Bytes no HTTP client library would send."""
    problems = []
    chunked = request_head("POST", "/graphql", {**JSON, "Transfer-Encoding": "chunked"})
    over = b"8000\r\n" + b"x" * 0x8000 + b"\r\n"  # twice: 64 KiB, then 1 KiB more
    over += over + b"400\r\n" + b"x" * 0x400 + b"\r\n"
    declared = {**JSON, "Content-Length": str(400 << 20), "Expect": "100-continue"}
    latin1_token = request_head("GET", "/metrics/sales", {"token": "\xe9\xff"})
    for name, data, expected in [
        ("chunked body over the limit", chunked + over, 413),
        ("400 MB declared", request_head("POST", "/graphql", declared), 413),
        ("400 MB declared on REST", request_head("GET", "/metrics/sales", declared), 413),
        ("non-ASCII token bytes", latin1_token, 401),
        ("empty bearer", request_head("GET", "/metrics/sales", {"Authorization": "Bearer "}), 401),
    ]:
        try:
            async with raw_connection(live) as (reader, writer):
                writer.write(data)
                await writer.drain()
                response = await read_response(reader, timeout=5)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError) as error:
            problems.append(f"raw {name}: {type(error).__name__}")
            continue
        if response.status != expected or "x-request-id" not in response.headers:
            problems.append(f"raw {name}: {response.status} {response.body[:80]!r}")
    return problems
