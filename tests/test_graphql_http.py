"""GraphQL over HTTP: GraphiQL, token headers and the full app."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from graph import Settings
from graph.responses import dumps, negotiate
from resolvers import Database
from tests.factories import app_client, make_tenant, message
from tests.live import live_server, raw_connection, read_response, request_head

QUERY = "{ metrics { instance totalMessages messagesByType { key count } firstMessageAt } }"


@pytest.mark.parametrize(
    "value",
    [
        {"data": {"k": [1, "é", None, True, -(2**31)]}, "errors": []},
        {"message": "a lone surrogate \ud800 quoted"},  # orjson refuses: the fallback
        {"n": 2**70},  # past orjson's 64 bits: the fallback
    ],
)
def test_response_bodies_are_the_json_of_their_value(value: object) -> None:
    assert json.loads(dumps(value)) == value


async def test_browser_get_serves_graphiql(http: httpx.AsyncClient) -> None:
    response = await http.get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()


async def test_token_header_answers_the_readme_query(http: httpx.AsyncClient, db: Database) -> None:
    tenant = await make_tenant(db)
    await db.messages.insert_one(message(tenant.instance_ids["sales"], type="image"))
    response = await http.post(
        "/graphql", json={"query": QUERY}, headers={"token": tenant.account_token}
    )
    assert response.status_code == 200
    metrics = response.json()["data"]["metrics"]
    assert metrics["instance"] == "sales" and metrics["totalMessages"] == 1
    assert {"key": "image", "count": 1} in metrics["messagesByType"]


async def test_bearer_token_works_too(http: httpx.AsyncClient, db: Database) -> None:
    tenant = await make_tenant(db)
    response = await http.post(
        "/graphql",
        json={"query": QUERY},
        headers={"Authorization": f"Bearer {tenant.instance_tokens['sales']}"},
    )
    assert response.json()["data"]["metrics"]["instance"] == "sales"


async def test_query_by_get_is_accepted(http: httpx.AsyncClient, db: Database) -> None:
    tenant = await make_tenant(db)
    response = await http.get(
        "/graphql", params={"query": QUERY}, headers={"token": tenant.account_token}
    )
    assert response.json()["data"]["metrics"]["totalMessages"] == 0


async def test_missing_token_is_reported_with_its_code(http: httpx.AsyncClient) -> None:
    response = await http.post("/graphql", json={"query": QUERY})
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"


async def test_mutations_are_not_part_of_the_api(http: httpx.AsyncClient) -> None:
    response = await http.post("/graphql", json={"query": "mutation { x }"})
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


# Bad input is the caller's: BAD_USER_INPUT, never a 500 or a traceback ------------------

VARIABLE_QUERY = "query($i: [String!]) { metrics(instances: $i) { instance } }"


def _assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    logged = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert logged == [], [r.getMessage() for r in logged]


def _graphql_error(response: httpx.Response, *, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["errors"][0]["extensions"]["code"] == code, body
    return str(body["errors"][0]["message"])


@pytest.mark.parametrize(
    "value", [{"i": 5}, [1], [None], ["sales", None], {}, True, [["sales"]]], ids=repr
)
async def test_wrong_typed_variables_are_bad_user_input(
    http: httpx.AsyncClient, db: Database, caplog: pytest.LogCaptureFixture, value: object
) -> None:
    tenant = await make_tenant(db)
    response = await http.post(
        "/graphql",
        json={"query": VARIABLE_QUERY, "variables": {"i": value}},
        headers={"token": tenant.account_token},
    )
    assert "$i" in _graphql_error(response, status=200, code="BAD_USER_INPUT")
    assert response.json()["data"] is None
    _assert_no_traceback(caplog)


async def test_a_missing_required_variable_is_bad_user_input(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    query = "query($i: [String!]!) { metrics(instances: $i) { instance } }"
    response = await http.post("/graphql", json={"query": query, "variables": {}})
    assert "$i" in _graphql_error(response, status=200, code="BAD_USER_INPUT")
    _assert_no_traceback(caplog)


@pytest.mark.parametrize("where", ["POST body", "GET variables"])
async def test_a_lone_surrogate_is_bad_user_input(
    http: httpx.AsyncClient, db: Database, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    tenant = await make_tenant(db)
    variables = '{"i": ["sales", "\\ud800"]}'  # JSON's escape: valid JSON, not Unicode text
    headers = {"token": tenant.account_token, "content-type": "application/json"}
    if where == "POST body":
        body = f'{{"query": {json.dumps(VARIABLE_QUERY)}, "variables": {variables}}}'
        response = await http.post("/graphql", content=body, headers=headers)
    else:
        params = {"query": VARIABLE_QUERY, "variables": variables}
        response = await http.get("/graphql", params=params, headers=headers)
    assert "surrogate" in _graphql_error(response, status=400, code="BAD_USER_INPUT")
    _assert_no_traceback(caplog)


MALFORMED_BODIES = {
    "a string": b'"{ metrics { instance } }"',
    "a number": b"5",
    "null": b"null",
    "true": b"true",
    "empty": b"",
    "unparsable": b'{"query": ',
    "invalid UTF-8": b'{"query": "{ metrics { instance } }\xff"}',
    "a list nested 1,000 deep": b"[" * 1000 + b"]" * 1000,
    "an object nested 1,000 deep": b'{"a":' * 1000 + b"1" + b"}" * 1000,
}


@pytest.mark.parametrize("body", MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
async def test_a_malformed_body_is_400_with_a_graphql_error(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    response = await http.post(
        "/graphql", content=body, headers={"content-type": "application/json"}
    )
    _graphql_error(response, status=400, code="BAD_USER_INPUT")
    assert response.json()["data"] is None
    assert response.headers["content-type"] == "application/json"
    _assert_no_traceback(caplog)


# Strawberry's own refusals, in the GraphQL shape ---------------------------------------


async def test_a_batch_is_refused_with_a_graphql_error(http: httpx.AsyncClient) -> None:
    response = await http.post("/graphql", json=[{"query": QUERY}, {"query": QUERY}])
    assert "atch" in _graphql_error(response, status=400, code="BAD_USER_INPUT")


async def test_a_mutation_by_get_is_refused_with_a_graphql_error(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/graphql", params={"query": "mutation { x }"})
    assert "GET" in _graphql_error(response, status=405, code="METHOD_NOT_ALLOWED")


async def test_an_unsupported_content_type_is_refused_with_a_graphql_error(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post(
        "/graphql", content=json.dumps({"query": QUERY}), headers={"content-type": "text/plain"}
    )
    assert "content type" in _graphql_error(response, status=400, code="BAD_USER_INPUT")


async def test_a_missing_query_is_refused_with_a_graphql_error(http: httpx.AsyncClient) -> None:
    response = await http.post("/graphql", json={"variables": {}})
    assert "query" in _graphql_error(response, status=400, code="BAD_USER_INPUT")


async def test_a_query_that_is_not_a_string_is_refused_with_a_graphql_error(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post("/graphql", json={"query": ["{ metrics { instance } }"]})
    assert "query" in _graphql_error(response, status=400, code="BAD_USER_INPUT")


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_other_methods_get_405_with_a_graphql_error(
    http: httpx.AsyncClient, method: str
) -> None:
    response = await http.request(method, "/graphql", json={"query": QUERY})
    _graphql_error(response, status=405, code="METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == "GET, POST"


async def test_a_bug_on_graphql_is_a_masked_500_graphql_error_with_a_request_id(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr("graph.view.build_context", broken)
    response = await http.post("/graphql", json={"query": QUERY})
    message = _graphql_error(response, status=500, code="INTERNAL_SERVER_ERROR")
    assert "secret" not in response.text and message == "Internal server error."
    assert response.json()["data"] is None
    assert response.headers["x-request-id"]


# GraphQL over HTTP: application/graphql-response+json ----------------------------------

GRAPHQL_RESPONSE = "application/graphql-response+json"


async def _ask(
    http: httpx.AsyncClient, body: object, *, accept: str, token: str | None = None
) -> httpx.Response:
    headers = {"accept": accept, **({"token": token} if token else {})}
    return await http.post("/graphql", json=body, headers=headers)


REQUEST_ERRORS = {
    "parse": {"query": "{"},
    "validation": {"query": "{ noSuchField }"},
    "variable coercion": {"query": VARIABLE_QUERY, "variables": {"i": 5}},
}


@pytest.mark.parametrize("body", REQUEST_ERRORS.values(), ids=REQUEST_ERRORS.keys())
async def test_request_errors_are_400_without_data_for_graphql_response_json(
    http: httpx.AsyncClient, body: object
) -> None:
    response = await _ask(http, body, accept=GRAPHQL_RESPONSE)
    _graphql_error(response, status=400, code="BAD_USER_INPUT")
    assert "data" not in response.json()
    assert response.headers["content-type"] == GRAPHQL_RESPONSE


async def test_request_errors_stay_200_with_null_data_for_application_json(
    http: httpx.AsyncClient,
) -> None:
    for body in REQUEST_ERRORS.values():
        response = await _ask(http, body, accept="application/json")
        _graphql_error(response, status=200, code="BAD_USER_INPUT")
        assert response.json()["data"] is None
        assert response.headers["content-type"] == "application/json"


async def test_graphql_response_json_answers_in_kind(http: httpx.AsyncClient, db: Database) -> None:
    tenant = await make_tenant(db)
    response = await _ask(
        http, {"query": QUERY}, accept=GRAPHQL_RESPONSE, token=tenant.account_token
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == GRAPHQL_RESPONSE
    assert response.json()["data"]["metrics"]["instance"] == "sales"


async def test_an_error_during_execution_stays_200_with_data(http: httpx.AsyncClient) -> None:
    response = await _ask(http, {"query": QUERY}, accept=GRAPHQL_RESPONSE)  # no token
    _graphql_error(response, status=200, code="UNAUTHENTICATED")
    assert response.json()["data"] is None  # present: execution ran, `metrics` is non-null
    assert response.headers["content-type"] == GRAPHQL_RESPONSE


async def test_a_refusal_takes_the_accepted_media_type(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/graphql",
        content=b"5",
        headers={"content-type": "application/json", "accept": GRAPHQL_RESPONSE},
    )
    _graphql_error(response, status=400, code="BAD_USER_INPUT")
    assert response.headers["content-type"] == GRAPHQL_RESPONSE
    assert "data" not in response.json()


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        ("", "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        ("text/html", "application/json"),
        (GRAPHQL_RESPONSE, GRAPHQL_RESPONSE),
        (f"{GRAPHQL_RESPONSE}, application/json;q=0.9", GRAPHQL_RESPONSE),
        (f"application/json, {GRAPHQL_RESPONSE}", GRAPHQL_RESPONSE),
        (f"application/json, {GRAPHQL_RESPONSE};q=0.5", "application/json"),
        (f"{GRAPHQL_RESPONSE};q=0", "application/json"),
    ],
)
def test_negotiate_picks_the_media_type(accept: str, media_type: str) -> None:
    assert negotiate(accept) == media_type


# Over real HTTP: an error answer keeps the connection ----------------------------------


async def test_a_malformed_body_and_a_bug_keep_the_connection_alive(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await make_tenant(db)
    good = json.dumps({"query": QUERY}).encode()
    head = {"Content-Type": "application/json", "token": tenant.account_token}

    def post(body: bytes) -> bytes:
        return request_head("POST", "/graphql", {**head, "Content-Length": str(len(body))}) + body

    async with live_server(settings) as live, raw_connection(live) as (reader, writer):
        for body, status in [(b"5", 400), (b'"x"', 400), (b"\xff", 400), (good, 200)]:
            writer.write(post(body))
            response = await read_response(reader)
            assert response.status == status, response.body
            assert "errors" in response.json() or response.json()["data"]["metrics"]
        monkeypatch.setattr("graph.view.build_context", _raise)
        writer.write(post(good))
        assert (await read_response(reader)).status == 500
        monkeypatch.undo()
        writer.write(post(good))
        assert (await read_response(reader)).status == 200


def _raise(*_: object, **__: object) -> None:
    raise RuntimeError("a bug")


async def test_a_refusal_during_the_operation_sets_the_http_status(
    settings: Settings, db: Database
) -> None:
    """The context gets Strawberry's sub-response: an operation costing more than the
    bucket holds is refused with 429 over HTTP, not 200."""
    tenant = await make_tenant(db)
    aliases = " ".join(f"m{i}: metrics {{ instance }}" for i in range(4))
    small = settings.model_copy(update={"rate_limit_per_minute": 3})
    async with app_client(small) as client:
        response = await client.post(
            "/graphql", json={"query": f"{{ {aliases} }}"}, headers={"token": tenant.account_token}
        )
    _graphql_error(response, status=429, code="RATE_LIMITED")
    assert response.headers["retry-after"]
