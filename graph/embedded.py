"""The embedded database: SecantusDB run as a child process (never imported: GPL-2.0)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
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
    "describe_exit",
    "free_port",
    "is_reachable",
    "stop_process",
]

EXECUTABLE = "secantusd-py"

_log = logging.getLogger(__name__)


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


def describe_exit(code: int) -> str:
    """How the embedded database ended, from its exit status (negative: a signal)."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"embedded database was killed by {name} (exit code {code})"
    return f"embedded database exited with code {code}"


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
        #: Why the server is gone when it ended on its own while watched; else None.
        self.exit_reason: str | None = None

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

    def watch(self) -> None:
        """Reap the server in the background if it ends on its own (no zombie is left),
        log why, and keep it in ``exit_reason``. ``stop()`` ends it quietly."""
        process = self._process
        if process is None:
            return
        threading.Thread(
            target=self._reap, args=(process,), name="embedded-db-reaper", daemon=True
        ).start()

    def _reap(self, process: subprocess.Popen[bytes]) -> None:
        code = process.wait()
        if self._process is not process:  # stopped on purpose
            return
        self.exit_reason = describe_exit(code)
        tail = self._log_tail(500).strip()
        _log.error(
            "%s; requests fail until a database answers on port %d again "
            "(`message-metrics embedded-db` starts one)",
            self.exit_reason,
            self.port,
            extra={"output": tail} if tail else {},
        )

    def wait(self) -> int:
        """Block until the server exits; its exit code."""
        if self._process is None:
            return 0
        return self._process.wait()

    def _log_tail(self, size: int = 2000) -> str:
        log = self._log
        if log is None:
            return ""
        try:
            log.seek(0)
            return log.read().decode(errors="replace")[-size:]
        except (OSError, ValueError):  # closed by stop() meanwhile
            return ""

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
