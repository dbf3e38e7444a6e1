"""GraphQL over HTTP: GraphiQL, token headers and the full app."""

from __future__ import annotations

import httpx

from resolvers import Database
from tests.factories import make_tenant, message

QUERY = "{ metrics { instance totalMessages messagesByType { key count } firstMessageAt } }"


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
