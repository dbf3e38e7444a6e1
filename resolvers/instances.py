"""Which instances a request names, checked against what the caller may see."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument

from resolvers.db import Database, translate_driver_errors
from resolvers.errors import BadUserInput, Forbidden, NotFound
from resolvers.tokens import AccountCaller, Caller, InstanceCaller

__all__ = [
    "MAX_NAMES",
    "MAX_NAME_LENGTH",
    "InstanceRef",
    "Selection",
    "ignores_group_messages",
    "normalize_names",
    "select_instances",
    "update_instance_settings",
]

MAX_NAMES = 100
MAX_NAME_LENGTH = 128

_PROJECTION = {"_id": 1, "name": 1, "settings.ignoreGroupMessages": 1}


@dataclass(frozen=True, slots=True)
class InstanceRef:
    id: ObjectId
    name: str
    ignore_group_messages: bool


@dataclass(frozen=True, slots=True)
class Selection:
    """The instances to sum, and the label the client sees (names as given, comma-joined)."""

    label: str
    instances: tuple[InstanceRef, ...]


def normalize_names(names: Sequence[str]) -> list[str]:
    """Trim each name and drop empty ones; reject an empty, oversized or too long list."""
    given = [name.strip() for name in names if name.strip()]
    if not given:
        raise BadUserInput("Name at least one instance.")
    if len(given) > MAX_NAMES:
        raise BadUserInput(f"At most {MAX_NAMES} instance names per request, got {len(given)}.")
    for name in given:
        if len(name) > MAX_NAME_LENGTH:
            raise BadUserInput(
                f"Instance names are at most {MAX_NAME_LENGTH} characters, got one of {len(name)}."
            )
    return given


async def select_instances(
    *, db: Database, caller: Caller, names: Sequence[str] | None
) -> Selection:
    """Resolve ``names`` (None = all the caller can see) to instances the caller may read."""
    if names is None:
        refs = await _visible_instances(db=db, caller=caller)
        return Selection(label=",".join(ref.name for ref in refs), instances=refs)
    given = normalize_names(names)
    wanted = list(dict.fromkeys(given))
    if isinstance(caller, InstanceCaller):
        _check_own_instance(caller=caller, wanted=wanted)
    refs = await _named_instances(db=db, account_id=caller.account_id, wanted=wanted)
    return Selection(label=",".join(given), instances=refs)


def _check_own_instance(*, caller: InstanceCaller, wanted: list[str]) -> None:
    others = [name for name in wanted if name != caller.instance_name]
    if others:
        raise Forbidden(
            f'This instance token reads only instance "{caller.instance_name}", not "{others[0]}".'
        )


async def _visible_instances(*, db: Database, caller: Caller) -> tuple[InstanceRef, ...]:
    query: dict[str, Any] = (
        {"_id": caller.instance_id}
        if isinstance(caller, InstanceCaller)
        else {"accountId": caller.account_id}
    )
    with translate_driver_errors():
        docs = await db.instances.find(query, _PROJECTION).sort("name", 1).to_list()
    return tuple(_to_ref(doc) for doc in docs)


async def _named_instances(
    *, db: Database, account_id: ObjectId, wanted: list[str]
) -> tuple[InstanceRef, ...]:
    query = {"accountId": account_id, "name": {"$in": wanted}}
    with translate_driver_errors():
        docs = await db.instances.find(query, _PROJECTION).to_list()
    found = {doc["name"]: _to_ref(doc) for doc in docs}
    missing = [name for name in wanted if name not in found]
    if missing:
        raise _not_found(missing)
    return tuple(found[name] for name in wanted)


def _not_found(missing: Sequence[str]) -> NotFound:
    """The same words whether a name is in no account or in another one."""
    listed = ", ".join(f'"{name}"' for name in missing)
    noun = "Instance" if len(missing) == 1 else "Instances"
    return NotFound(f"{noun} not found: {listed}.")


async def update_instance_settings(
    *, db: Database, caller: Caller, name: str, ignore_group_messages: bool
) -> InstanceRef:
    """Set ``settings.ignoreGroupMessages`` of the instance ``name`` (trimmed) and return
    it as changed. An account token may change any instance of its account (another
    account's is ``NotFound``, worded as for a missing one); an instance token only its
    own (``Forbidden``, as when it reads another). Metrics read the setting on every
    request, so the next one counts with it."""
    [wanted] = normalize_names([name])
    if isinstance(caller, InstanceCaller):
        _check_own_instance(caller=caller, wanted=[wanted])
    query = _owned_by(caller, name=wanted)
    update = {"$set": {"settings.ignoreGroupMessages": ignore_group_messages}}
    with translate_driver_errors():
        doc = await db.instances.find_one_and_update(
            query, update, projection=_PROJECTION, return_document=ReturnDocument.AFTER
        )
    if doc is None:
        raise _not_found([wanted])
    return _to_ref(doc)


def _owned_by(caller: Caller, *, name: str) -> dict[str, Any]:
    """The filter of the instance ``name`` among those ``caller`` may change."""
    if isinstance(caller, AccountCaller):
        return {"accountId": caller.account_id, "name": name}
    return {"_id": caller.instance_id, "accountId": caller.account_id, "name": name}


def ignores_group_messages(doc: dict[str, Any]) -> bool:
    """``settings.ignoreGroupMessages`` of an instance document; anything but true is false."""
    settings = doc.get("settings")
    return isinstance(settings, dict) and settings.get("ignoreGroupMessages") is True


def _to_ref(doc: dict[str, Any]) -> InstanceRef:
    return InstanceRef(
        id=doc["_id"], name=doc["name"], ignore_group_messages=ignores_group_messages(doc)
    )
