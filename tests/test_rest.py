"""The legacy REST path over HTTP: body, envelope and every status of the contract."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from graph.rest import reshape
from resolvers import Database
from tests.factories import Tenant, make_tenant, message

PREFIXES = ["/metrics", "/api/instance/metrics"]

GRAPHQL = """query ($i: [String!]) { metrics(instances: $i) {
  instance totalMessages messagesReceived messagesSent messagesByType { key count }
  groupMessages individualMessages messagesWithMedia mediaByType { key count }
  messagesByStatus { key count } uniqueChats uniqueGroups uniqueContacts
  messagesLast7Days messagesLast30Days firstMessageAt lastMessageAt } }"""


@pytest.fixture
async def acme(db: Database) -> Tenant:
    tenant = await make_tenant(db, instances={"sales": False, "support": True, "ops": False})
    ids = tenant.instance_ids
    await db.messages.insert_many(
        [
            message(ids["sales"], days_ago=1, fromMe=True, type="image", media={"type": "image"}),
            message(
                ids["sales"], days_ago=12, chatId="g@g.us", isGroup=True, sender="9@s.whatsapp.net"
            ),
            message(ids["support"], days_ago=3, chatId="g@g.us", isGroup=True),
            message(ids["support"], days_ago=45, type="reaction", status="delivered"),
            message(ids["ops"], days_ago=2, type="ptt", status="odd"),
        ]
    )
    return tenant


def _assert_envelope(response: httpx.Response, status: int) -> str:
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"success", "error"} and body["success"] is False
    assert set(body["error"]) == {"message"}
    message_text = body["error"]["message"]
    assert isinstance(message_text, str) and message_text
    return message_text


async def _get(http: httpx.AsyncClient, path: str, token: str | None) -> httpx.Response:
    return await http.get(path, headers={"token": token} if token else {})


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_rest_returns_the_legacy_success_body(
    http: httpx.AsyncClient, acme: Tenant, prefix: str
) -> None:
    response = await _get(http, f"{prefix}/sales", acme.account_token)
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["message"] == "Metrics retrieved successfully"
    metrics = body["metrics"]
    assert metrics["instance"] == "sales"
    assert metrics["totalMessages"] == 2 and metrics["messagesSent"] == 1
    assert metrics["messagesByType"]["image"] == 1 and metrics["messagesByType"]["poll"] == 0
    assert metrics["mediaByType"] == {
        "image": 1,
        "audio": 0,
        "video": 0,
        "document": 0,
        "sticker": 0,
    }
    assert metrics["messagesByStatus"]["read"] == 2
    assert metrics["firstMessageAt"] == "2026-11-13T12:00:00Z"
    assert metrics["lastMessageAt"] == "2026-11-24T12:00:00Z"


async def test_rest_sums_a_list_with_spaces_empty_items_and_a_repeat(
    http: httpx.AsyncClient, acme: Tenant
) -> None:
    response = await _get(http, "/metrics/ sales , ,support,sales,", acme.account_token)
    metrics = response.json()["metrics"]
    assert metrics["instance"] == "sales,support,sales"
    assert metrics["totalMessages"] == 3  # support ignores its group message
    assert metrics["messagesByType"]["reaction"] == 1


async def test_rest_decodes_the_path(http: httpx.AsyncClient, acme: Tenant) -> None:
    response = await _get(http, "/metrics/sales%2C%20ops", acme.account_token)
    metrics = response.json()["metrics"]
    assert metrics["instance"] == "sales,ops"
    assert metrics["messagesByType"]["ptt"] == 1 and metrics["messagesByStatus"]["odd"] == 1


async def test_rest_accepts_a_bearer_token(http: httpx.AsyncClient, acme: Tenant) -> None:
    response = await http.get(
        "/metrics/ops", headers={"Authorization": f"Bearer {acme.instance_tokens['ops']}"}
    )
    assert response.json()["metrics"]["totalMessages"] == 1


@pytest.mark.parametrize("names", [["sales"], ["sales", "support"], ["support", "ops", "sales"]])
async def test_rest_metrics_equal_the_graphql_result_reshaped(
    http: httpx.AsyncClient, acme: Tenant, names: list[str]
) -> None:
    headers = {"token": acme.account_token}
    rest = await http.get(f"/metrics/{','.join(names)}", headers=headers)
    graphql = await http.post(
        "/graphql", json={"query": GRAPHQL, "variables": {"i": names}}, headers=headers
    )
    assert rest.json()["metrics"] == reshape(graphql.json()["data"]["metrics"])


def test_reshape_turns_key_count_lists_into_objects() -> None:
    shaped: dict[str, Any] = reshape({"a": 1, "m": [{"key": "x", "count": 2}], "d": None})
    assert shaped == {"a": 1, "m": {"x": 2}, "d": None}


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("tail", ["", "/", "/,,,", "/ , "])
async def test_rest_rejects_an_empty_list_with_400(
    http: httpx.AsyncClient, acme: Tenant, prefix: str, tail: str
) -> None:
    _assert_envelope(await _get(http, prefix + tail, acme.account_token), 400)


async def test_rest_rejects_a_name_over_128_characters(
    http: httpx.AsyncClient, acme: Tenant
) -> None:
    message_text = _assert_envelope(
        await _get(http, "/metrics/" + "x" * 129, acme.account_token), 400
    )
    assert "128" in message_text


async def test_rest_accepts_a_name_of_exactly_128_characters(
    http: httpx.AsyncClient, acme: Tenant
) -> None:
    _assert_envelope(await _get(http, "/metrics/" + "x" * 128, acme.account_token), 404)


async def test_rest_rejects_more_than_100_names(http: httpx.AsyncClient, acme: Tenant) -> None:
    names = ",".join(f"i{n}" for n in range(101))
    message_text = _assert_envelope(await _get(http, f"/metrics/{names}", acme.account_token), 400)
    assert "100" in message_text


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_rest_without_token_is_401(
    http: httpx.AsyncClient, acme: Tenant, prefix: str
) -> None:
    _assert_envelope(await _get(http, f"{prefix}/sales", None), 401)


async def test_rest_with_unknown_token_is_401(http: httpx.AsyncClient, acme: Tenant) -> None:
    _assert_envelope(await _get(http, "/metrics/sales", "wrong"), 401)


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_rest_instance_token_reading_another_instance_is_403(
    http: httpx.AsyncClient, acme: Tenant, prefix: str
) -> None:
    token = acme.instance_tokens["sales"]
    _assert_envelope(await _get(http, f"{prefix}/sales,support", token), 403)


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_rest_unknown_instance_is_404_and_named(
    http: httpx.AsyncClient, acme: Tenant, prefix: str
) -> None:
    message_text = _assert_envelope(
        await _get(http, f"{prefix}/sales,ghost", acme.account_token), 404
    )
    assert "ghost" in message_text and "sales" not in message_text


async def test_rest_never_reveals_another_accounts_instance(
    http: httpx.AsyncClient, acme: Tenant, db: Database
) -> None:
    await make_tenant(db, name="Rival", instances={"theirs": False})
    theirs = await _get(http, "/metrics/theirs", acme.account_token)
    missing = await _get(http, "/metrics/absent", acme.account_token)
    assert theirs.status_code == missing.status_code == 404
    assert _assert_envelope(theirs, 404).replace("theirs", "?") == _assert_envelope(
        missing, 404
    ).replace("absent", "?")


async def test_other_methods_and_paths_get_the_envelope(http: httpx.AsyncClient) -> None:
    _assert_envelope(await http.post("/metrics/sales"), 405)
    _assert_envelope(await http.get("/nowhere"), 404)


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_a_bug_is_500_without_internal_detail(
    http: httpx.AsyncClient, acme: Tenant, monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    async def broken(**_: Any) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr("graph.query.select_instances", broken)
    message_text = _assert_envelope(await _get(http, f"{prefix}/sales", acme.account_token), 500)
    assert "secret" not in message_text
    graphql = await http.post(
        "/graphql",
        json={"query": "{ metrics { totalMessages } }"},
        headers={"token": acme.account_token},
    )
    error = graphql.json()["errors"][0]
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "secret" not in error["message"]
