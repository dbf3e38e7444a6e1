"""Indexes the queries need, created idempotently at start-up."""

from __future__ import annotations

from pymongo import ASCENDING, IndexModel

from resolvers.db import Database, translate_driver_errors

__all__ = ["ensure_indexes"]

_INDEXES = {
    "accounts": [IndexModel([("tokenHash", ASCENDING)], name="tokenHash", unique=True)],
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
    """Create every index; existing ones with the same definition are left as they are."""
    with translate_driver_errors():
        for collection, models in _INDEXES.items():
            await db[collection].create_indexes(models)
