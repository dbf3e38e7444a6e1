"""Change events on ``messages`` as (before, after) pairs of documents (pure).

An insert has no before, a delete no after; an update's after is its pre-image with the
event's ``updateDescription`` applied, because SecantusDB's post-images are looked up
at read time and may already show a later write. An event that cannot say what a
message was or became (no pre-image, a dropped or renamed collection, an invalidated
stream, a description that does not fit its pre-image) raises ``RebuildNeeded``: the
rollups can no longer be kept exact by deltas.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DocumentChange",
    "RebuildNeeded",
    "apply_update_description",
    "decode_event",
]

Document = dict[str, Any]
Segment = str | int

# Events of ``showExpandedEvents`` that change no document of the collection.
_IGNORED = frozenset(
    {
        "create",
        "createIndexes",
        "dropIndexes",
        "modify",
        "shardCollection",
        "reshardCollection",
        "refineCollectionShardKey",
    }
)


class RebuildNeeded(Exception):
    """The change stream can no longer tell how the rollups changed."""


@dataclass(frozen=True, slots=True)
class DocumentChange:
    """One message went from ``before`` to ``after`` (None = absent)."""

    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None


def decode_event(event: Mapping[str, Any]) -> DocumentChange | None:
    """The change a stream event made, or None when it changed no document."""
    kind = event.get("operationType")
    if kind == "insert":
        return DocumentChange(before=None, after=_full_document(event))
    if kind == "update":
        before = _pre_image(event)
        description = event.get("updateDescription")
        if not isinstance(description, Mapping):
            raise RebuildNeeded("an update event without updateDescription")
        return DocumentChange(before=before, after=apply_update_description(before, description))
    if kind == "replace":
        return DocumentChange(before=_pre_image(event), after=_full_document(event))
    if kind == "delete":
        return DocumentChange(before=_pre_image(event), after=None)
    if kind in _IGNORED:
        return None
    raise RebuildNeeded(f"a {kind!r} event on the messages collection")


def _full_document(event: Mapping[str, Any]) -> Mapping[str, Any]:
    document = event.get("fullDocument")
    if not isinstance(document, Mapping):
        raise RebuildNeeded(f"a {event.get('operationType')} event without its document")
    return document


def _pre_image(event: Mapping[str, Any]) -> Mapping[str, Any]:
    document = event.get("fullDocumentBeforeChange")
    if not isinstance(document, Mapping):
        raise RebuildNeeded(
            f"a {event.get('operationType')} event without its pre-image "
            "(changeStreamPreAndPostImages off, or the image expired)"
        )
    return document


def apply_update_description(
    document: Mapping[str, Any], description: Mapping[str, Any]
) -> Document:
    """``document`` after the update that ``description`` reports (a new document).

    Truncated arrays first, then removed fields, then updated fields, as MongoDB's
    oplog diff applies them. A path's segments come from ``disambiguatedPaths`` when
    the event has them, otherwise from splitting on dots; a numeric segment indexes an
    array and names a field of a document.
    """
    result: Document = copy.deepcopy(dict(document))
    paths = _disambiguated(description.get("disambiguatedPaths"))
    for truncation in description.get("truncatedArrays") or ():
        _truncate(result, _segments(str(truncation["field"]), paths), int(truncation["newSize"]))
    for path in description.get("removedFields") or ():
        _remove(result, _segments(str(path), paths))
    for path, value in (description.get("updatedFields") or {}).items():
        _set(result, _segments(str(path), paths), copy.deepcopy(value))
    return result


def _disambiguated(value: Any) -> Mapping[str, Sequence[Segment]]:
    return value if isinstance(value, Mapping) else {}


def _segments(path: str, disambiguated: Mapping[str, Sequence[Segment]]) -> list[Segment]:
    known = disambiguated.get(path)
    return list(known) if known is not None else list(path.split("."))


def _set(document: Document, segments: list[Segment], value: Any) -> None:
    parent = _walk(document, segments[:-1], create=True)
    last = segments[-1]
    if isinstance(parent, list):
        index = _index(last)
        parent.extend([None] * (index + 1 - len(parent)))
        parent[index] = value
    elif isinstance(parent, dict):
        parent[str(last)] = value
    else:
        raise _misfit(segments)


def _remove(document: Document, segments: list[Segment]) -> None:
    parent = _walk(document, segments[:-1], create=False)
    last = segments[-1]
    if isinstance(parent, dict):
        parent.pop(str(last), None)
    elif isinstance(parent, list):
        index = _index(last)
        if index < len(parent):
            parent[index] = None  # $unset of an array element leaves a null
    elif parent is not None:
        raise _misfit(segments)


def _truncate(document: Document, segments: list[Segment], size: int) -> None:
    array = _walk(document, segments, create=False)
    if not isinstance(array, list):
        raise _misfit(segments)
    del array[size:]


def _walk(document: Document, segments: list[Segment], *, create: bool) -> Any:
    """The container at ``segments``; with ``create``, missing documents are made on the
    way (None when a segment is missing and ``create`` is off)."""
    node: Any = document
    for position, segment in enumerate(segments):
        child = _child(node, segment)
        if child is None and create and not isinstance(node, list | dict):
            raise _misfit(segments[: position + 1])
        if child is None and create:
            child = {}
            _set_child(node, segment, child)
        if child is None:
            return None
        node = child
    return node


def _child(node: Any, segment: Segment) -> Any:
    if isinstance(node, dict):
        return node.get(str(segment))
    if isinstance(node, list):
        index = _index(segment)
        return node[index] if index < len(node) else None
    return None


def _set_child(node: Any, segment: Segment, child: Any) -> None:
    if isinstance(node, dict):
        node[str(segment)] = child
        return
    index = _index(segment)
    node.extend([None] * (index + 1 - len(node)))
    node[index] = child


def _index(segment: Segment) -> int:
    if isinstance(segment, int):
        return segment
    if not segment.isdigit():
        raise RebuildNeeded(f"the update description names array element {segment!r}")
    return int(segment)


def _misfit(segments: Sequence[Segment]) -> RebuildNeeded:
    path = ".".join(str(segment) for segment in segments)
    return RebuildNeeded(f"the update description does not fit its pre-image at {path!r}")
