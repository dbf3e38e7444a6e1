"""Tokens: random enough that guessing one is hopeless, and never the same twice."""

from __future__ import annotations

import base64

import httpx

from resolvers import Database
from resolvers.tokens import new_token
from tests.factories import make_tenant


def _bits(token: str) -> int:
    """Bits of randomness in a URL-safe base64 token (``secrets.token_urlsafe``)."""
    return 8 * len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


def test_a_new_token_has_at_least_256_bits() -> None:
    assert _bits(new_token()) >= 256


def test_two_new_tokens_differ() -> None:
    assert len({new_token() for _ in range(20)}) == 20


async def test_tokens_handed_out_are_long_distinct_and_each_opens_its_own_bucket(
    http: httpx.AsyncClient, db: Database
) -> None:
    tenant = await make_tenant(db, instances={"sales": False, "support": False})
    tokens = [tenant.account_token, *tenant.instance_tokens.values()]
    assert len(set(tokens)) == 3
    assert all(_bits(token) >= 256 for token in tokens)
    for token in tokens:
        response = await http.get("/metrics/sales", headers={"token": token})
        assert response.headers["X-RateLimit-Remaining"] == "99"
