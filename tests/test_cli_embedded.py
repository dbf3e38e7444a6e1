"""`message-metrics embedded-db` as a real process: SIGTERM and SIGHUP stop its database
as Ctrl-C does, instead of leaving it running without a parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from graph.embedded import free_port, is_reachable


def children_of(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (Linux ``/proc``); zombies are left out."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended meanwhile
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def state_of(pid: int) -> str | None:
    """The process's state letter (``Z`` for a zombie nobody reaped), None when gone."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def until(check: Callable[[], bool], *, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("not within the time allowed")


pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_embedded_db_stops_its_database_on(signum: signal.Signals, tmp_path: Path) -> None:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "MONGODB_URI"}
    env.update(EMBEDDED_PORT=str(port), EMBEDDED_DATA_DIR=str(tmp_path / "data"))
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    log = tmp_path / "embedded-db.log"
    script = Path(sys.executable).with_name("message-metrics")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(script), "embedded-db"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    database: list[int] = []
    try:
        until(lambda: process.poll() is None and is_reachable(uri, timeout_ms=300))
        database = children_of(process.pid)
        assert len(database) == 1, database

        process.send_signal(signum)

        assert process.wait(timeout=30) == 0, log.read_text()
        assert state_of(database[0]) is None
        assert not is_reachable(uri, timeout_ms=300)
        assert f"stopping ({signum.name})" in log.read_text()
    finally:
        for pid in [process.pid, *database]:
            if state_of(pid) not in (None, "Z"):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=10)
