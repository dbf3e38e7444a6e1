"""The service under test: a real uvicorn process on 127.0.0.1, always stopped."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from graph.embedded import free_port, stop_process

__all__ = ["Service", "ServiceError", "run_service"]

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


class ServiceError(RuntimeError):
    """The service did not start."""


@dataclass(frozen=True, slots=True)
class Service:
    base_url: str
    log: IO[bytes]

    def log_tail(self, size: int = 3000) -> str:
        """The end of the service's output (warnings and errors only)."""
        return _tail(self.log, size)


def service_env(*, uri: str, database: str, request_timeout_ms: int) -> dict[str, str]:
    """The environment of the service: the bench database, limits raised for the run."""
    return {
        **os.environ,
        "MONGODB_URI": uri,
        "MONGODB_DATABASE": database,
        "REQUEST_TIMEOUT_MS": str(request_timeout_ms),
        "RATE_LIMIT_PER_MINUTE": "1000000",
        "MAX_IN_FLIGHT": "1000000",
        "MAX_IN_FLIGHT_PER_TOKEN": "1000000",
        "LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
    }


def _tail(log: IO[bytes], size: int = 3000) -> str:
    """The end of the log, read without moving the offset the child process writes at."""
    end = os.fstat(log.fileno()).st_size
    start = max(0, end - size)
    return os.pread(log.fileno(), end - start, start).decode(errors="replace")


def _ready(client: httpx.Client) -> bool:
    """``GET /health`` answers 200; without that route, ``GET /graphql`` answers at all."""
    try:
        health = client.get("/health")
        if health.status_code == 200:
            return True
        if health.status_code == 404:
            return client.get("/graphql").status_code < 500
    except httpx.TransportError:
        pass
    return False


def _wait(process: subprocess.Popen[bytes], base_url: str, log: IO[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base_url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServiceError(f"the service exited at start-up:\n{_tail(log)}")
            if _ready(client):
                return
            time.sleep(0.1)
    raise ServiceError(f"the service did not answer within {timeout:.0f}s:\n{_tail(log)}")


@contextmanager
def run_service(
    *, uri: str, database: str, request_timeout_ms: int, startup_timeout: float = 60.0
) -> Iterator[Service]:
    """Start ``uvicorn --factory graph.app:create_app`` on a free port; stop it after."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", "graph.app:create_app"]
    command += ["--host", HOST, "--port", str(port), "--no-access-log", "--log-level", "warning"]
    env = service_env(uri=uri, database=database, request_timeout_ms=request_timeout_ms)
    base_url = f"http://{HOST}:{port}"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        try:
            _wait(process, base_url, log, startup_timeout)
            yield Service(base_url=base_url, log=log)
        finally:
            stop_process(process)
