"""Account names are unique: operators pick accounts by name."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from resolvers import Database, admin, ensure_indexes
from resolvers.admin import Created
from resolvers.errors import BadUserInput
from tests.factories import NOW


async def test_an_account_created_between_the_look_up_and_the_insert_is_refused(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process creates the name after this one looked for it and found none: the
    unique index refuses the second insert, as clearly as the look-up would have."""
    insert = admin.insert_account

    async def another_process_first(**kwargs: Any) -> Created:
        await insert(db=kwargs["db"], name=kwargs["name"], now=kwargs["now"])
        return await insert(**kwargs)

    monkeypatch.setattr(admin, "insert_account", another_process_first)
    with pytest.raises(BadUserInput, match='An account named "Acme" already exists'):
        await admin.create_account(db=db, name="Acme", now=NOW)
    assert await db.accounts.count_documents({"name": "Acme"}) == 1


async def test_accounts_of_one_name_from_before_leave_that_index_out_and_say_so(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A database from before the index may hold two accounts of one name: the service
    still starts with every other index, and the log names the one left out."""
    await db.accounts.drop()
    await db.instances.drop()
    await db.accounts.insert_many(
        [{"name": "Twin", "tokenHash": "a"}, {"name": "Twin", "tokenHash": "b"}]
    )
    with caplog.at_level(logging.ERROR, logger="resolvers.indexes"):
        await ensure_indexes(db)
    accounts = {index["name"] async for index in await db.accounts.list_indexes()}
    instances = {index["name"] async for index in await db.instances.list_indexes()}
    assert "tokenHash" in accounts and "name" not in accounts
    assert {"tokenHash", "accountId_name"} <= instances  # created after the one left out
    assert "index accounts.name not created" in caplog.text
