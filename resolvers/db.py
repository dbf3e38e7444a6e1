"""Opening the database and turning driver failures into domain errors."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, PyMongoError, ServerSelectionTimeoutError
from pymongo.results import UpdateResult

from resolvers.errors import Unavailable

__all__ = [
    "SOCKET_TIMEOUT_MS",
    "Database",
    "open_client",
    "translate_driver_errors",
    "update_unrecorded",
]

Database = AsyncDatabase[dict[str, Any]]

#: The longest a socket read may wait outside a request's deadline.
SOCKET_TIMEOUT_MS = 60_000

_log = logging.getLogger(__name__)


def open_client(
    uri: str, *, server_selection_timeout_ms: int, socket_timeout_ms: int = SOCKET_TIMEOUT_MS
) -> AsyncMongoClient[dict[str, Any]]:
    """One client per process: timezone-aware dates and short, explicit timeouts.

    No client-wide ``timeoutMS``: a request bounds all its database work with one
    deadline (``pymongo.timeout()``, see ``graph.deadline``). Inside it PyMongo derives
    each command's ``maxTimeMS`` and socket timeout from the time left, and looks for a
    server until the deadline (not ``serverSelectionTimeoutMS``). Outside a request
    (index builds, the CLI) the server selection and socket timeouts here apply.
    """
    return AsyncMongoClient(
        uri,
        tz_aware=True,
        serverSelectionTimeoutMS=server_selection_timeout_ms,
        connectTimeoutMS=server_selection_timeout_ms,
        socketTimeoutMS=socket_timeout_ms,
        appname="message-metrics",
    )


async def update_unrecorded(
    collection: AsyncCollection[dict[str, Any]], query: dict[str, Any], update: dict[str, Any]
) -> UpdateResult:
    """Update the document ``query`` names (by ``_id``) as a multi-document update, which
    is not a retryable write (the driver never sends it twice): for periodic writes whose
    own loop tries again.

    SecantusDB keeps every retryable write's reply for 30 minutes, at most 10,000 of
    them, and goes through them all on each retryable write; past 10,000 it sorts them
    on each one. Measured on this machine: 0.7 ms a write with none kept, 1.2 ms with
    9,000, 3.3-4.8 ms past 10,000. The consumer's idle refresh alone, 5 a second, would
    keep 9,000, and every write of the gateway would pay for them."""
    return await collection.update_many(query, update)


@contextmanager
def translate_driver_errors() -> Iterator[None]:
    """Report an unreachable, frozen or overloaded database as ``Unavailable``, never a
    stack trace; a request whose deadline passed is told so."""
    try:
        yield
    except ServerSelectionTimeoutError as exc:
        raise _unreachable(exc) from exc
    except PyMongoError as exc:
        if exc.timeout:
            _log.warning("database timed out: %s", exc)
            raise Unavailable("The database did not answer in time; try again shortly.") from exc
        if isinstance(exc, ConnectionFailure):
            raise _unreachable(exc) from exc
        raise


def _unreachable(exc: PyMongoError) -> Unavailable:
    _log.warning("database unreachable: %s", exc)
    return Unavailable("The database cannot be reached; try again shortly.")
