"""One JSON log line per request, with a request id, and never a token."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from graph.logs import JsonFormatter
from resolvers import Database
from tests.factories import make_tenant


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[dict]:
    formatter = JsonFormatter()
    return [
        json.loads(formatter.format(r))
        for r in caplog.records
        if r.name == "message_metrics.access"
    ]


async def test_each_request_logs_one_json_line_without_the_token(
    http: httpx.AsyncClient, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = await make_tenant(db)
    caplog.set_level(logging.DEBUG)
    response = await http.get("/metrics/sales?x=1", headers={"token": tenant.account_token})
    await http.post(
        "/graphql",
        json={"query": "{ __typename }"},
        headers={"Authorization": f"Bearer {tenant.instance_tokens['sales']}"},
    )
    lines = _access_lines(caplog)
    assert len(lines) == 2
    first = lines[0]
    assert (first["method"], first["path"], first["status"]) == ("GET", "/metrics/sales", 200)
    assert first["duration_ms"] >= 0
    assert first["request_id"] == response.headers["X-Request-ID"]
    everything = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert tenant.account_token not in everything
    assert tenant.instance_tokens["sales"] not in everything


async def test_a_sane_incoming_request_id_is_kept(http: httpx.AsyncClient) -> None:
    response = await http.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    odd = await http.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert odd.headers["X-Request-ID"] != "bad id\twith spaces"
    assert len(odd.headers["X-Request-ID"]) == 32
