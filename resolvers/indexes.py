"""Indexes the queries need, created idempotently at start-up."""

from __future__ import annotations

import logging

from pymongo import ASCENDING, IndexModel
from pymongo.errors import OperationFailure

from resolvers.db import Database, translate_driver_errors

__all__ = ["ensure_indexes"]

_log = logging.getLogger(__name__)
_DUPLICATE_KEY = 11000

_INDEXES = {
    "accounts": [
        IndexModel([("tokenHash", ASCENDING)], name="tokenHash", unique=True),
        # operators pick accounts by name (``--account Acme``): two of one name would make
        # that ambiguous, and a check before the insert alone lets two creates race
        IndexModel([("name", ASCENDING)], name="name", unique=True),
    ],
    "instances": [
        IndexModel([("tokenHash", ASCENDING)], name="tokenHash", unique=True),
        IndexModel(
            [("accountId", ASCENDING), ("name", ASCENDING)], name="accountId_name", unique=True
        ),
    ],
    "messages": [
        IndexModel(
            [("instanceId", ASCENDING), ("timestamp", ASCENDING)], name="instanceId_timestamp"
        )
    ],
    # rollups (resolvers/rollups/store.py): one bucket per instance, level and start;
    # values by instance, for dropping an instance's rollups; value sets of a day or hour
    # (resolvers/rollups/valuesets.py) read by instance, level and a span of starts
    "rollup_buckets": [
        IndexModel(
            [("i", ASCENDING), ("l", ASCENDING), ("t", ASCENDING)], name="i_l_t", unique=True
        )
    ],
    "rollup_values": [IndexModel([("i", ASCENDING)], name="i")],
    "rollup_value_sets": [
        IndexModel(
            [("i", ASCENDING), ("l", ASCENDING), ("t", ASCENDING)], name="i_l_t", unique=True
        )
    ],
}


async def ensure_indexes(db: Database) -> None:
    """Create every index; existing ones with the same definition are left as they are.
    A unique index that documents already there break (two accounts of one name, from
    before the index) is logged and left out; the others are still created."""
    with translate_driver_errors():
        for collection, models in _INDEXES.items():
            for model in models:
                try:
                    await db[collection].create_indexes([model])
                except OperationFailure as exc:
                    if exc.code != _DUPLICATE_KEY:
                        raise
                    name = model.document["name"]
                    _log.error(
                        "index %s.%s not created: documents already there break it (%s); "
                        "rename or remove the duplicates, then restart",
                        collection,
                        name,
                        exc.details.get("errmsg") if exc.details else exc,
                    )
