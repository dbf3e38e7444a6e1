"""Operations graphql-core found valid are not validated again; others always are. Short
operation texts are parsed once; long ones every time."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import httpx
import pytest
import strawberry.schema.schema as strawberry_schema
from graphql.language.parser import Parser

from graph.validated import MAX_CACHED_TEXT, ValidDocuments
from resolvers import Database
from tests.factories import Tenant, make_tenant


@pytest.fixture
async def tenant(db: Database) -> Tenant:
    return await make_tenant(db)


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The first line of each document graphql-core validates (a spy on the call)."""
    seen: list[str] = []
    original = strawberry_schema.validate_document

    def spy(schema: Any, document: Any, rules: Any) -> Any:
        seen.append(document.loc.source.body)
        return original(schema, document, rules)

    monkeypatch.setattr(strawberry_schema, "validate_document", spy)
    return seen


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The text of each document graphql-core parses (a spy on the parser)."""
    seen: list[str] = []
    original = Parser.parse_document

    def spy(self: Parser) -> Any:
        seen.append(self._lexer.source.body)
        return original(self)

    monkeypatch.setattr(Parser, "parse_document", spy)
    return seen


async def test_a_short_operation_is_parsed_once_a_long_one_every_time(
    http: httpx.AsyncClient, tenant: Tenant, parsed: list[str]
) -> None:
    short = f"query Short{uuid4().hex} {{ metrics {{ totalMessages }} }}"
    long = short.replace("totalMessages", "totalMessages" + " " * MAX_CACHED_TEXT)
    headers = {"token": tenant.account_token}
    for query in (short, short, long, long):
        response = await http.post("/graphql", json={"query": query}, headers=headers)
        assert response.status_code == 200
        assert response.json()["data"]["metrics"]["totalMessages"] == 0

    assert parsed.count(short) == 1
    assert parsed.count(long) == 2


async def test_a_valid_operation_is_validated_once_and_answers_alike(
    http: httpx.AsyncClient, tenant: Tenant, validations: list[str]
) -> None:
    query = f"query Unique{uuid4().hex} {{ metrics {{ totalMessages uniqueChats }} }}"
    headers = {"token": tenant.account_token}
    first = await http.post("/graphql", json={"query": query}, headers=headers)
    second = await http.post("/graphql", json={"query": query}, headers=headers)

    assert first.status_code == second.status_code == 200
    assert first.json()["data"] == second.json()["data"]
    assert validations.count(query) == 1


async def test_an_invalid_operation_is_validated_and_refused_every_time(
    http: httpx.AsyncClient, tenant: Tenant, validations: list[str]
) -> None:
    query = f"query Wrong{uuid4().hex} {{ metrics {{ noSuchField }} }}"
    headers = {"token": tenant.account_token}
    for _ in range(2):
        response = await http.post("/graphql", json={"query": query}, headers=headers)
        error = response.json()["errors"][0]
        assert "noSuchField" in error["message"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert validations.count(query) == 2


def test_the_set_forgets_the_least_recently_used_text_past_its_size() -> None:
    valid = ValidDocuments(size=2)
    valid.remember("a")
    valid.remember("b")
    assert "a" in valid  # used: now the most recent
    valid.remember("c")

    assert "a" in valid and "c" in valid and "b" not in valid
    assert len(valid) == 2
