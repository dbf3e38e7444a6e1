"""Fixtures: a real wire-protocol database (SecantusDB, or MONGODB_URI), fresh per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from uuid import uuid4

import httpx
import pytest

from graph import Settings
from graph.embedded import EmbeddedDatabase
from resolvers import Database, ensure_indexes, open_client
from tests.factories import app_client
from tests.standalone import standalone_server


@pytest.fixture(scope="session")
def mongodb_uri() -> Iterator[str]:
    """``MONGODB_URI`` when set (real MongoDB in CI), else an in-memory SecantusDB."""
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield uri
        return
    with EmbeddedDatabase(data_dir=None) as server:
        yield server.uri


@pytest.fixture(scope="session")
def standalone_uri() -> Iterator[str]:
    """A database without change streams (SecantusDB ``--standalone``): the watermark's."""
    with standalone_server() as uri:
        yield uri


@pytest.fixture
async def standalone_db(standalone_uri: str, database_name: str) -> AsyncIterator[Database]:
    client = open_client(standalone_uri, server_selection_timeout_ms=5_000)
    async with client:
        database = client[database_name]
        await ensure_indexes(database)
        try:
            yield database
        finally:
            await client.drop_database(database_name)


@pytest.fixture
def database_name() -> str:
    return f"test_{uuid4().hex[:16]}"


@pytest.fixture
async def db(mongodb_uri: str, database_name: str) -> AsyncIterator[Database]:
    client = open_client(mongodb_uri, server_selection_timeout_ms=5_000)
    async with client:
        database = client[database_name]
        await ensure_indexes(database)
        try:
            yield database
        finally:
            await client.drop_database(database_name)


@pytest.fixture
def settings(mongodb_uri: str, database_name: str) -> Settings:
    # no reading ahead in the background: tests that count a request's reads stay exact
    # (tests/test_rollups_warm.py turns it on)
    return Settings(mongodb_uri=mongodb_uri, mongodb_database=database_name, rollups_warm_days=0)


@pytest.fixture
async def http(settings: Settings, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the whole app (with ``settings``), clock frozen at NOW."""
    async with app_client(settings) as client:
        yield client
