"""A bad setting in the environment: one line naming the variable and what it takes,
exit status 2, no traceback, for every command that reads settings; nothing starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from graph.cli import main

#: Every command that reads settings, with the arguments it needs to get that far.
COMMANDS = [
    ["serve"],
    ["embedded-db"],
    ["demo"],
    ["seed"],
    ["accounts", "create", "Acme"],
    ["accounts", "list"],
    ["instances", "create", "--account", "Acme", "sales"],
    ["instances", "list"],
    ["instances", "set", "--account", "Acme", "sales", "--ignore-group-messages"],
    ["tokens", "rotate", "--account", "Acme"],
    ["rollups", "status"],
    ["rollups", "rebuild"],
]

BAD = {
    "PORT": ("abc", "PORT='abc' is not valid: expected an integer from 0 to 65535"),
    "LOG_LEVEL": (
        "verbose",
        "LOG_LEVEL='verbose' is not valid: expected one of debug, info, warning, error",
    ),
}


@pytest.mark.parametrize("variable", sorted(BAD))
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_bad_setting_is_one_line_and_exit_status_2(
    command: list[str], variable: str, tmp_path: Path
) -> None:
    value, message = BAD[variable]
    # Were the setting read too late, these would point nowhere harmful.
    env = {variable: value, "MONGODB_URI": None, "EMBEDDED_DATA_DIR": str(tmp_path / "data")}

    result = CliRunner().invoke(main, command, env=env)

    assert result.exit_code == 2, result.output
    assert result.output == f"Error: {message}\n"
    assert not (tmp_path / "data").exists()


def test_a_bad_setting_from_the_console_script_has_no_traceback(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "MONGODB_URI"}
    env.update(PORT="abc", EMBEDDED_DATA_DIR=str(tmp_path / "data"))
    script = Path(sys.executable).with_name("message-metrics")

    result = subprocess.run(
        [str(script), "serve"], env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 2
    assert result.stderr == f"Error: {BAD['PORT'][1]}\n"
    assert result.stdout == ""


def test_commands_that_need_no_settings_and_help_work_despite_a_bad_one(tmp_path: Path) -> None:
    env = {"PORT": "abc", "LOG_LEVEL": "verbose"}
    schema = CliRunner().invoke(main, ["export-schema", "-o", str(tmp_path / "s")], env=env)
    assert schema.exit_code == 0, schema.output
    helped = CliRunner().invoke(main, ["serve", "--help"], env=env)
    assert helped.exit_code == 0 and "Usage:" in helped.output
