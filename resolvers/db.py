"""Opening the database and turning driver failures into domain errors."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, ExecutionTimeout, PyMongoError, WTimeoutError

from resolvers.errors import Unavailable

__all__ = ["Database", "open_client", "translate_driver_errors"]

Database = AsyncDatabase[dict[str, Any]]

_log = logging.getLogger(__name__)


def open_client(
    uri: str, *, server_selection_timeout_ms: int, query_timeout_ms: int
) -> AsyncMongoClient[dict[str, Any]]:
    """One client per process: timezone-aware dates and short, explicit timeouts.

    No client-wide ``timeoutMS``: it would replace ``serverSelectionTimeoutMS`` and make
    an unreachable database take the whole query budget to report. Queries bound
    themselves with ``maxTimeMS`` instead; the socket timeout is the backstop.
    """
    return AsyncMongoClient(
        uri,
        tz_aware=True,
        serverSelectionTimeoutMS=server_selection_timeout_ms,
        connectTimeoutMS=server_selection_timeout_ms,
        socketTimeoutMS=query_timeout_ms + 5_000,
        appname="message-metrics",
    )


@contextmanager
def translate_driver_errors() -> Iterator[None]:
    """Report an unreachable or overloaded database as ``Unavailable``, never a stack trace."""
    try:
        yield
    except ConnectionFailure as exc:
        _log.warning("database unreachable: %s", exc)
        raise Unavailable("The database cannot be reached; try again shortly.") from exc
    except (ExecutionTimeout, WTimeoutError) as exc:
        _log.warning("database timed out: %s", exc)
        raise Unavailable("The database did not answer in time; try again shortly.") from exc
    except PyMongoError as exc:
        if exc.timeout:
            _log.warning("database timed out: %s", exc)
            raise Unavailable("The database did not answer in time; try again shortly.") from exc
        raise
