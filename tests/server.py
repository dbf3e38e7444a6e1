"""``message-metrics serve`` as a real process on a free loopback port, for the tests that
need a real server: a stuck event loop, forwarding headers, several processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from pymongo import MongoClient

from graph.embedded import free_port, stop_process

#: Settings a test's environment must not leak into the server it starts.
_CLEARED = ("FORWARDED_ALLOW_IPS", "RATE_LIMIT_STORAGE_URI", "RATE_LIMIT_PER_MINUTE")


@contextmanager
def serve(
    *, mongodb_uri: str, database: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Run ``serve`` on ``database`` (dropped afterwards); yields its base URL. A server
    whose event loop is stuck is killed after a short grace."""
    port = free_port()
    environment = {key: value for key, value in os.environ.items() if key not in _CLEARED}
    environment.update(
        MONGODB_URI=mongodb_uri,
        MONGODB_DATABASE=database,
        PORT=str(port),
        LOG_LEVEL="warning",
        **(env or {}),
    )
    script = Path(sys.executable).with_name("message-metrics")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(script), "serve"], env=environment, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(f"{base}/health", process, log)
        yield base
    finally:
        stop_process(process, grace=5)
        with MongoClient(mongodb_uri, serverSelectionTimeoutMS=5_000) as client:
            client.drop_database(database)


def wait_for_health(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until ``url`` answers 200; fails with the server's log when it exits or is late."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"serve did not come up:\n{log.read_text()}")
