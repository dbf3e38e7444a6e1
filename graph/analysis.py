"""What a GraphQL operation asks for, measured in one linear pass over its document.

Pure: it takes a parsed document (graphql-core's ``DocumentNode``) and counts, for the
operation to run, its aliases, its depth, its field selections and its metrics
computations once fragments are expanded, and whether it introspects the schema.
A computation is a costly field selected on the root type (``Query`` or ``Mutation``):
a field of the same name deeper down (``Metrics.instances``, say) is plain data.
Each fragment is measured once and reused wherever it is spread, so a chain of
fragments that each spread the next twice costs one visit per fragment, while the
counts still double at each level as the expanded document would. A fragment that
spreads itself, directly or not, makes the document invalid (``FragmentCycle``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationType,
    SelectionNode,
    get_operation_ast,
)

__all__ = [
    "INTROSPECTION_FIELDS",
    "ROOT_TYPES",
    "Analysis",
    "FragmentCycle",
    "analyze",
    "operation_cost",
]

#: Root fields that read the schema itself (``__typename`` is ordinary and free).
INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})

#: The names of the root types: a costly field counts only where it is selected on one
#: (directly, in an inline fragment there, or in a fragment on one of these types).
ROOT_TYPES = frozenset({"Query", "Mutation", "Subscription"})

#: Introspection's unwrapping of list and non-null types: one object (or null) per
#: level, so it cannot multiply the answer and does not count towards the depth.
#: GraphiQL's introspection query nests it seven deep.
_UNWRAPPING_FIELDS = frozenset({"ofType"})


class FragmentCycle(ValueError):
    """A fragment spreads itself, directly or through others."""

    def __init__(self, name: str) -> None:
        super().__init__(f'Fragment "{name}" spreads itself.')
        self.name = name


@dataclass(frozen=True, slots=True)
class Analysis:
    """The measures of one operation, fragments expanded."""

    operation: OperationType
    aliases: int
    depth: int
    fields: int
    computations: int
    introspection: bool


@dataclass(slots=True)
class _Measure:
    """Running totals of one selection set."""

    aliases: int = 0
    depth: int = 0
    fields: int = 0
    computations: int = 0
    introspection: bool = False

    def add(self, other: _Measure) -> None:
        self.aliases += other.aliases
        self.depth = max(self.depth, other.depth)
        self.fields += other.fields
        self.computations += other.computations
        self.introspection = self.introspection or other.introspection


@dataclass(slots=True)
class _Frame:
    """A selection set being measured; ``owner`` is the field it belongs to, if any;
    ``root``: the selections are on the root type; ``owner_at_root``: so is ``owner``."""

    selections: Sequence[SelectionNode]
    owner: FieldNode | None = None
    root: bool = False
    owner_at_root: bool = False
    fragment: str | None = None
    index: int = 0
    total: _Measure = field(default_factory=_Measure)


def analyze(
    document: DocumentNode,
    *,
    operation_name: str | None = None,
    costly_fields: Collection[str] = frozenset({"metrics"}),
) -> Analysis | None:
    """Measure the operation ``operation_name`` selects (None when there is no such single
    operation: validation reports that). ``costly_fields`` are the field names that each
    run one metrics computation where they are selected on the root type. Raises
    ``FragmentCycle``."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return None
    fragments = {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    measure = _measure(operation.selection_set.selections, fragments, frozenset(costly_fields))
    return Analysis(
        operation=operation.operation,
        aliases=measure.aliases,
        depth=measure.depth,
        fields=measure.fields,
        computations=measure.computations,
        introspection=measure.introspection,
    )


def operation_cost(analysis: Analysis, *, mutation_cost: int) -> int:
    """Rate-limit points: one per metrics computation, at least one; a mutation costs at
    least ``mutation_cost``."""
    floor = mutation_cost if analysis.operation is OperationType.MUTATION else 1
    return max(floor, analysis.computations)


def _measure(
    root: Sequence[SelectionNode],
    fragments: Mapping[str, FragmentDefinitionNode],
    costly: frozenset[str],
) -> _Measure:
    """Depth-first with an explicit stack (documents may nest deeper than Python's
    recursion limit); each fragment is measured the first time it is spread."""
    done: dict[str, _Measure] = {}
    open_fragments: set[str] = set()
    stack = [_Frame(root, root=True)]
    while True:
        frame = stack[-1]
        if frame.index == len(frame.selections):
            stack.pop()
            result = _close(frame, costly)
            if frame.fragment is not None:
                done[frame.fragment] = result
                open_fragments.discard(frame.fragment)
            if not stack:
                return result
            stack[-1].total.add(result)
            continue
        selection = frame.selections[frame.index]
        frame.index += 1
        child = _open(selection, frame.root, fragments, done, open_fragments)
        if isinstance(child, _Frame):
            stack.append(child)
        elif child is not None:
            frame.total.add(child)


def _open(
    selection: SelectionNode,
    root: bool,
    fragments: Mapping[str, FragmentDefinitionNode],
    done: Mapping[str, _Measure],
    open_fragments: set[str],
) -> _Frame | _Measure | None:
    """A frame to measure, a measure already known, or None (an unknown fragment,
    which validation reports). ``root``: ``selection`` is selected on the root type."""
    if isinstance(selection, FieldNode):
        children = selection.selection_set.selections if selection.selection_set else ()
        return _Frame(children, owner=selection, owner_at_root=root)
    if isinstance(selection, InlineFragmentNode):
        return _Frame(selection.selection_set.selections, root=root)
    assert isinstance(selection, FragmentSpreadNode)
    name = selection.name.value
    if name in done:
        return done[name]
    if name in open_fragments:
        raise FragmentCycle(name)
    definition = fragments.get(name)
    if definition is None:
        return None
    open_fragments.add(name)
    on_root = definition.type_condition.name.value in ROOT_TYPES
    return _Frame(definition.selection_set.selections, fragment=name, root=on_root)


def _close(frame: _Frame, costly: frozenset[str]) -> _Measure:
    """The measure of a finished frame, as seen by its parent selection set."""
    node = frame.owner
    if node is None:
        return frame.total
    name = node.name.value
    total = frame.total
    return _Measure(
        aliases=total.aliases + (node.alias is not None),
        depth=total.depth + (name not in _UNWRAPPING_FIELDS),
        fields=total.fields + 1,
        computations=total.computations + (frame.owner_at_root and name in costly),
        introspection=total.introspection or name in INTROSPECTION_FIELDS,
    )
