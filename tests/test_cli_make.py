"""`make run` installs only what serving needs; `make test` adds the rest, and neither
reinstalls what the other already did (read from `make -n`, which runs nothing)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _plan(target: str, venv: Path) -> str:
    """The commands ``make <target>`` would run with its venv at ``venv``."""
    result = subprocess.run(
        ["make", "-n", "-C", str(ROOT), target, f"VENV={venv}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout


def _installs(plan: str) -> list[str]:
    return [line for line in plan.splitlines() if "pip install" in line and "-e" in line]


def _stamp(venv: Path, *names: str) -> None:
    venv.mkdir(exist_ok=True)
    for name in names:  # one after the other, each newer than pyproject.toml
        (venv / name).touch()
        os.utime(venv / name)


def test_run_on_a_fresh_clone_installs_the_embedded_extra_only(tmp_path: Path) -> None:
    installs = _installs(_plan("run", tmp_path / "venv"))
    assert len(installs) == 1
    assert "'.[embedded]'" in installs[0]


def test_test_after_run_installs_the_rest_and_run_after_test_nothing(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _stamp(venv, *_stamps_after("run", venv))

    plan = _plan("install", venv)

    installs = _installs(plan)
    assert len(installs) == 1 and "dev" in installs[0] and "redis" in installs[0]
    assert "-m venv" not in plan
    _stamp(venv, *_stamps_after("install", venv))
    assert _installs(_plan("run", venv)) == []
    assert _installs(_plan("install", venv)) == []


def _stamps_after(target: str, venv: Path) -> list[str]:
    """The stamp files the recipes of ``make <target>`` touch, in order."""
    touched = []
    for line in _plan(target, venv).splitlines():
        if line.startswith("touch ") and line.split()[1].startswith(str(venv)):
            touched.append(Path(line.split()[1]).name)
    assert touched, f"make {target} touches no stamp in {venv}"
    return touched
