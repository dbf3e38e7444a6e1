"""Reading ``explain`` output and slicing the metrics pipeline (pure).

``explain`` output differs between servers and versions: MongoDB puts the read stage's
``executionStats`` under ``stages[0].$cursor`` (or at the top when the whole pipeline
runs in the query engine, or once per shard); SecantusDB mirrors the first shape. So
the figures are dug out wherever they are rather than read from a fixed path, counted
once per server.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = [
    "cursor_millis",
    "docs_examined",
    "find_values",
    "keys_examined",
    "plan_stages",
    "split_pipeline",
]

READ_SLICE = "read: $match + fetch (then $count)"


def find_values(document: Any, key: str) -> Iterator[Any]:
    """Every value stored under ``key`` anywhere in nested mappings and lists."""
    if isinstance(document, Mapping):
        for name, value in document.items():
            if name == key:
                yield value
            yield from find_values(value, key)
    elif isinstance(document, list | tuple):
        for item in document:
            yield from find_values(item, key)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _examined(document: Any, key: str) -> int | None:
    """``key`` as one server reports it, summed over shards.

    One server may repeat a figure (SecantusDB copies the read stage's ``executionStats``
    to the top level), so outside a ``shards`` mapping the largest value is taken; each
    shard under ``shards`` counts once."""
    found: list[int] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for name, value in node.items():
                if name == "shards" and isinstance(value, Mapping):
                    per_shard = [_examined(shard, key) for shard in value.values()]
                    counted = [n for n in per_shard if n is not None]
                    if counted:
                        found.append(sum(counted))
                elif name == key and _number(value):
                    found.append(int(value))
                else:
                    walk(value)
        elif isinstance(node, list | tuple):
            for item in node:
                walk(item)

    walk(document)
    return max(found) if found else None


def docs_examined(explain: Mapping[str, Any]) -> int | None:
    """``totalDocsExamined`` of the request (None if the server does not say)."""
    return _examined(explain, "totalDocsExamined")


def keys_examined(explain: Mapping[str, Any]) -> int | None:
    return _examined(explain, "totalKeysExamined")


def cursor_millis(explain: Mapping[str, Any]) -> int | None:
    """The longest ``executionTimeMillis`` reported (the read stage's own time)."""
    numbers = [int(v) for v in find_values(explain, "executionTimeMillis") if _number(v)]
    return max(numbers) if numbers else None


def plan_stages(explain: Mapping[str, Any]) -> tuple[str, ...]:
    """The distinct plan stage names of every winning plan, outermost first (FETCH, IXSCAN,
    COLLSCAN...)."""
    stages: dict[str, None] = {}
    for plan in find_values(explain, "winningPlan"):
        for stage in find_values(plan, "stage"):
            if isinstance(stage, str):
                stages.setdefault(stage)
    return tuple(stages)


def split_pipeline(pipeline: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Any]]]:
    """Runnable slices of a ``$match`` … ``$facet`` pipeline: the read alone (counted, so no
    documents travel), then each facet alone after the read. Empty without a ``$facet``."""
    for index, stage in enumerate(pipeline):
        if "$facet" in stage:
            prefix = list(pipeline[:index])
            facets: Mapping[str, Any] = stage["$facet"]
            break
    else:
        return []
    slices: list[tuple[str, list[Any]]] = [(READ_SLICE, [*prefix, {"$count": "n"}])]
    slices += [
        (f"$facet {name}", [*prefix, {"$facet": {name: sub}}]) for name, sub in facets.items()
    ]
    return slices
