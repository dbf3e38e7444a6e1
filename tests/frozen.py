"""A database that hangs: a SecantusDB of a test module's own, stopped with its sockets open.

``SIGSTOP`` freezes the process the way a hung server looks to its clients: connections
are accepted and requests written, but nothing ever answers. Keep each freeze shorter
than the driver's heartbeat timeout (``connectTimeoutMS``, the server selection timeout
here), or its monitor gives up on the server and the test measures that instead.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from graph.embedded import EmbeddedDatabase
from resolvers import ensure_indexes, open_client
from tests.factories import Tenant, make_tenant


@contextmanager
def frozen(server: EmbeddedDatabase) -> Iterator[None]:
    """``server`` stopped (SIGSTOP) for the block, and always resumed (SIGCONT) after."""
    process = server._process  # the child process EmbeddedDatabase started
    assert process is not None, "the database is not running"
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


@asynccontextmanager
async def tenants(uri: str, database: str, *names: str) -> AsyncIterator[dict[str, Tenant]]:
    """One account per name, each with an empty instance ``sales``; dropped afterwards."""
    client = open_client(uri, server_selection_timeout_ms=5_000)
    async with client:
        db = client[database]
        await ensure_indexes(db)
        try:
            yield {name: await make_tenant(db, name=name) for name in names}
        finally:
            await client.drop_database(database)
