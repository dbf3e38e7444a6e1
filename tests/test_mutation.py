"""``updateInstanceSettings`` over HTTP: who may change what, what the next request
counts, and what a mutation costs."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from graph import Settings
from resolvers import Database
from resolvers import metrics as metrics_module
from tests.factories import Tenant, app_client, make_tenant, message

MUTATION = """mutation ($i: String!, $v: Boolean!) {
  updateInstanceSettings(instance: $i, ignoreGroupMessages: $v) {
    name ignoreGroupMessages totalMessages
  }
}"""

METRICS = "query ($i: [String!]) { metrics(instances: $i) { totalMessages groupMessages } }"


@pytest.fixture
async def acme(db: Database) -> Tenant:
    """sales: two group messages and one direct; support ignores its group message."""
    tenant = await make_tenant(db, instances={"sales": False, "support": True})
    sales, support = tenant.instance_ids["sales"], tenant.instance_ids["support"]
    await db.messages.insert_many(
        [
            message(sales, days_ago=1),
            message(sales, days_ago=2, isGroup=True, chatId="g@g.us", sender="9@s.whatsapp.net"),
            message(sales, days_ago=3, isGroup=True, chatId="g@g.us", fromMe=True),
            message(support, days_ago=1, isGroup=True, chatId="h@g.us"),
            message(support, days_ago=4),
        ]
    )
    return tenant


async def _post(
    http: httpx.AsyncClient, token: str | None, query: str, variables: dict[str, Any]
) -> httpx.Response:
    headers = {"token": token} if token else {}
    return await http.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )


async def _update(
    http: httpx.AsyncClient, token: str | None, instance: str, value: bool
) -> dict[str, Any]:
    response = await _post(http, token, MUTATION, {"i": instance, "v": value})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _total(http: httpx.AsyncClient, token: str, instance: str) -> int:
    response = await _post(http, token, METRICS, {"i": [instance]})
    total: int = response.json()["data"]["metrics"]["totalMessages"]
    return total


def _code(body: dict[str, Any]) -> str:
    assert body["data"] is None, body
    code: str = body["errors"][0]["extensions"]["code"]
    return code


async def _stored(db: Database, instance: Any) -> Any:
    doc = await db.instances.find_one({"_id": instance})
    assert doc is not None
    return doc["settings"]["ignoreGroupMessages"]


async def test_an_account_token_changes_an_instance_and_the_next_metrics_count_with_it(
    http: httpx.AsyncClient, acme: Tenant
) -> None:
    token = acme.account_token
    assert await _total(http, token, "sales") == 3
    body = await _update(http, token, "sales", True)
    assert body["data"]["updateInstanceSettings"] == {
        "name": "sales",
        "ignoreGroupMessages": True,
        "totalMessages": 1,  # its two group messages are left out
    }
    assert await _total(http, token, "sales") == 1
    await _update(http, token, "sales", False)
    assert await _total(http, token, "sales") == 3


async def test_an_account_token_can_stop_an_instance_ignoring_groups(
    http: httpx.AsyncClient, acme: Tenant
) -> None:
    assert await _total(http, acme.account_token, "support") == 1
    body = await _update(http, acme.account_token, "support", False)
    assert body["data"]["updateInstanceSettings"]["totalMessages"] == 2
    assert await _total(http, acme.instance_tokens["support"], "support") == 2


async def test_an_instance_token_changes_its_own_instance(
    http: httpx.AsyncClient, acme: Tenant, db: Database
) -> None:
    token = acme.instance_tokens["sales"]
    body = await _update(http, token, " sales ", True)  # names are trimmed, as for metrics
    assert body["data"]["updateInstanceSettings"]["ignoreGroupMessages"] is True
    assert await _stored(db, acme.instance_ids["sales"]) is True
    assert await _total(http, token, "sales") == 1


async def test_an_instance_token_may_not_change_another_instance(
    http: httpx.AsyncClient, acme: Tenant, db: Database
) -> None:
    body = await _update(http, acme.instance_tokens["sales"], "support", False)
    assert _code(body) == "FORBIDDEN"
    assert await _stored(db, acme.instance_ids["support"]) is True
    # a name that exists nowhere is the same refusal: an instance token learns nothing
    assert _code(await _update(http, acme.instance_tokens["sales"], "ghost", True)) == "FORBIDDEN"


async def test_another_accounts_instance_looks_exactly_like_a_missing_one(
    http: httpx.AsyncClient, acme: Tenant, db: Database
) -> None:
    rival = await make_tenant(db, name="Rival", instances={"theirs": False})
    theirs = await _update(http, acme.account_token, "theirs", True)
    missing = await _update(http, acme.account_token, "absent", True)
    assert _code(theirs) == _code(missing) == "NOT_FOUND"
    assert theirs["errors"][0]["message"].replace("theirs", "?") == missing["errors"][0][
        "message"
    ].replace("absent", "?")
    assert await _stored(db, rival.instance_ids["theirs"]) is False
    # and exactly as metrics words it
    metrics = await _post(http, acme.account_token, METRICS, {"i": ["absent"]})
    assert metrics.json()["errors"][0]["message"] == missing["errors"][0]["message"]


async def test_a_mutation_needs_a_valid_token(http: httpx.AsyncClient, acme: Tenant) -> None:
    assert _code(await _update(http, None, "sales", True)) == "UNAUTHENTICATED"
    assert _code(await _update(http, "not-a-token", "sales", True)) == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    ("name", "why"), [("", "at least one"), ("   ", "at least one"), ("x" * 129, "128")]
)
async def test_an_empty_or_too_long_name_is_bad_user_input(
    http: httpx.AsyncClient, acme: Tenant, name: str, why: str
) -> None:
    body = await _update(http, acme.account_token, name, True)
    assert _code(body) == "BAD_USER_INPUT"
    assert why in body["errors"][0]["message"]


async def test_a_mutation_costs_the_mutation_cost(http: httpx.AsyncClient, acme: Tenant) -> None:
    response = await _post(http, acme.account_token, MUTATION, {"i": "sales", "v": True})
    assert response.json()["extensions"]["cost"] == {
        "requested": 5,
        "remaining": 95,
        "limit": 100,
    }
    assert response.headers["X-RateLimit-Remaining"] == "95"


async def test_each_aliased_update_is_a_computation_past_the_mutation_cost(
    http: httpx.AsyncClient, acme: Tenant
) -> None:
    updates = " ".join(
        f'u{n}: updateInstanceSettings(instance: "sales", ignoreGroupMessages: true) {{ name }}'
        for n in range(7)
    )
    response = await _post(http, acme.account_token, f"mutation {{ {updates} }}", {})
    assert response.json()["extensions"]["cost"]["requested"] == 7


async def test_a_mutation_by_get_is_405_with_a_graphql_error(
    http: httpx.AsyncClient, acme: Tenant, db: Database
) -> None:
    query = (
        'mutation { updateInstanceSettings(instance: "sales", ignoreGroupMessages: true) { name } }'
    )
    response = await http.get(
        "/graphql", params={"query": query}, headers={"token": acme.account_token}
    )
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "METHOD_NOT_ALLOWED"
    assert await _stored(db, acme.instance_ids["sales"]) is False


async def _wait_ready(client: httpx.AsyncClient) -> str:
    state = ""
    for _ in range(300):
        state = (await client.get("/health")).json()["checks"]["rollups"]["state"]
        if state == "ready":
            break
        await asyncio.sleep(0.1)
    return state


async def test_the_rollups_count_with_the_new_setting_on_the_next_request(
    settings: Settings, acme: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_scan(**_: Any) -> Any:
        raise AssertionError("metrics scanned the messages instead of reading the rollups")

    patient = settings.model_copy(update={"rollups_wait_ms": 10_000})  # a loaded machine
    async with app_client(patient) as client:
        assert await _wait_ready(client) == "ready"
        monkeypatch.setattr(metrics_module, "build_metrics_pipeline", no_scan)
        token = acme.account_token
        assert await _total(client, token, "sales") == 3
        await _update(client, token, "sales", True)
        assert await _total(client, token, "sales") == 1
        await _update(client, token, "sales", False)
        assert await _total(client, token, "sales") == 3
