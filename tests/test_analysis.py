"""The document analysis: counts through fragments, in one pass, cycles refused."""

from __future__ import annotations

import time

import pytest
from graphql import OperationType, get_introspection_query, parse

from graph.analysis import Analysis, FragmentCycle, analyze, operation_cost


def _bomb(levels: int, leaf: str) -> str:
    """A chain of fragments, each spreading the next twice; the last one holds ``leaf``."""
    chain = " ".join(f"fragment F{n} on Query {{ ...F{n + 1} ...F{n + 1} }}" for n in range(levels))
    return f"{{ ...F0 }} {chain} fragment F{levels} on Query {{ {leaf} }}"


def _analyze(source: str, **kwargs: object) -> Analysis:
    analysis = analyze(parse(source), **kwargs)  # type: ignore[arg-type]
    assert analysis is not None
    return analysis


def test_plain_query_is_counted_field_by_field() -> None:
    analysis = _analyze("{ metrics { totalMessages messagesByType { key count } } }")
    assert analysis == Analysis(
        operation=OperationType.QUERY,
        aliases=0,
        depth=3,
        fields=5,
        computations=1,
        introspection=False,
    )


def test_each_alias_of_metrics_is_a_computation() -> None:
    analysis = _analyze(
        "{ metrics { totalMessages } a: metrics { uniqueChats } b: metrics { t: totalMessages } }"
    )
    assert (analysis.aliases, analysis.computations) == (3, 3)


def test_a_chain_of_forty_doubling_fragments_is_counted_instantly() -> None:
    document = parse(_bomb(40, "m: metrics { totalMessages }"))
    started = time.monotonic()
    analysis = analyze(document)
    assert time.monotonic() - started < 0.5
    assert analysis is not None
    assert analysis.aliases == 2**40
    assert analysis.computations == 2**40
    assert analysis.fields == 2 * 2**40  # metrics and totalMessages at each of 2**40 spreads
    assert analysis.depth == 2


def test_fragments_add_their_depth_where_they_are_spread() -> None:
    source = """
    { metrics { ...Counts } }
    fragment Counts on Metrics { messagesByType { ...Pair } }
    fragment Pair on KeyCount { key count }
    """
    assert _analyze(source).depth == 3


def test_inline_fragments_count_like_their_fields() -> None:
    source = "{ ... on Query { a: metrics { ... { messagesByType { key } } } } }"
    analysis = _analyze(source)
    assert (analysis.aliases, analysis.depth, analysis.fields, analysis.computations) == (
        1,
        3,
        3,
        1,
    )


def test_only_the_operation_to_run_is_counted() -> None:
    source = """
    query Light { __typename }
    query Heavy { a: metrics { totalMessages } b: metrics { totalMessages } }
    """
    assert _analyze(source, operation_name="Light").computations == 0
    assert _analyze(source, operation_name="Heavy").computations == 2
    assert analyze(parse(source)) is None  # ambiguous: validation says so


def test_schema_and_type_are_introspection_but_typename_is_not() -> None:
    assert not _analyze("{ __typename metrics { __typename } }").introspection
    assert _analyze("{ __schema { queryType { name } } }").introspection
    assert _analyze(
        '{ ...T } fragment T on Query { __type(name: "Metrics") { name } }'
    ).introspection


def test_graphiql_introspection_fits_a_depth_of_ten() -> None:
    source = get_introspection_query(
        descriptions=True,
        specified_by_url=True,
        directive_is_repeatable=True,
        schema_description=True,
        input_value_deprecation=True,
    )
    analysis = _analyze(source)
    assert analysis.introspection
    assert analysis.depth <= 10


def test_nested_introspection_counts_every_level_but_of_type() -> None:
    deep = "{ __schema { types { fields { type { fields { type { ofType { ofType { name }}}}}}}}}"
    assert _analyze(deep).depth == 7


@pytest.mark.parametrize(
    "source",
    [
        "{ ...A } fragment A on Query { ...A }",
        "{ ...A } fragment A on Query { metrics { ...B } } fragment B on Metrics { ...C } "
        "fragment C on Metrics { ... on Metrics { ...B } }",
    ],
)
def test_a_fragment_cycle_is_refused_not_looped(source: str) -> None:
    with pytest.raises(FragmentCycle):
        analyze(parse(source))


def test_a_fragment_spread_twice_without_a_cycle_is_fine() -> None:
    source = "{ ...A ...A } fragment A on Query { ...B } fragment B on Query { __typename }"
    assert _analyze(source).fields == 2


def test_unknown_fragments_count_nothing() -> None:
    assert _analyze("{ ...Missing __typename }").fields == 1


def test_very_deep_documents_do_not_hit_the_recursion_limit() -> None:
    chain = " ".join(f"fragment F{n} on Query {{ ...F{n + 1} }}" for n in range(3000))
    source = f"{{ ...F0 }} {chain} fragment F3000 on Query {{ __typename }}"
    assert _analyze(source).fields == 1


def test_cost_is_one_point_per_computation_and_at_least_one() -> None:
    light = _analyze("{ __typename }")
    heavy = _analyze(
        " ".join(["{", *(f"m{n}: metrics {{ totalMessages }}" for n in range(11)), "}"])
    )
    assert operation_cost(light, mutation_cost=5) == 1
    assert operation_cost(heavy, mutation_cost=5) == 11


def test_a_mutation_costs_at_least_the_mutation_cost() -> None:
    plain = _analyze("mutation { setting }")
    assert operation_cost(plain, mutation_cost=5) == 5
    many = _analyze("mutation { " + " ".join(f"m{n}: metrics {{ t }}" for n in range(7)) + " }")
    assert operation_cost(many, mutation_cost=5) == 7
