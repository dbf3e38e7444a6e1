"""A SecantusDB without change streams (``--standalone``): what a standalone ``mongod``
offers the rollups (no change stream, no cluster time). ``STANDALONE_MONGODB_URI`` points
the tests at a real standalone ``mongod`` instead (CI runs one beside the replica set)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from graph.embedded import free_port, is_reachable, stop_process

__all__ = ["standalone_server"]


@contextmanager
def standalone_server(*, startup_timeout: float = 30.0) -> Iterator[str]:
    """Start one on a free loopback port, in memory; yields its URI; stops it after."""
    given = os.environ.get("STANDALONE_MONGODB_URI")
    if given:
        yield given
        return
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("secantusd-py")),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--storage-path", ":memory:", "--log-level", "WARNING", "--standalone"),
    ]
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + startup_timeout
            while not is_reachable(uri, timeout_ms=300):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"secantusd-py --standalone did not start:\n{log.read()!r}")
                time.sleep(0.1)
            yield uri
        finally:
            stop_process(process)
