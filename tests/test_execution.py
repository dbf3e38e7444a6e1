"""The plain-object shortcut answers exactly what graphql-core answers, errors included,
and completes plain objects without graphql-core's per-field steps."""

from __future__ import annotations

from typing import Any

import pytest
import strawberry
from graphql.execution.executor import Executor
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from graph.execution import PlainExecutionContext
from graph.reuse import unchanging


@strawberry.type
class Pair:
    key: str
    count: int


@strawberry.type
class Note:
    text: str
    score: int | None


@strawberry.type
class Point:
    label: str
    pairs: list[Pair]
    notes: list[Note]
    tags: list[str]
    maybe: int | None
    inner: Pair | None
    grid: list[list[int | None]]
    sparse: list[Pair | None]

    @strawberry.field
    def doubled(self) -> int:  # a resolver of its own: not plain
        return self.maybe * 2 if self.maybe is not None else 0


def _points(*, broken: str = "") -> list[Point]:
    points = []
    for k in range(4):
        pairs = [Pair(key=f"k{j}", count=k * j) for j in range(3)]
        points.append(
            Point(
                label=f"p{k}",
                pairs=pairs,
                notes=[Note(text="n", score=None), Note(text="m", score=k)] if k < 3 else [],
                tags=["a", "b"],
                maybe=None if k % 2 else k,
                inner=Pair(key="i", count=k) if k != 3 else None,
                grid=[[k, None], [], [j * k for j in range(k)]],
                sparse=[None, Pair(key="s", count=k)] if k % 2 else [],
            )
        )
    if broken == "null":
        points[2].pairs[1].key = None  # type: ignore[assignment]
    elif broken == "scalar":
        points[1].pairs[0].count = "many"  # type: ignore[assignment]
    elif broken == "list":
        points[3].tags = None  # type: ignore[assignment]
    elif broken == "big":
        points[0].pairs[2].count = 2**40  # past Int's 32 bits: an error
        points[1].notes[0].score = -(2**40)
    elif broken == "deep":  # null inside a list inside a list, past a non-null item
        points[2].sparse = [Pair(key=None, count=1)]  # type: ignore[arg-type]
    elif broken == "loose":  # values graphql-core coerces: True to 1, 7 to "7"
        points[0].pairs[2].count = True
        points[1].pairs[0].key = 7  # type: ignore[assignment]
    return points


@strawberry.type
class Query:
    @strawberry.field
    def points(self, broken: str = "") -> list[Point]:
        return _points(broken=broken)

    @strawberry.field
    def pair(self) -> Pair:
        return Pair(key="only", count=1)


QUERIES = [
    "{ points { label pairs { key count } tags maybe } }",
    "{ points { a: label b: label pairs { __typename k: key count key } inner { count } } }",
    "{ points { ...P } } fragment P on Point { label pairs { ...C } } fragment C on Pair { count }",
    "{ points { label @skip(if: true) pairs @include(if: true) { key } doubled } }",
    '{ points(broken: "null") { label pairs { key count } } }',
    '{ points(broken: "scalar") { pairs { count } } }',
    '{ points(broken: "list") { label tags } }',
    '{ points(broken: "big") { pairs { count } } }',
    '{ points(broken: "big") { notes { score } } }',
    "{ points { notes { text score } n: notes { score } } }",
    '{ points(broken: "loose") { pairs { key count } } }',
    "{ pair { key count __typename } points { __typename } }",
    "{ points { inner { key } grid sparse { key count } } }",
    '{ points(broken: "deep") { label sparse { count key } } }',
    '{ points(broken: "big") { grid pairs { count } } }',
]


def _run(context: type[Any], query: str) -> dict[str, Any]:
    schema = strawberry.Schema(query=Query, execution_context_class=context)
    result = schema.execute_sync(query)
    errors = [(e.message, e.path) for e in result.errors or []]
    return {"data": result.data, "errors": errors}


@pytest.mark.parametrize("query", QUERIES)
def test_the_shortcut_answers_what_graphql_core_answers(query: str) -> None:
    expected = _run(StrawberryGraphQLCoreExecutionContext, query)
    assert _run(PlainExecutionContext, query) == expected
    assert expected["data"] is not None or expected["errors"]


def test_broken_values_are_reported_by_graphql_core() -> None:
    """(So the comparison above covers errors, not only answers.)"""
    found = _run(PlainExecutionContext, QUERIES[4])
    assert found["errors"] and found["errors"][0][1] == ["points", 2, "pairs", 1, "key"]


def test_plain_objects_skip_graphql_core_field_by_field(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    execute_field = Executor.execute_field

    def counted(self: Any, *args: Any) -> Any:
        calls["n"] += 1
        return execute_field(self, *args)

    monkeypatch.setattr(Executor, "execute_field", counted)
    _run(StrawberryGraphQLCoreExecutionContext, QUERIES[0])
    each = calls["n"]
    calls["n"] = 0
    _run(PlainExecutionContext, QUERIES[0])
    assert each == 1 + 4 * (4 + 3 * 2)  # points, and every field below it
    assert calls["n"] == 1  # points only: everything below is plain
    calls["n"] = 0
    _run(PlainExecutionContext, QUERIES[-3])  # nulls and lists of lists: plain too
    assert calls["n"] == 1


async def _seven() -> int:
    return 7


@strawberry.type
class Late:
    count: int


@strawberry.type
class LateQuery:
    @strawberry.field
    def late(self) -> list[Late]:
        return [Late(count=_seven()), Late(count=3)]  # type: ignore[arg-type]


async def test_an_attribute_holding_an_awaitable_is_awaited_by_graphql_core() -> None:
    answers = []
    for context in (StrawberryGraphQLCoreExecutionContext, PlainExecutionContext):
        schema = strawberry.Schema(query=LateQuery, execution_context_class=context)
        result = await schema.execute("{ late { count } }")
        answers.append((result.data, result.errors))
    assert answers[0] == answers[1] == ({"late": [{"count": 7}, {"count": 3}]}, None)


@unchanging
@strawberry.type
class Kept:
    label: str
    pairs: list[Pair]


KEPT = [
    Kept(label=f"k{n}", pairs=[Pair(key="a", count=n), Pair(key="b", count=-n)]) for n in range(3)
]


@strawberry.type
class KeptQuery:
    @strawberry.field
    def kept(self) -> list[Kept]:
        return KEPT

    @strawberry.field
    def copies(self) -> list[Kept]:  # equal objects, made anew each time
        return [Kept(label=k.label, pairs=list(k.pairs)) for k in KEPT]

    @strawberry.field
    def pairs(self) -> list[Pair]:  # the same objects each time, of a type not marked
        return KEPT[0].pairs


KEPT_SCHEMAS = [
    strawberry.Schema(query=KeptQuery, execution_context_class=context)
    for context in (StrawberryGraphQLCoreExecutionContext, PlainExecutionContext)
]


def _both(query: str) -> list[Any]:
    """``query``'s data by the shortcut, checked against graphql-core's."""
    answers = []
    for schema in KEPT_SCHEMAS:
        result = schema.execute_sync(query)
        assert result.errors is None and result.data is not None
        answers.append(result.data)
    assert answers[0] == answers[1]
    [data] = answers[1].values()
    return data  # type: ignore[no-any-return]


def test_an_unchanging_object_answered_again_is_completed_once() -> None:
    query = "{ kept { label pairs { key count } } }"
    first, again = _both(query), _both(query)
    assert all(a is b for a, b in zip(first, again, strict=True))


def test_another_selection_of_an_unchanging_object_is_completed_for_itself() -> None:
    first = _both("{ kept { label pairs { key count } } }")
    other = _both("{ kept { pairs { n: count } label __typename } }")
    assert other[1] == {"pairs": [{"n": 1}, {"n": -1}], "label": "k1", "__typename": "Kept"}
    assert _both("{ kept { label pairs { key count } } }")[1] is first[1]


def test_only_the_same_objects_of_unchanging_types_are_answered_again() -> None:
    for query in ("{ copies { label pairs { key count } } }", "{ pairs { key count } }"):
        first, again = _both(query), _both(query)
        assert not any(a is b for a, b in zip(first, again, strict=True))
