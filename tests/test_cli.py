"""The operator CLI, through its entry point, against a real database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pymongo import MongoClient
from pymongo.uri_parser import parse_uri

from graph.cli import main
from graph.embedded import free_port
from resolvers import hash_token
from tests.standalone import standalone_server

TOKEN = re.compile(r"token \(store it now, it is not shown again\): (\S+)")


@pytest.fixture
def store(mongodb_uri: str, database_name: str) -> Iterator[Any]:
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri)
    try:
        yield client[database_name]
    finally:
        client.drop_database(database_name)
        client.close()


@pytest.fixture
def cli(mongodb_uri: str, database_name: str, store: Any) -> Any:
    env = {"MONGODB_URI": mongodb_uri, "MONGODB_DATABASE": database_name}

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), env=env)

    return invoke


def _token(result: Result) -> str:
    assert result.exit_code == 0, result.output
    found = TOKEN.search(result.output)
    assert found, result.output
    return found.group(1)


def test_accounts_create_prints_the_token_once_and_stores_only_its_hash(
    cli: Any, store: Any
) -> None:
    token = _token(cli("accounts", "create", "Acme"))
    account = store.accounts.find_one({"name": "Acme"})
    assert account["tokenHash"] == hash_token(token)
    assert token not in str(account)


def test_instances_create_under_an_account_by_name(cli: Any, store: Any) -> None:
    _token(cli("accounts", "create", "Acme"))
    token = _token(
        cli("instances", "create", "--account", "Acme", "sales", "--ignore-group-messages")
    )
    instance = store.instances.find_one({"name": "sales"})
    assert instance["tokenHash"] == hash_token(token)
    assert instance["settings"]["ignoreGroupMessages"] is True


def test_accounts_create_refuses_a_name_that_exists(cli: Any, store: Any) -> None:
    _token(cli("accounts", "create", "Acme"))
    again = cli("accounts", "create", "  Acme ")
    assert again.exit_code == 1
    assert again.output.count("\n") == 1 and 'account named "Acme" already exists' in again.output
    assert store.accounts.count_documents({}) == 1


def test_accounts_list_shows_names_instance_counts_and_dates_never_tokens(
    cli: Any, store: Any
) -> None:
    assert cli("accounts", "list").output == "no accounts\n"
    acme = _token(cli("accounts", "create", "Acme"))
    _token(cli("accounts", "create", "Beta Corp"))
    sales = _token(cli("instances", "create", "--account", "Acme", "sales"))
    _token(cli("instances", "create", "--account", "Acme", "support"))

    listed = cli("accounts", "list")

    assert listed.exit_code == 0, listed.output
    rows = {line.split("  ")[0]: line.split() for line in listed.output.splitlines()[1:]}
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert rows["Acme"][1:3] == ["2", today]
    assert rows["Beta Corp"][2:4] == ["0", today]
    assert rows["Acme"][-1] == str(store.accounts.find_one({"name": "Acme"})["_id"])
    for secret in (acme, sales, hash_token(acme), hash_token(sales)):
        assert secret not in listed.output


def test_tokens_rotate_prints_a_new_token_once_and_the_old_one_stops_at_once(
    cli: Any, store: Any
) -> None:
    old_account = _token(cli("accounts", "create", "Acme"))
    old_sales = _token(cli("instances", "create", "--account", "Acme", "sales"))
    old_support = _token(cli("instances", "create", "--account", "Acme", "support"))

    account = cli("tokens", "rotate", "--account", "Acme")
    sales = cli("tokens", "rotate", "--account", "Acme", "--instance", "sales")

    new_account, new_sales = _token(account), _token(sales)
    assert "the old one no longer works" in account.output
    assert account.output.count(new_account) == 1
    assert _owner(store, old_account) is None and _owner(store, old_sales) is None
    assert _owner(store, new_account) == ("accounts", "Acme")
    assert _owner(store, new_sales) == ("instances", "sales")
    assert _owner(store, old_support) == ("instances", "support")


def test_tokens_rotate_of_an_unknown_instance_is_a_clear_error(cli: Any) -> None:
    _token(cli("accounts", "create", "Acme"))
    result = cli("tokens", "rotate", "--account", "Acme", "--instance", "ghost")
    assert result.exit_code == 1 and 'no instance "ghost"' in result.output


def _owner(store: Any, token: str) -> tuple[str, str] | None:
    """Whose token this is, looked up by its hash as the service does."""
    for collection in ("accounts", "instances"):
        doc = store[collection].find_one({"tokenHash": hash_token(token)})
        if doc is not None:
            return collection, doc["name"]
    return None


def test_duplicate_instance_name_is_a_clear_error(cli: Any) -> None:
    _token(cli("accounts", "create", "Acme"))
    _token(cli("instances", "create", "--account", "Acme", "sales"))
    again = cli("instances", "create", "--account", "Acme", "sales")
    assert again.exit_code == 1
    assert 'already has an instance "sales"' in again.output


def test_unknown_account_is_a_clear_error(cli: Any) -> None:
    result = cli("instances", "create", "--account", "Nobody", "sales")
    assert result.exit_code == 1 and "No account" in result.output


def test_instance_names_with_commas_are_refused(cli: Any) -> None:
    _token(cli("accounts", "create", "Acme"))
    result = cli("instances", "create", "--account", "Acme", "a,b")
    assert result.exit_code == 1 and "commas" in result.output


def test_instances_list_and_set(cli: Any, store: Any) -> None:
    _token(cli("accounts", "create", "Acme"))
    _token(cli("instances", "create", "--account", "Acme", "sales"))
    listed = cli("instances", "list")
    assert listed.exit_code == 0 and "sales" in listed.output
    assert "ignoreGroupMessages" not in listed.output
    changed = cli("instances", "set", "--account", "Acme", "sales", "--ignore-group-messages")
    assert changed.exit_code == 0, changed.output
    assert store.instances.find_one({"name": "sales"})["settings"]["ignoreGroupMessages"] is True
    assert "ignoreGroupMessages" in cli("instances", "list", "--account", "Acme").output
    cli("instances", "set", "--account", "Acme", "sales", "--no-ignore-group-messages")
    assert store.instances.find_one({"name": "sales"})["settings"]["ignoreGroupMessages"] is False


def test_instances_set_needs_a_choice(cli: Any) -> None:
    result = cli("instances", "set", "--account", "Acme", "sales")
    assert result.exit_code == 2


def test_seed_tops_instances_up_and_is_idempotent(cli: Any, store: Any) -> None:
    _token(cli("accounts", "create", "Acme"))
    _token(cli("instances", "create", "--account", "Acme", "sales"))
    first = cli("seed", "--account", "Acme", "--messages", "300", "--days", "10")
    assert first.exit_code == 0, first.output
    assert "300 messages added" in first.output
    second = cli("seed", "--account", "Acme", "--messages", "300")
    assert "0 messages added" in second.output
    assert store.messages.count_documents({}) == 300


def test_seed_without_messages_adds_500_to_each_instance_and_says_so(cli: Any, store: Any) -> None:
    _token(cli("accounts", "create", "Acme"))
    _token(cli("instances", "create", "--account", "Acme", "sales"))
    _token(cli("instances", "create", "--account", "Acme", "support"))
    assert (
        cli("seed", "--account", "Acme", "--instance", "sales", "--messages", "20").exit_code == 0
    )

    result = cli("seed", "--account", "Acme")

    assert result.exit_code == 0, result.output
    assert "1000 messages added (500 to each of sales, support)" in result.output
    sales, support = (store.instances.find_one({"name": n})["_id"] for n in ("sales", "support"))
    assert store.messages.count_documents({"instanceId": sales}) == 520
    assert store.messages.count_documents({"instanceId": support}) == 500


def test_seed_without_account_creates_the_demo(cli: Any, store: Any) -> None:
    result = cli("seed", "--messages", "50")
    assert result.exit_code == 0, result.output
    assert "account token" in result.output
    assert store.instances.count_documents({}) == 3
    assert store.messages.count_documents({}) == 150


@pytest.fixture
def embedded_cli(mongodb_uri: str, database_name: str, store: Any, tmp_path: Path) -> Any:
    """The CLI without MONGODB_URI, finding the test database where it looks for the
    embedded one (EMBEDDED_PORT), with its data folder in ``tmp_path``."""
    nodes = parse_uri(mongodb_uri)["nodelist"]
    if len(nodes) != 1 or nodes[0][0] not in ("127.0.0.1", "localhost"):
        pytest.skip("needs a database on this machine")
    env = {
        "MONGODB_URI": None,
        "MONGODB_DATABASE": database_name,
        "EMBEDDED_PORT": str(nodes[0][1]),
        "EMBEDDED_DATA_DIR": str(tmp_path / "data"),
        "DEMO_MESSAGES": "30",
    }

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), env=env)

    return invoke


def _demo(result: Result) -> dict[str, str]:
    assert result.exit_code == 0, result.output
    found = dict(re.findall(r"instance token for '([^']+)': (\S+)", result.output))
    account = re.search(r"account token \(all instances\): (\S+)", result.output)
    assert account and found, result.output
    return {"account": account.group(1), **found}


def test_demo_tokens_on_the_embedded_database_are_kept_and_follow_a_rotation(
    embedded_cli: Any, store: Any, tmp_path: Path
) -> None:
    first = _demo(embedded_cli("demo"))
    assert _demo(embedded_cli("demo")) == first

    rotated = embedded_cli("tokens", "rotate", "--account", "Demo Company", "--instance", "sales")

    sales = re.search(r"token \(also kept in .*\): (\S+)", rotated.output)
    assert rotated.exit_code == 0 and sales, rotated.output
    assert _demo(embedded_cli("demo")) == {**first, "sales": sales.group(1)}
    assert _owner(store, sales.group(1)) == ("instances", "sales")

    kept = tmp_path / "data" / "demo-tokens.json"
    kept.write_text(kept.read_text().replace(first["support"], "not-a-token"))
    repaired = embedded_cli("demo")
    assert "no longer matched" in repaired.output
    shown = _demo(repaired)
    assert shown["support"] != first["support"]
    assert _owner(store, shown["support"]) == ("instances", "support")
    assert {k: v for k, v in shown.items() if k != "support"} == {
        **{k: v for k, v in first.items() if k != "support"},
        "sales": sales.group(1),
    }


def test_seed_rejects_unknown_instances(cli: Any) -> None:
    _token(cli("accounts", "create", "Acme"))
    result = cli("seed", "--account", "Acme", "--instance", "ghost", "--messages", "1")
    assert result.exit_code == 1 and "ghost" in result.output


def test_unreachable_database_is_a_clear_error(database_name: str) -> None:
    env = {
        "MONGODB_URI": f"mongodb://127.0.0.1:{free_port()}/?directConnection=true",
        "MONGODB_DATABASE": database_name,
        "MONGODB_SERVER_SELECTION_TIMEOUT_MS": "300",
    }
    result = CliRunner().invoke(main, ["accounts", "create", "Acme"], env=env)
    assert result.exit_code == 1
    assert "cannot be reached" in result.output


def test_export_schema_matches_schema_graphql(tmp_path: Path) -> None:
    target = tmp_path / "schema.graphql"
    result = CliRunner().invoke(main, ["export-schema", "--output", str(target)])
    assert result.exit_code == 0
    committed = Path(__file__).parents[1] / "schema.graphql"
    assert target.read_text(encoding="utf-8") == committed.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["embedded-db"],
        ["export-schema"],
        ["accounts"],
        ["accounts", "create"],
        ["instances"],
        ["instances", "create"],
        ["instances", "list"],
        ["instances", "set"],
        ["seed"],
        ["accounts", "list"],
        ["tokens"],
        ["tokens", "rotate"],
        ["demo"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("message-metrics")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "instances" in result.stdout


def test_rollups_rebuild_builds_them_with_a_progress_bar_and_status_reports_it(
    cli: Any, store: Any
) -> None:
    _token(cli("accounts", "create", "Acme"))
    _token(cli("instances", "create", "--account", "Acme", "sales"))
    assert cli("seed", "--account", "Acme", "--messages", "300").exit_code == 0
    before = cli("rollups", "status")
    assert before.exit_code == 0 and "0.0% built" in before.output, before.output

    rebuilt = cli("rollups", "rebuild")

    assert rebuilt.exit_code == 0, rebuilt.output
    assert "rebuilding" in rebuilt.output and "rollups rebuilt: ready" in rebuilt.output
    instance = store.instances.find_one({"name": "sales"})
    summary = store.rollup_instances.find_one({"_id": instance["_id"]})
    assert summary is not None and summary["c"]["o"]["n"] + summary["c"].get("g", {}).get(
        "n", 0
    ) == store.messages.count_documents({"instanceId": instance["_id"]})
    after = cli("rollups", "status")
    assert after.exit_code == 0 and "100.0% built" in after.output, after.output


def test_rollups_rebuild_on_a_standalone_server_builds_with_the_watermark() -> None:
    """A standalone server has no change stream: the rebuild (and status) use the
    ``updatedAt`` watermark instead of failing on the stream."""
    with standalone_server() as uri:
        env = {"MONGODB_URI": uri, "MONGODB_DATABASE": "cli_standalone"}

        def run(*args: str) -> Result:
            return CliRunner().invoke(main, list(args), env=env)

        _token(run("accounts", "create", "Acme"))
        _token(run("instances", "create", "--account", "Acme", "sales"))
        assert run("seed", "--account", "Acme", "--messages", "200").exit_code == 0

        script = Path(sys.executable).with_name("message-metrics")
        rebuilt = subprocess.run(  # a rebuild that cannot progress must fail, not hang
            [str(script), "rollups", "rebuild"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )

        assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
        assert "rollups rebuilt: ready" in rebuilt.stdout
        status = run("rollups", "status")
        assert status.exit_code == 0, status.output
        assert "100.0% built (kept by the watermark)" in status.output, status.output
        assert "every write up to" in status.output
        with MongoClient(uri) as client:
            db = client["cli_standalone"]
            instance = db.instances.find_one({"name": "sales"})
            counts = db.rollup_instances.find_one({"_id": instance["_id"]})["c"]
            stored = counts["o"]["n"] + counts.get("g", {}).get("n", 0)
            assert stored == db.messages.count_documents({"instanceId": instance["_id"]}) == 200


def test_rollups_status_names_the_watermark_for_its_rollups_of_an_older_layout(
    cli: Any, store: Any
) -> None:
    store.rollup_state.insert_one(
        {"_id": "consumer", "source": "watermark", "schema": 1, "status": "ready"}
    )
    result = cli("rollups", "status")
    assert result.exit_code == 0, result.output
    assert "(kept by the watermark)" in result.output, result.output


def test_rollups_rebuild_is_refused_while_a_service_applies_the_stream(
    cli: Any, store: Any
) -> None:
    store.rollup_lease.insert_one(
        {"_id": "consumer", "holder": "serve-1", "expiresAt": datetime.now(UTC) + timedelta(1)}
    )
    result = cli("rollups", "rebuild")
    assert result.exit_code == 1
    assert "serve-1" in result.output and "stop it first" in result.output
