"""What the watermark mode keeps beside the rollups: the ledger's form of a message, and
its part of the ``rollup_state`` document (``watermark.py`` uses them).

``rollup_state`` (``_id: "consumer"``, shared with the change-stream consumer) holds, for
this mode: ``source: "watermark"``; ``watermark``; ``seq`` and ``dirty`` (a batch is
being written while ``seq`` is odd, to the instances in ``dirty``); ``wbuild``, the build
in progress (None once built); and the fields every reader uses: ``status``,
``generation``, ``schema``, ``holder``. It leaves ``token`` and ``build`` empty, so a
change-stream consumer that finds these rollups builds its own.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from resolvers.db import Database
from resolvers.rollups.contribution import dated, owner
from resolvers.rollups.keys import Level, floor_to
from resolvers.rollups.state import SCHEMA_VERSION, STATE_COLLECTION

__all__ = [
    "COUNTED_FIELDS",
    "LEDGER",
    "SOURCE",
    "STATE_ID",
    "DayKey",
    "InstanceBuild",
    "WatermarkBuild",
    "WatermarkState",
    "counted",
    "day_key",
    "read_watermark_state",
]

LEDGER = "rollup_ledger"
SOURCE = "watermark"
"""``rollup_state.source`` of rollups this mode keeps (the consumer leaves it unset)."""
STATE_ID = {"_id": "consumer"}
"""The one ``rollup_state`` document."""

COUNTED_FIELDS = (
    "instanceId",
    "isGroup",
    "fromMe",
    "sender",
    "chatId",
    "type",
    "status",
    "media",
    "timestamp",
)

DayKey = tuple[ObjectId, datetime | None]
"""(instance, UTC day), the day None for undated messages."""


def counted(doc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The fields of ``doc`` the rollups read (``contribution`` gives the same for both);
    None when it counts for no instance."""
    if doc is None or owner(doc) is None:
        return None
    kept = {field: doc[field] for field in COUNTED_FIELDS if field in doc and field != "media"}
    media = doc.get("media")
    if isinstance(media, Mapping):
        kept["media"] = {"type": media["type"]} if "type" in media else {}
    return kept


def day_key(doc: Mapping[str, Any] | None) -> DayKey | None:
    """The instance and UTC day a message counts in; None when it counts for none."""
    instance = None if doc is None else owner(doc)
    if doc is None or instance is None:
        return None
    moment = dated(doc)
    return instance, None if moment is None else floor_to(moment, Level.DAY)


@dataclass(frozen=True, slots=True)
class InstanceBuild:
    """The instance being built: its undated messages, then its days ``low`` to ``high``
    (its first and last, once ``ranged``), read up to ``next``."""

    instance: ObjectId
    undated: bool = False
    ranged: bool = False
    low: datetime | None = None
    high: datetime | None = None
    next: datetime | None = None

    @property
    def done(self) -> bool:
        days_done = self.low is None or self.high is None or (self.next or self.low) > self.high
        return self.undated and self.ranged and days_done

    def fraction(self) -> float:
        if not self.ranged or self.low is None or self.high is None:
            return 0.0
        total = (self.high - self.low) / Level.DAY.width + 1
        return min(((self.next or self.low) - self.low) / Level.DAY.width / total, 1.0)


@dataclass(frozen=True, slots=True)
class WatermarkBuild:
    """The instances ``listed`` (those with messages when the build began) are built in
    order; those before ``position`` are done. Every other instance is built (its
    messages, if any, came after the listing, through the polls)."""

    listed: tuple[ObjectId, ...] | None = None
    position: int = 0
    current: InstanceBuild | None = None

    def pending(self) -> frozenset[ObjectId]:
        return frozenset(self.listed[self.position :]) if self.listed is not None else frozenset()

    def ready(self, instances: Iterable[ObjectId]) -> frozenset[ObjectId]:
        if self.listed is None:
            return frozenset()
        return frozenset(instances) - self.pending()

    def percent(self) -> float:
        if self.listed is None:
            return 0.0
        if not self.listed:
            return 100.0
        part = self.current.fraction() if self.current is not None else 0.0
        return round(100.0 * (self.position + part) / len(self.listed), 1)

    def again(self, instances: Collection[ObjectId]) -> WatermarkBuild:
        """The same build, with ``instances`` to be built (again)."""
        if self.listed is None:
            return self  # the listing to come lists every instance
        done = [i for i in self.listed[: self.position] if i not in instances]
        rest = list(self.listed[self.position :])
        redo = sorted(i for i in instances if i not in rest)
        current = self.current
        if current is not None and current.instance in instances:
            current = None
        return WatermarkBuild(tuple(done + rest + redo), len(done), current)

    def as_doc(self) -> dict[str, Any]:
        current = self.current
        return {
            "listed": None if self.listed is None else list(self.listed),
            "position": self.position,
            "current": None
            if current is None
            else {
                "instance": current.instance,
                "undated": current.undated,
                "ranged": current.ranged,
                "low": current.low,
                "high": current.high,
                "next": current.next,
            },
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> WatermarkBuild:
        listed, current = doc.get("listed"), doc.get("current")
        return cls(
            listed=None if listed is None else tuple(listed),
            position=int(doc.get("position", 0)),
            current=None if not isinstance(current, Mapping) else _instance_build(current),
        )


def _instance_build(doc: Mapping[str, Any]) -> InstanceBuild:
    return InstanceBuild(
        instance=doc["instance"],
        undated=bool(doc.get("undated")),
        ranged=bool(doc.get("ranged")),
        low=doc.get("low"),
        high=doc.get("high"),
        next=doc.get("next"),
    )


@dataclass(frozen=True, slots=True)
class WatermarkState:
    """This mode's view of ``rollup_state``."""

    source: str | None
    watermark: datetime | None
    """Every write acknowledged before ``watermark`` (the leader's clock) whose
    ``updatedAt`` is at or after ``watermark - overlap`` is in the rollups."""
    seq: int
    dirty: frozenset[ObjectId]
    """While ``seq`` is odd: the instances a batch is being written to."""
    build: WatermarkBuild | None
    generation: int
    schema: int
    holder: str | None

    @property
    def writing(self) -> bool:
        return self.seq % 2 == 1

    @property
    def ours(self) -> bool:
        """Rollups this mode keeps, in the current layout."""
        return self.source == SOURCE and self.schema == SCHEMA_VERSION

    def usable(self, instances: Iterable[ObjectId]) -> frozenset[ObjectId]:
        """Those of ``instances`` that are built and no batch is half written to."""
        if not self.ours:
            return frozenset()
        found = frozenset(instances) if self.build is None else self.build.ready(instances)
        return found - self.dirty if self.writing else found

    def percent(self) -> float:
        return 100.0 if self.build is None else self.build.percent()

    def with_build(self, build: WatermarkBuild | None) -> WatermarkState:
        return replace(self, build=build)


async def read_watermark_state(
    *, db: Database, session: AsyncClientSession | None = None
) -> WatermarkState | None:
    doc = await db[STATE_COLLECTION].find_one(STATE_ID, session=session)
    if doc is None:
        return None
    build = doc.get("wbuild")
    return WatermarkState(
        source=doc.get("source"),
        watermark=doc.get("watermark"),
        seq=int(doc.get("seq", 0)),
        dirty=frozenset(doc.get("dirty") or ()),
        build=WatermarkBuild.from_doc(build) if isinstance(build, Mapping) else None,
        generation=int(doc.get("generation", 0)),
        schema=int(doc.get("schema", 0)),
        holder=doc.get("holder"),
    )
