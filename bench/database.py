"""Which database serves the run: ``MONGODB_URI`` (a fresh database, dropped at the end)
or an in-memory SecantusDB started here and stopped at the end."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from bench.report import redact_uri
from graph.embedded import EmbeddedDatabase

__all__ = ["Target", "open_target"]


@dataclass(frozen=True, slots=True)
class Target:
    uri: str
    database: str
    description: str
    embedded: bool


def _build_version(uri: str) -> str | None:
    client: MongoClient[dict[str, object]] = MongoClient(uri, serverSelectionTimeoutMS=5_000)
    try:
        return str(client.admin.command("buildInfo").get("version"))
    except PyMongoError:
        return None
    finally:
        client.close()


def _drop(uri: str, database: str) -> None:
    """Drop the run's database; a failure here is reported, never masks the run's own."""
    client: MongoClient[dict[str, object]] = MongoClient(uri, serverSelectionTimeoutMS=5_000)
    try:
        client.drop_database(database)
    except PyMongoError as exc:
        print(f"could not drop database {database}: {exc}", file=sys.stderr)
    finally:
        client.close()


def _secantus_version() -> str:
    try:
        return version("secantusdb")
    except PackageNotFoundError:
        return "(version unknown)"


@contextmanager
def open_target(mongodb_uri: str | None) -> Iterator[Target]:
    """The database for the run, cleaned up however the run ends."""
    database = f"bench_{secrets.token_hex(6)}"
    if mongodb_uri:
        build = _build_version(mongodb_uri) or "unknown"
        description = (
            f"MONGODB_URI {redact_uri(mongodb_uri)} (server version {build}), "
            f"database `{database}` dropped afterwards"
        )
        try:
            yield Target(mongodb_uri, database, description, embedded=False)
        finally:
            _drop(mongodb_uri, database)
        return
    with EmbeddedDatabase(data_dir=None) as server:
        build = _build_version(server.uri) or "unknown"
        description = (
            f"SecantusDB {_secantus_version()} embedded (in memory, 127.0.0.1, "
            f"started for the run; reports MongoDB {build})"
        )
        yield Target(server.uri, database, description, embedded=True)
