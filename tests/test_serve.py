"""`message-metrics serve` as a real process: embedded database, demo tokens, shutdown."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from graph.demo import tokens_file
from graph.embedded import free_port, is_reachable
from graph.settings import Settings
from tests.server import wait_for_health
from tests.test_cli_embedded import children_of, state_of, until

ROOT = Path(__file__).parents[1]
SCRIPT = Path(sys.executable).with_name("message-metrics")

QUERY = {
    "query": "{ metrics { instance totalMessages messagesByType { key count } firstMessageAt } }"
}


@dataclass(frozen=True)
class Served:
    base: str
    output: str  # what it printed until it answered /health
    db_uri: str
    process: subprocess.Popen[bytes]
    log: Path


def _environment(
    *, port: int, db_port: int, data: Path, log_level: str = "warning"
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    env.update(
        PORT=str(port),
        EMBEDDED_PORT=str(db_port),
        DEMO_MESSAGES="300",
        EMBEDDED_DATA_DIR=str(data),
        LOG_LEVEL=log_level,
    )
    return env


@contextmanager
def _serve(
    tmp_path: Path,
    *,
    port: int = 0,
    db_port: int = 0,
    data: Path | None = None,
    log_level: str = "warning",
) -> Iterator[Served]:
    """``serve`` with no MONGODB_URI, on free ports unless given; stopped with SIGTERM."""
    port, db_port = port or free_port(), db_port or free_port()
    env = _environment(
        port=port, db_port=db_port, data=data or tmp_path / "data", log_level=log_level
    )
    log = tmp_path / f"serve-{uuid4().hex[:8]}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(SCRIPT), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    db_uri = f"mongodb://127.0.0.1:{db_port}/?directConnection=true"
    try:
        wait_for_health(f"{base}/health", process, log)
        yield Served(base, log.read_text(), db_uri, process, log)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with _serve(tmp_path) as running:
        yield running


def test_serve_seeds_a_demo_whose_printed_token_answers(served: Served) -> None:
    base, output = served.base, served.output
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
    with _serve(tmp_path) as served:
        assert is_reachable(served.db_uri)
    assert not is_reachable(served.db_uri)


def _tokens(output: str) -> dict[str, str]:
    """The demo tokens a command printed: "account" and each instance's name."""
    found = dict(re.findall(r"instance token for '([^']+)': (\S+)", output))
    account = re.search(r"account token \(all instances\): (\S+)", output)
    assert account and found, output
    return {"account": account.group(1), **found}


def _statuses(base: str, tokens: dict[str, str]) -> set[int]:
    """The REST status each token gets for its own instance ("sales" for the account)."""
    return {
        httpx.get(
            f"{base}/metrics/{'sales' if whose == 'account' else whose}",
            headers={"token": token},
            timeout=10,
        ).status_code
        for whose, token in tokens.items()
    }


def test_demo_tokens_survive_restarts_and_a_failed_start_and_change_only_on_demand(
    tmp_path: Path,
) -> None:
    port, db_port, data = free_port(), free_port(), tmp_path / "data"
    env = _environment(port=port, db_port=db_port, data=data)
    with _serve(tmp_path, port=port, db_port=db_port, data=data) as first:
        tokens = _tokens(first.output)
    kept = tokens_file(data)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    saved = kept.read_bytes()
    assert all(token in saved.decode() for token in tokens.values())

    with socket.socket() as taken:  # someone else holds the port
        taken.bind(("127.0.0.1", port))
        taken.listen()
        failed = subprocess.run(
            [str(SCRIPT), "serve"], env=env, capture_output=True, text=True, timeout=60
        )
    assert failed.returncode == 1, failed
    assert (
        f"cannot listen on 127.0.0.1:{port}" in failed.stderr and "Traceback" not in failed.stderr
    )
    assert kept.read_bytes() == saved

    with _serve(tmp_path, port=port, db_port=db_port, data=data, log_level="debug") as again:
        assert _tokens(again.output) == tokens
        assert _statuses(again.base, tokens) == {200}

        renewed = subprocess.run(  # on the database the running service uses
            [str(SCRIPT), "demo", "--new-tokens"], env=env, capture_output=True, text=True
        )

        assert renewed.returncode == 0, renewed
        new = _tokens(renewed.stdout)
        assert new.keys() == tokens.keys()
        assert not set(new.values()) & set(tokens.values())
        assert _statuses(again.base, tokens) == {401}
        assert _statuses(again.base, new) == {200}
        assert all(token in kept.read_text() for token in new.values())
        logged = [line for line in again.log.read_text().splitlines() if line.startswith("{")]
        assert logged and not any(t in line for t in {**tokens, **new}.values() for line in logged)


def test_the_demo_tokens_file_of_the_default_data_folder_is_git_ignored() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    default = Settings.model_fields["embedded_data_dir"].default
    result = subprocess.run(["git", "check-ignore", "-q", str(tokens_file(default))], cwd=ROOT)
    assert result.returncode == 0


def test_serve_reaps_a_database_that_died_and_says_so_in_health_and_the_log(
    served: Served,
) -> None:
    [database] = children_of(served.process.pid)

    os.kill(database, signal.SIGKILL)

    until(lambda: state_of(database) is None)  # reaped, not left a zombie
    health = httpx.get(f"{served.base}/health", timeout=10)
    assert health.status_code == 503
    reason = "embedded database was killed by SIGKILL (exit code -9)"
    assert health.json()["checks"]["db"] == reason
    until(lambda: reason in served.log.read_text())


def test_the_listening_socket_answers_kept_alive_connections_without_nagle_delays() -> None:
    # `serve` binds its port itself and hands the socket to uvicorn, which then leaves
    # TCP_NODELAY unset: every response on a kept-alive connection waited ~40 ms for the
    # client's delayed ACK. Accepted sockets inherit the option from the listener.
    from graph.cli import _listen

    listener = _listen("127.0.0.1", 0)
    try:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        with client, accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        listener.close()
