"""GraphQL execution with a shortcut for plain objects.

graphql-core completes every field of every object through the same general steps
(resolve info, path, awaitable checks, error handling). A series of 168 hourly points
selects some 6,400 fields (each point's ``messagesByType`` and ``messagesByStatus`` are
16 small objects): on the 1M-message benchmark instance that request took 64 ms, of
which its reads ~18 ms; with this shortcut, 39 ms.

Most of our types are *plain*: dataclasses whose fields Strawberry resolves by reading
an attribute, without arguments, holding scalars, enums, or lists of or single plain
objects. ``PlainExecutionContext`` completes such an object (or a list of them) in one
loop over a plan worked out once per selection: read the attribute, coerce the leaf.
Anything unusual on the way (a null where the schema says non-null, a value a scalar
refuses, an awaitable, an exception) abandons the shortcut for that object or list,
and graphql-core completes it again from the start, with its own errors and paths:
reading attributes twice has no effect, so the answer is graphql-core's, always.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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

__all__ = ["PlainExecutionContext"]

_TYPENAME = "__typename"


class _Slow(Exception):
    """The shortcut cannot complete this value: graphql-core does."""


_AS_IS: dict[GraphQLScalarType, type] = {
    GraphQLInt: int,
    GraphQLString: str,
    GraphQLBoolean: bool,
}
"""Built-in scalars and the Python type each gives out unchanged (an int within Int's
32 bits: graphql-core's own coercion returns the same values, slowly)."""


def _as_is(value: Any) -> bool:
    return not isinstance(value, int) or GRAPHQL_MIN_INT <= value <= GRAPHQL_MAX_INT


@dataclass(frozen=True, slots=True)
class _Rows:
    """An object whose selected fields all read a built-in scalar attribute: a list of
    them is completed column by column, with one check of each column's types (a series'
    ``messagesByType`` and ``messagesByStatus`` are ~2,900 such objects)."""

    read: Callable[[Any], tuple[Any, ...]]
    """The attributes of one object, in the order of the response keys."""
    allowed: tuple[frozenset[type], ...]
    """The types each column may hold unchanged (None too where nullable)."""
    build: Callable[[list[tuple[Any, ...]]], list[dict[str, Any]]]
    """The completed objects of the rows."""

    def complete(self, items: Sequence[Any]) -> list[dict[str, Any]]:
        rows = list(map(self.read, items))
        # attrgetter gives tuples of one length: zip(*rows) yields every column, or none
        for column, allowed in zip(zip(*rows), self.allowed):  # noqa: B905
            seen = set(map(type, column))
            if not seen <= allowed:
                raise _Slow
            if int in seen:
                numbers = column if NoneType not in seen else [v for v in column if v is not None]
                if not GRAPHQL_MIN_INT <= min(numbers) <= max(numbers) <= GRAPHQL_MAX_INT:
                    raise _Slow
        return self.build(rows)


def _rows(fields: Sequence[_Field]) -> _Rows | None:
    keys, attributes, allowed = [], [], []
    for field in fields:
        value = field.value
        if not isinstance(value, _Value) or value.as_is is None or field.name is None:
            return None
        keys.append(field.key)
        attributes.append(field.name)
        allowed.append(frozenset({value.as_is} if value.non_null else {value.as_is, NoneType}))
    if len(keys) < 2:
        return None  # (one field: the loop of _complete_object costs about the same)
    return _Rows(attrgetter(*attributes), tuple(allowed), _builder(tuple(keys)))


def _builder(keys: tuple[str, ...]) -> Callable[[list[tuple[Any, ...]]], list[dict[str, Any]]]:
    if len(keys) == 2:  # KeyCount's key and count: a dict display is 3x dict(zip(...))
        first, second = keys
        return lambda rows: [{first: a, second: b} for a, b in rows]
    return lambda rows: [dict(zip(keys, row)) for row in rows]  # noqa: B905


@dataclass(frozen=True, slots=True)
class _Value:
    """How to complete one value: a leaf, a list of values, or a plain object."""

    non_null: bool
    leaf: GraphQLLeafType | None = None
    item: _Value | None = None
    fields: tuple[_Field, ...] | None = None
    as_is: type | None = None
    """The leaf's Python type that needs no coercion (``_AS_IS``)."""
    rows: _Rows | None = None
    """For a list of objects whose fields are all ``as_is`` leaves: ``_Rows``."""

    def complete(self, value: Any) -> Any:
        if value is None:
            if self.non_null:
                raise _Slow
            return None
        if type(value) is self.as_is and _as_is(value):
            return value
        if self.leaf is not None:
            coerced = self.leaf.coerce_output_value(value)
            if coerced is None or coerced is Undefined:
                raise _Slow
            return coerced
        if self.item is not None:
            return self.item.complete_all(value)
        assert self.fields is not None
        return _complete_object(self.fields, value)

    def complete_all(self, values: Any) -> list[Any]:
        """The completed items of the list ``values``."""
        if not isinstance(values, list | tuple):
            raise _Slow
        if self.rows is not None:
            return self.rows.complete(values)
        complete = self.complete
        return [complete(value) for value in values]


@dataclass(frozen=True, slots=True)
class _Field:
    key: str
    """The response key (the alias, or the field's name)."""
    name: str | None
    """The attribute read (of the source); None for ``__typename``."""
    resolve: Callable[[Any], Any] | None
    """Reads it."""
    value: _Value | str
    """How to complete what ``resolve`` returns; for ``__typename``, the type's name."""


def _complete_object(fields: tuple[_Field, ...], source: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for field in fields:
        if field.resolve is None:
            data[field.key] = field.value
            continue
        assert isinstance(field.value, _Value)
        # an awaitable is no leaf, list or plain object: completing it fails, and
        # graphql-core then completes this value, awaiting it
        data[field.key] = field.value.complete(field.resolve(source))
    return data


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
        if plan is not None and plan.fields is not None:
            try:
                return _complete_object(plan.fields, result)
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
        if item is not None:
            try:
                return item.complete_all(result)
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
            return _Value(non_null, leaf=inner, as_is=as_is)
        if is_list_type(inner):
            assert isinstance(inner, GraphQLList)
            item = self._value(inner.of_type, field_details_list)
            return None if item is None else _Value(non_null, item=item)
        if is_object_type(inner):
            assert isinstance(inner, GraphQLObjectType)
            plan = self._plan(inner, field_details_list)
            return None if plan is None else _Value(non_null, fields=plan.fields, rows=plan.rows)
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
        return _Value(False, fields=tuple(fields), rows=_rows(fields))

    def _field(self, type_: GraphQLObjectType, key: str, details: Sequence[Any]) -> _Field | None:
        node = details[0].node
        name = node.name.value
        if name == _TYPENAME:
            return _Field(key, None, None, type_.name)
        definition = type_.fields.get(name)
        if definition is None or definition.args or node.arguments:
            return None
        attribute = _attribute(definition)
        if attribute is None:
            return None  # a resolver of its own: graphql-core runs it
        value = self._value(definition.type, details)
        return None if value is None else _Field(key, attribute, attrgetter(attribute), value)


def _attribute(definition: GraphQLField) -> str | None:
    """The attribute Strawberry's resolver of a field without one of its own reads (the
    default ``getattr``); None for any other field."""
    if not getattr(definition.resolve, "_is_default", False):
        return None
    field = definition.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
    if not isinstance(field, StrawberryField) or field.default_resolver is not getattr:
        return None
    return field.python_name
