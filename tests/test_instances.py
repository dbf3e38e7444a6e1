"""Instance selection over HTTP: how many names a request may list, and the order of
"every instance" when none is named."""

from __future__ import annotations

import httpx
import pytest

from resolvers import Database
from tests.factories import Tenant, make_tenant

QUERY = "{ metrics { instance instances } }"


@pytest.fixture
async def tenant(db: Database) -> Tenant:
    return await make_tenant(db, instances={"sales": False})


async def test_exactly_one_hundred_names_are_accepted(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    headers = {"token": tenant.account_token}
    hundred = await http.get(f"/metrics/{','.join(['sales'] * 100)}", headers=headers)
    assert hundred.status_code == 200
    assert hundred.json()["metrics"]["instance"] == ",".join(["sales"] * 100)
    refused = await http.get(f"/metrics/{','.join(['sales'] * 101)}", headers=headers)
    assert refused.status_code == 400


@pytest.mark.parametrize(
    "created", [("zeta", "alpha", "mid"), ("mid", "zeta", "alpha"), ("alpha", "mid", "zeta")]
)
async def test_without_names_every_instance_comes_sorted_by_name(
    http: httpx.AsyncClient, db: Database, created: tuple[str, ...]
) -> None:
    tenant = await make_tenant(db, instances=dict.fromkeys(created, False))
    # Indexes are created in the background at start-up and may not exist yet: the
    # order must come from the query itself, not from the index the planner picks.
    await db.instances.drop_index("accountId_name")
    response = await http.post(
        "/graphql", json={"query": QUERY}, headers={"token": tenant.account_token}
    )
    metrics = response.json()["data"]["metrics"]
    assert metrics["instances"] == ["alpha", "mid", "zeta"]
    assert metrics["instance"] == "alpha,mid,zeta"
