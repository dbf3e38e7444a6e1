"""The ``instances`` query over HTTP: what each token sees, and each instance's numbers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from resolvers import Database
from tests.factories import NOW, Tenant, make_tenant, message
from tests.reference import reference_metrics

QUERY = "{ instances { name ignoreGroupMessages createdAt totalMessages lastMessageAt } }"


@pytest.fixture
async def acme(db: Database) -> tuple[Tenant, list[dict[str, Any]]]:
    tenant = await make_tenant(db, instances={"zeta": False, "alpha": True, "mid": False})
    ids = tenant.instance_ids
    docs = [
        message(ids["zeta"], days_ago=3),
        message(ids["zeta"], days_ago=1.5, isGroup=True, chatId="g@g.us"),
        message(ids["alpha"], days_ago=2),
        message(ids["alpha"], days_ago=0.5, isGroup=True, chatId="g@g.us"),  # ignored
        message(ids["alpha"], timestamp="not a date"),  # counted, but no date
    ]
    await db.messages.insert_many([dict(doc) for doc in docs])
    rival = await make_tenant(db, name="Rival", instances={"beta": False})
    await db.messages.insert_one(message(rival.instance_ids["beta"]))
    return tenant, docs


async def _instances(http: httpx.AsyncClient, token: str | None) -> dict[str, Any]:
    headers = {"token": token} if token else {}
    response = await http.post("/graphql", json={"query": QUERY}, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_an_account_token_sees_every_instance_of_its_account_by_name(
    http: httpx.AsyncClient, acme: tuple[Tenant, list[dict[str, Any]]]
) -> None:
    tenant, docs = acme
    body = await _instances(http, tenant.account_token)
    assert body["data"]["instances"] == [
        {
            "name": "alpha",
            "ignoreGroupMessages": True,
            "createdAt": "2026-11-25T12:00:00Z",
            "totalMessages": 2,
            "lastMessageAt": "2026-11-23T12:00:00Z",
        },
        {
            "name": "mid",
            "ignoreGroupMessages": False,
            "createdAt": "2026-11-25T12:00:00Z",
            "totalMessages": 0,
            "lastMessageAt": None,
        },
        {
            "name": "zeta",
            "ignoreGroupMessages": False,
            "createdAt": "2026-11-25T12:00:00Z",
            "totalMessages": 2,
            "lastMessageAt": "2026-11-24T00:00:00Z",
        },
    ]
    for item in body["data"]["instances"]:
        ref = (tenant.instance_ids[item["name"]], item["ignoreGroupMessages"])
        expected = reference_metrics(docs, instances=[ref], now=NOW)
        assert item["totalMessages"] == expected["totalMessages"]


async def test_an_instance_token_sees_only_its_own_instance(
    http: httpx.AsyncClient, acme: tuple[Tenant, list[dict[str, Any]]]
) -> None:
    tenant, _ = acme
    body = await _instances(http, tenant.instance_tokens["zeta"])
    assert [item["name"] for item in body["data"]["instances"]] == ["zeta"]


async def test_an_account_without_instances_sees_none(
    http: httpx.AsyncClient, db: Database
) -> None:
    tenant = await make_tenant(db, name="Empty", instances={})
    assert (await _instances(http, tenant.account_token))["data"] == {"instances": []}


async def test_instances_need_a_valid_token(
    http: httpx.AsyncClient, acme: tuple[Tenant, list[dict[str, Any]]]
) -> None:
    for token in (None, "not-a-token"):
        body = await _instances(http, token)
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_instances_cost_one_point_like_metrics(
    http: httpx.AsyncClient, acme: tuple[Tenant, list[dict[str, Any]]]
) -> None:
    tenant, _ = acme
    query = "{ instances { name } metrics { instances } }"
    response = await http.post(
        "/graphql", json={"query": query}, headers={"token": tenant.account_token}
    )
    body = response.json()
    assert "errors" not in body, body
    assert body["extensions"]["cost"] == {"requested": 2, "remaining": 98, "limit": 100}
