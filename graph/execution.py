"""GraphQL execution with a shortcut for plain objects.

graphql-core completes every field of every object through the same general steps
(resolve info, path, awaitable checks, error handling). A series of 168 hourly points
selects some 6,400 fields (each point's ``messagesByType`` and ``messagesByStatus`` are
16 small objects): on the 1M-message benchmark instance that request took 64 ms, of
which its reads ~18 ms; with this shortcut, 39 ms (completing the 169 points alone:
~30 ms in graphql-core, 2.2 ms one object at a time, 1.4 ms a column at a time).

Most of our types are *plain*: dataclasses whose fields Strawberry resolves by reading
an attribute, without arguments, holding scalars, enums, or lists of or single plain
objects. ``PlainExecutionContext`` completes such an object, or a list of them, a column
at a time, from a plan worked out once per selection: the values of one field across all
the objects are read together and checked together (the built-in scalars by their
types, Int by its min and max), and the items of many lists are completed as one list.
Anything unusual on the way (a null where the schema says non-null, a value a scalar
refuses, an awaitable, an exception) abandons the shortcut for that object or list,
and graphql-core completes it again from the start, with its own errors and paths:
reading attributes twice has no effect, so the answer is graphql-core's, always.

A type marked ``unchanging`` (``graph.reuse``: its objects never change once made) has
its completed objects kept by identity under their selection: the same object selected
the same way again is answered with what it was completed to before. The points of a
series read from kept rollups come back that way (``SeriesPoint``).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from operator import attrgetter
from types import NoneType
from typing import Any

from graphql import (
    GRAPHQL_MAX_INT,
    GRAPHQL_MIN_INT,
    GraphQLBoolean,
    GraphQLField,
    GraphQLInt,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLString,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    is_object_type,
)
from graphql.pyutils import Undefined
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.field import StrawberryField

from graph.reuse import ByIdentity, is_unchanging

__all__ = ["PlainExecutionContext"]

_TYPENAME = "__typename"

_COMPLETED: ByIdentity[dict[str, Any]] = ByIdentity(limit=2_000)
"""Completed objects of unchanging types, by object and selection (``_Selections``)."""


class _Selections:
    """Small numbers for the selections of unchanging types (the keys of ``_COMPLETED``
    hash faster than a selection's nested tuple): the most recent ``limit`` kept."""

    def __init__(self, *, limit: int) -> None:
        self._limit = limit
        self._numbers: OrderedDict[Hashable, int] = OrderedDict()
        self._next = itertools.count()

    def number(self, selection: Hashable) -> int:
        number = self._numbers.get(selection)
        if number is None:
            number = self._numbers[selection] = next(self._next)
        self._numbers.move_to_end(selection)
        while len(self._numbers) > self._limit:
            self._numbers.popitem(last=False)
        return number


_SELECTIONS = _Selections(limit=256)


class _Slow(Exception):
    """The shortcut cannot complete this value: graphql-core does."""


_AS_IS: dict[GraphQLScalarType, type] = {
    GraphQLInt: int,
    GraphQLString: str,
    GraphQLBoolean: bool,
}
"""Built-in scalars and the Python type each gives out unchanged (an int within Int's
32 bits: graphql-core's own coercion returns the same values, slowly)."""


@dataclass(frozen=True, slots=True)
class _Value:
    """How to complete the values of one position of a selection (a field of many objects,
    or the items of lists): a leaf, a list of values, or a plain object. Values are
    completed a column at a time: a series' ~2,900 ``KeyCount`` objects are one column of
    keys and one of counts, each checked once."""

    non_null: bool
    leaf: GraphQLLeafType | None = None
    as_is: type | None = None
    """The leaf's Python type that needs no coercion (``_AS_IS``)."""
    item: _Value | None = None
    fields: tuple[_Field, ...] = ()
    build: Callable[[list[list[Any]]], list[dict[str, Any]]] | None = None
    """For a plain object: its completed objects, from the completed columns of fields."""
    selection: Hashable = None
    """What the completed values depend on besides the values: the type, and for a list
    or object what is selected of it, all the way down."""
    kept: int | None = None
    """For an unchanging type: the number of its selection in ``_COMPLETED``."""

    def complete(self, values: list[Any]) -> list[Any]:
        """The completed ``values``, in order; ``_Slow`` (or graphql-core's error) when the
        shortcut cannot complete one of them."""
        if self.as_is is not None and self._pass_as_is(values):
            return values
        if self.leaf is not None:
            return self._coerce(self.leaf, values)
        present = [value for value in values if value is not None]
        if len(present) < len(values) and self.non_null:
            raise _Slow
        done: list[Any]
        if self.item is not None:
            done = self._complete_lists(self.item, present)
        else:
            done = self._complete_objects(present)
        return done if len(present) == len(values) else _with_nulls(values, done)

    def _pass_as_is(self, values: list[Any]) -> bool:
        """Whether ``values`` leave as they are: all of the type ``as_is`` (or None where
        nullable) and, for Int, within its 32 bits."""
        seen = set(map(type, values))
        allowed = {self.as_is} if self.non_null else {self.as_is, NoneType}
        if not seen <= allowed:
            return False
        if self.as_is is not int or not values:
            return True
        numbers = values if NoneType not in seen else [v for v in values if v is not None]
        return not numbers or GRAPHQL_MIN_INT <= min(numbers) <= max(numbers) <= GRAPHQL_MAX_INT

    def _coerce(self, leaf: GraphQLLeafType, values: list[Any]) -> list[Any]:
        done: list[Any] = []
        for value in values:
            if value is None:
                if self.non_null:
                    raise _Slow
                done.append(None)
                continue
            coerced = leaf.coerce_output_value(value)
            if coerced is None or coerced is Undefined:
                raise _Slow
            done.append(coerced)
        return done

    @staticmethod
    def _complete_lists(item: _Value, lists: list[Any]) -> list[list[Any]]:
        """Every list's items completed together, then cut back into lists."""
        flat: list[Any] = []
        lengths = []
        for values in lists:
            if not isinstance(values, list | tuple):
                raise _Slow
            flat.extend(values)
            lengths.append(len(values))
        done = item.complete(flat)
        cut, at = [], 0
        for length in lengths:
            cut.append(done[at : at + length])
            at += length
        return cut

    def _complete_objects(self, sources: list[Any]) -> list[dict[str, Any]]:
        if self.kept is None:
            return self._complete_columns(sources)
        done = [_COMPLETED.get(source, self.kept) for source in sources]
        missing = [at for at, completed in enumerate(done) if completed is None]
        if missing:
            made = self._complete_columns([sources[at] for at in missing])
            for at, completed in zip(missing, made, strict=True):
                done[at] = completed
                _COMPLETED.put(sources[at], completed, self.kept)
        return done  # type: ignore[return-value]  # no None is left

    def _complete_columns(self, sources: list[Any]) -> list[dict[str, Any]]:
        assert self.build is not None
        columns = []
        for field in self.fields:
            if field.read is None:
                columns.append([field.value] * len(sources))
            else:
                assert isinstance(field.value, _Value)
                # an awaitable is no leaf, list or plain object: completing it fails, and
                # graphql-core then completes this value, awaiting it
                columns.append(field.value.complete(list(map(field.read, sources))))
        return self.build(columns)


def _with_nulls(values: list[Any], done: list[Any]) -> list[Any]:
    """``done`` (the completed values that are not None) with the Nones of ``values``
    put back in their places."""
    completed = iter(done)
    return [None if value is None else next(completed) for value in values]


@dataclass(frozen=True, slots=True)
class _Field:
    key: str
    """The response key (the alias, or the field's name)."""
    read: Callable[[Any], Any] | None
    """Reads the field's attribute of the source; None for ``__typename``."""
    value: _Value | str
    """How to complete what ``read`` returns; for ``__typename``, the type's name."""
    attribute: str | None = None

    @property
    def selection(self) -> Hashable:
        value = self.value.selection if isinstance(self.value, _Value) else self.value
        return (self.key, self.attribute, value)


def _builder(keys: tuple[str, ...]) -> Callable[[list[list[Any]]], list[dict[str, Any]]]:
    """Objects with the response keys ``keys`` from their completed columns."""
    if len(keys) == 2:  # KeyCount's key and count: a dict display is 3x dict(zip(...))
        first, second = keys
        return lambda columns: [{first: a, second: b} for a, b in zip(*columns)]  # noqa: B905
    return lambda columns: [dict(zip(keys, row)) for row in zip(*columns)]  # noqa: B905


class PlainExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's execution context, completing plain objects in a loop (see the
    module); everything else, and every error, is graphql-core's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plans: dict[tuple[GraphQLObjectType, int], tuple[Any, _Value | None]] = {}

    def complete_object_value(
        self,
        return_type: GraphQLObjectType,
        field_details_list: Any,
        info: Any,
        path: Any,
        result: Any,
        position_context: Any,
    ) -> Any:
        plan = self._plan(return_type, field_details_list)
        if plan is not None:
            try:
                return plan.complete([result])[0]
            except Exception:  # _Slow, or an error graphql-core reports with its path
                pass
        return super().complete_object_value(
            return_type, field_details_list, info, path, result, position_context
        )

    def complete_list_value(
        self,
        return_type: GraphQLList[GraphQLOutputType],
        field_details_list: Any,
        info: Any,
        path: Any,
        result: Any,
        position_context: Any,
    ) -> Any:
        item = self._value(return_type.of_type, field_details_list)
        if item is not None and isinstance(result, list | tuple):
            try:
                return item.complete(list(result))
            except Exception:  # _Slow, or an error graphql-core reports with its path
                pass
        return super().complete_list_value(
            return_type, field_details_list, info, path, result, position_context
        )

    # --- plans -------------------------------------------------------------------------

    def _value(self, type_: GraphQLOutputType, field_details_list: Any) -> _Value | None:
        """How to complete a value of ``type_`` selected by ``field_details_list``; None
        when it is not plain."""
        non_null = is_non_null_type(type_)
        inner = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
        if is_leaf_type(inner):
            as_is = _AS_IS.get(inner) if isinstance(inner, GraphQLScalarType) else None
            return _Value(non_null, leaf=inner, as_is=as_is, selection=(non_null, inner))
        if is_list_type(inner):
            assert isinstance(inner, GraphQLList)
            item = self._value(inner.of_type, field_details_list)
            if item is None:
                return None
            return _Value(non_null, item=item, selection=(non_null, "list", item.selection))
        if is_object_type(inner):
            assert isinstance(inner, GraphQLObjectType)
            plan = self._plan(inner, field_details_list)
            if plan is None:
                return None
            return replace(plan, non_null=non_null, selection=(non_null, plan.selection))
        return None

    def _plan(self, type_: GraphQLObjectType, field_details_list: Any) -> _Value | None:
        # memoized on the identity of the selection, as graphql-core's own collect_subfields
        # (the list is kept alive with the plan so that its id is not reused)
        key = (type_, id(field_details_list))
        if key not in self._plans:
            self._plans[key] = (field_details_list, self._new_plan(type_, field_details_list))
        return self._plans[key][1]

    def _new_plan(self, type_: GraphQLObjectType, field_details_list: Any) -> _Value | None:
        manager = self.middleware_manager
        if type_.is_type_of is not None or (manager is not None and manager.middlewares):
            return None  # a check of the type, or middleware around each resolver
        grouped, defers, *_ = self.collect_subfields(type_, field_details_list)
        if defers:
            return None
        fields: list[_Field] = []
        for key, details in grouped.items():
            field = self._field(type_, key, details)
            if field is None:
                return None
            fields.append(field)
        selection = (type_, tuple(field.selection for field in fields))
        return _Value(
            False,
            fields=tuple(fields),
            build=_builder(tuple(field.key for field in fields)),
            selection=selection,
            kept=_SELECTIONS.number(selection) if is_unchanging(_origin(type_)) else None,
        )

    def _field(self, type_: GraphQLObjectType, key: str, details: Sequence[Any]) -> _Field | None:
        node = details[0].node
        name = node.name.value
        if name == _TYPENAME:
            return _Field(key, None, type_.name)
        definition = type_.fields.get(name)
        if definition is None or definition.args or node.arguments:
            return None
        attribute = _attribute(definition)
        if attribute is None:
            return None  # a resolver of its own: graphql-core runs it
        value = self._value(definition.type, details)
        return None if value is None else _Field(key, attrgetter(attribute), value, attribute)


def _origin(type_: GraphQLObjectType) -> object:
    """The Python class Strawberry made ``type_`` of (None when it made none)."""
    definition = type_.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
    return getattr(definition, "origin", None)


def _attribute(definition: GraphQLField) -> str | None:
    """The attribute Strawberry's resolver of a field without one of its own reads (the
    default ``getattr``); None for any other field."""
    if not getattr(definition.resolve, "_is_default", False):
        return None
    field = definition.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
    if not isinstance(field, StrawberryField) or field.default_resolver is not getattr:
        return None
    return field.python_name
