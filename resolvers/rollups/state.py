"""The consumer's position and build progress: the ``rollup_state`` document.

``_id: "consumer"`` holds the resume token, ``appliedAt`` (a cluster time: every message
write at or before it is in the rollups of every built instance), ``status``
(``building`` or ``ready``), the lease holder that wrote it, the layout version, and
while building, which keys are built and ``flushing``: the instance whose reads are
being written (in parts, outside a transaction: a process that finds it set starts
that instance over).

A key is one instance and the timestamp of a dated message (to the millisecond), or the
instance's undated messages. A build first lists the instances (every other instance is
then built: it has no messages); then per instance it surveys its history (a few narrow
reads that estimate how many messages it has, for the percentage), reads its undated
messages, and sweeps its dated ones outward from a pivot instant in spans of time: up
to the last message, then down to the first. The built part of an instance is therefore
an interval of instants plus a few flags (``InstanceProgress``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from bson import ObjectId, Timestamp
from pymongo.asynchronous.client_session import AsyncClientSession

from resolvers.db import Database, update_unrecorded
from resolvers.rollups.contribution import dated, owner

__all__ = [
    "SCHEMA_VERSION",
    "STATE_COLLECTION",
    "Build",
    "InstanceProgress",
    "MessageKey",
    "RollupState",
    "Status",
    "message_key",
    "read_state",
    "refresh_applied",
    "restart_instance",
    "save_state",
    "start_build",
]

STATE_COLLECTION = "rollup_state"
SCHEMA_VERSION = 3
"""Bumped when the rollup layout changes: a stored state of another version is rebuilt."""

_ID = "consumer"

Status = Literal["building", "ready"]
MessageKey = tuple[ObjectId, datetime | None]
"""(instance, timestamp to the millisecond), the timestamp None for undated messages."""


def message_key(doc: Mapping[str, Any] | None) -> MessageKey | None:
    """The key a message document counts in; None when it counts for no instance."""
    instance = None if doc is None else owner(doc)
    if doc is None or instance is None:
        return None
    return instance, dated(doc)


@dataclass(frozen=True, slots=True)
class InstanceProgress:
    """The built keys of one instance.

    ``low``/``high``: the dated messages in ``[low, high)`` are built (None: the sweep has
    not started); ``below``/``above``: so are all before ``low`` / from ``high`` on;
    ``undated``: its undated key is built. ``read`` messages were read so far, of about
    ``estimate`` (the survey's guess, only for the percentage).
    """

    low: datetime | None = None
    high: datetime | None = None
    below: bool = False
    above: bool = False
    undated: bool = False
    read: int = 0
    estimate: int = 0

    def built(self, moment: datetime | None) -> bool:
        if moment is None:
            return self.undated
        if self.low is None or self.high is None:
            return False
        if moment < self.low:
            return self.below
        return self.above if moment >= self.high else True

    @property
    def done(self) -> bool:
        return self.low is not None and self.undated and self.below and self.above

    def fraction(self) -> float:
        """How much of the instance is built, between 0 and 1 (by messages read against
        the estimate; below 1 until it is done)."""
        if self.done:
            return 1.0
        if self.low is None or self.estimate <= 0:
            return 0.0
        return min(self.read / self.estimate, 0.99)


@dataclass(frozen=True, slots=True)
class Build:
    """Which keys are built. ``listed`` None: the instances are not listed yet."""

    listed: tuple[ObjectId, ...] | None = None
    progress: Mapping[ObjectId, InstanceProgress] = field(default_factory=dict)
    _members: frozenset[ObjectId] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_members", frozenset(self.listed or ()))

    def built(self, key: MessageKey) -> bool:
        instance, day = key
        if self.listed is None:
            return False
        if instance not in self._members:
            return True
        progress = self.progress.get(instance)
        return progress is not None and progress.built(day)

    def instance_ready(self, instance: ObjectId) -> bool:
        if self.listed is None:
            return False
        progress = self.progress.get(instance)
        return instance not in self._members or (progress is not None and progress.done)

    def next_instance(self) -> ObjectId | None:
        """The first listed instance that is not built yet (None: all are)."""
        for instance in self.listed or ():
            progress = self.progress.get(instance)
            if progress is None or not progress.done:
                return instance
        return None

    @property
    def done(self) -> bool:
        return self.listed is not None and self.next_instance() is None

    def percent(self) -> float:
        if self.listed is None:
            return 0.0
        if not self.listed:
            return 100.0
        parts = (self.progress.get(i, InstanceProgress()).fraction() for i in self.listed)
        return round(100.0 * sum(parts) / len(self.listed), 1)

    def with_progress(self, instance: ObjectId, progress: InstanceProgress) -> Build:
        return replace(self, progress={**self.progress, instance: progress})


@dataclass(frozen=True, slots=True)
class RollupState:
    """What ``rollup_state`` says; ``build`` None = nothing built (a rebuild is due)."""

    status: Status
    token: Mapping[str, Any] | None
    applied_at: Timestamp | None
    holder: str | None
    build: Build | None
    schema: int = SCHEMA_VERSION
    generation: int = 0
    """Counts rebuilds: rollups read under one generation were not dropped meanwhile."""
    flushing: ObjectId | None = None
    """An instance whose folded reads were being written when this was saved."""

    def instance_ready(self, instance: ObjectId) -> bool:
        """Whether the rollups of ``instance`` are complete (up to ``applied_at``)."""
        if self.schema != SCHEMA_VERSION:
            return False
        if self.status == "ready":
            return True
        return self.build is not None and self.build.instance_ready(instance)

    def ready_instances(self, instances: Collection[ObjectId]) -> frozenset[ObjectId]:
        return frozenset(i for i in instances if self.instance_ready(i))

    def percent(self) -> float:
        if self.status == "ready":
            return 100.0
        return 0.0 if self.build is None else self.build.percent()


# --- persistence ---------------------------------------------------------------------


async def read_state(
    *, db: Database, session: AsyncClientSession | None = None
) -> RollupState | None:
    doc = await db[STATE_COLLECTION].find_one({"_id": _ID}, session=session)
    return None if doc is None else _state_from(doc)


async def start_build(*, db: Database, holder: str, session: AsyncClientSession) -> None:
    """Forget every position and build step and count a new generation: the rollups
    are about to be dropped and built again (``appliedAt`` is kept: it only grows)."""
    await db[STATE_COLLECTION].update_one(
        {"_id": _ID},
        {
            "$set": {
                "schema": SCHEMA_VERSION,
                "status": "building",
                "holder": holder,
                "token": None,
                "build": {"listed": None, "progress": {}},
                "flushing": None,
            },
            "$inc": {"generation": 1},
        },
        upsert=True,
        session=session,
    )


async def save_state(
    *,
    db: Database,
    holder: str,
    token: Mapping[str, Any] | None,
    applied_at: Timestamp | None,
    build: Build | None,
    saved: Build | None,
    session: AsyncClientSession,
    mark: bool = False,
    flushing: ObjectId | None = None,
) -> None:
    """Record a committed batch: the token after it, the applied position (if it moved)
    and the build progress (None: the build is done, the rollups are ready). Only the
    parts of ``build`` that differ from ``saved`` (what the document holds) are written.
    With ``mark``, ``flushing`` is the instance now being written (None: none)."""
    fields: dict[str, Any] = {"schema": SCHEMA_VERSION, "holder": holder, "token": token}
    if mark:
        fields["flushing"] = flushing
    if build is None:
        fields.update(status="ready", build=None)
    else:
        fields.update(status="building", **_build_fields(build, saved))
    update: dict[str, Any] = {"$set": fields}
    if applied_at is not None:
        update["$max"] = {"appliedAt": applied_at}
    await db[STATE_COLLECTION].update_one({"_id": _ID}, update, upsert=True, session=session)


async def refresh_applied(
    *, db: Database, holder: str, applied_at: Timestamp, token: Mapping[str, Any] | None
) -> bool:
    """While idle (everything read is applied): move ``appliedAt`` forward for other
    processes and keep the token recent, so a restart after a quiet spell does not ask
    for history the oplog no longer has. False when the state is no longer ours."""
    update: dict[str, Any] = {"$max": {"appliedAt": applied_at}}
    if token is not None:
        update["$set"] = {"token": token}
    result = await update_unrecorded(db[STATE_COLLECTION], {"_id": _ID, "holder": holder}, update)
    return result.matched_count == 1


async def restart_instance(
    *, db: Database, instance: ObjectId, session: AsyncClientSession
) -> bool:
    """Forget the progress of ``instance`` and the ``flushing`` mark (its rollups must be
    dropped first): it is built again from the start. False when it was not marked."""
    result = await db[STATE_COLLECTION].update_one(
        {"_id": _ID, "flushing": instance},
        {"$unset": {f"build.progress.{instance}": ""}, "$set": {"flushing": None}},
        session=session,
    )
    return result.matched_count == 1


def _build_fields(build: Build, saved: Build | None) -> dict[str, Any]:
    if saved is None:
        return {"build": _build_doc(build)}
    fields: dict[str, Any] = {}
    if build.listed != saved.listed:
        fields["build.listed"] = None if build.listed is None else list(build.listed)
    for instance, progress in build.progress.items():
        if saved.progress.get(instance) != progress:
            fields[f"build.progress.{instance}"] = _progress_doc(progress)
    return fields


def _build_doc(build: Build) -> dict[str, Any]:
    return {
        "listed": None if build.listed is None else list(build.listed),
        "progress": {str(i): _progress_doc(p) for i, p in build.progress.items()},
    }


def _progress_doc(progress: InstanceProgress) -> dict[str, Any]:
    return {
        "low": progress.low,
        "high": progress.high,
        "below": progress.below,
        "above": progress.above,
        "undated": progress.undated,
        "read": progress.read,
        "estimate": progress.estimate,
    }


def _state_from(doc: Mapping[str, Any]) -> RollupState:
    build = doc.get("build")
    return RollupState(
        status="ready" if doc.get("status") == "ready" else "building",
        token=doc.get("token"),
        applied_at=doc.get("appliedAt"),
        holder=doc.get("holder"),
        build=None if not isinstance(build, Mapping) else _build_from(build),
        schema=int(doc.get("schema", 0)),
        generation=int(doc.get("generation", 0)),
        flushing=doc.get("flushing"),
    )


def _build_from(doc: Mapping[str, Any]) -> Build:
    listed = doc.get("listed")
    progress = doc.get("progress") or {}
    return Build(
        listed=None if listed is None else tuple(listed),
        progress={ObjectId(key): _progress_from(value) for key, value in progress.items()},
    )


def _progress_from(doc: Mapping[str, Any]) -> InstanceProgress:
    return InstanceProgress(
        low=doc.get("low"),
        high=doc.get("high"),
        below=bool(doc.get("below")),
        above=bool(doc.get("above")),
        undated=bool(doc.get("undated")),
        read=int(doc.get("read", 0)),
        estimate=int(doc.get("estimate", 0)),
    )
