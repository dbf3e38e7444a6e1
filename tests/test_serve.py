"""`message-metrics serve` as a real process: embedded database, demo tokens, shutdown."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from graph.embedded import free_port, is_reachable
from tests.server import wait_for_health

QUERY = {
    "query": "{ metrics { instance totalMessages messagesByType { key count } firstMessageAt } }"
}


@contextmanager
def _serve(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """``serve`` with no MONGODB_URI; yields (base URL, its output so far, database URI)."""
    port, db_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    env.update(
        PORT=str(port),
        EMBEDDED_PORT=str(db_port),
        DEMO_MESSAGES="300",
        EMBEDDED_DATA_DIR=str(tmp_path / "data"),
        LOG_LEVEL="warning",
    )
    script = Path(sys.executable).with_name("message-metrics")
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(script), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    db_uri = f"mongodb://127.0.0.1:{db_port}/?directConnection=true"
    try:
        wait_for_health(f"{base}/health", process, log)
        yield base, log.read_text(), db_uri
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    with _serve(tmp_path) as running:
        yield running


def test_serve_seeds_a_demo_whose_printed_token_answers(served: tuple[str, str, str]) -> None:
    base, output, _ = served
    token = re.search(r"account token \(all instances\): (\S+)", output)
    assert token, output
    response = httpx.post(
        f"{base}/graphql", json=QUERY, headers={"token": token.group(1)}, timeout=10
    )
    metrics = response.json()["data"]["metrics"]
    assert metrics["instance"] == "marketing,sales,support"
    assert metrics["totalMessages"] > 0
    assert metrics["firstMessageAt"].endswith("Z")
    graphiql = httpx.get(f"{base}/graphql", headers={"Accept": "text/html"}, timeout=10)
    assert "graphiql" in graphiql.text.lower()


def test_serve_stops_the_embedded_database_on_shutdown(tmp_path: Path) -> None:
    with _serve(tmp_path) as (_, _, db_uri):
        assert is_reachable(db_uri)
    assert not is_reachable(db_uri)
