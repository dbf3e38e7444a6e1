"""The GraphQL schema: the queries (``metrics``, ``metricsByInstance``, ``series``,
``instances``, ``rateLimit``), the ``updateInstanceSettings`` mutation, and the policies
around them."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

import strawberry
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import GraphQLError
from graphql.validation.rules import overlapping_fields_can_be_merged
from strawberry.extensions import SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext
from strawberry.types.nodes import SelectedField
from strawberry.types.nodes import Selection as Selection_

from graph.analysis import Analysis, FragmentCycle, analyze, operation_cost
from graph.context import Context
from graph.errors import INTERNAL_CODE, should_mask_error, status_for
from graph.execution import PlainExecutionContext
from graph.gate import rate_limited
from graph.types import (
    DATETIME_SCALAR,
    Instance,
    Interval,
    Metrics,
    RateLimit,
    Series,
    SeriesPoint,
    TimeRange,
    metrics_of,
)
from graph.validated import ShortTextParserCache, ValidDocuments
from resolvers import (
    BadUserInput,
    MetricsError,
    Selection,
    Unauthenticated,
    Unavailable,
    select_instances,
    timeranges,
    update_instance_settings,
)
from resolvers.rollups.service import RollupService

__all__ = [
    "COSTLY_FIELDS",
    "INSTANCES_PER_POINT",
    "VALIDATION_BUDGET",
    "VALID_DOCUMENTS",
    "Mutation",
    "OperationGuard",
    "Query",
    "schema",
]

#: Root fields that each run one computation over the messages (or their rollups): one
#: rate-limit point each, charged before the operation runs, at least one per operation;
#: a mutation costs at least ``GRAPHQL_MUTATION_COST`` (see ``operation_cost``).
COSTLY_FIELDS = frozenset(
    {"metrics", "metricsByInstance", "series", "instances", "updateInstanceSettings"}
)

#: ``metricsByInstance``, ``series`` and ``metrics`` with a range do their work instance
#: by instance, so each costs one point per this many instances it reads (rounded up,
#: at most ``GRAPHQL_MAX_COST``): over 100 instances, 10 points. The first point is the
#: one charged before the operation ran; the rest when the field knows its instances,
#: before its work. The all-time ``metrics`` reads every instance at once: one point.
INSTANCES_PER_POINT = 10

#: The fields of ``Metrics`` that need the distinct counts (the costliest part).
UNIQUE_FIELDS = frozenset({"uniqueChats", "uniqueGroups", "uniqueContacts"})

#: graphql-core's OverlappingFieldsCanBeMerged compares same-named fields pairwise, so a
#: document repeating one field many times costs its square; graphql-core aborts the
#: validation once this budget of comparisons is spent. Its default, 500,000, is about a
#: second of the event loop; real documents spend a few units (GraphiQL's introspection
#: query, none), so this bounds the worst case to a few milliseconds.
VALIDATION_BUDGET = 10_000
overlapping_fields_can_be_merged.MAX_COMPLEXITY_BUDGET = VALIDATION_BUDGET

_ABORTED = "Validation aborted."
VALID_DOCUMENTS = ValidDocuments()
"""Operation texts graphql-core's validation passed (``graph.validated``)."""
_log = logging.getLogger(__name__)


Info = strawberry.Info[Context, None]
Names = list[str] | None
Range = Annotated[TimeRange | None, strawberry.argument(name="range")]


async def resolve_metrics(
    info: Info, instances: Names = strawberry.UNSET, range_: Range = strawberry.UNSET
) -> Metrics:
    context = info.context
    time_range = _time_range(context, range_)
    selection = await _select(context, instances)
    if time_range is not None:
        await _charge_for_instances(context, selection)
    result = await _service(context).metrics(
        instances=selection.instances,
        now=context.clock(),
        range=time_range,
        unique=_selects(info, UNIQUE_FIELDS),
    )
    return Metrics.from_result(selection=selection, result=result)


async def resolve_metrics_by_instance(
    info: Info, instances: Names = strawberry.UNSET, range_: Range = strawberry.UNSET
) -> list[Metrics]:
    context = info.context
    time_range = _time_range(context, range_)
    selection = await _select(context, instances)
    await _charge_for_instances(context, selection)
    results = await _service(context).metrics_by_instance(
        instances=selection.instances,
        now=context.clock(),
        range=time_range,
        unique=_selects(info, UNIQUE_FIELDS),
    )
    return [
        metrics_of(ref=ref, result=result)
        for ref, result in zip(selection.instances, results, strict=True)
    ]


async def resolve_series(
    info: Info,
    instances: Names = strawberry.UNSET,
    *,
    range_: Annotated[TimeRange, strawberry.argument(name="range")],
    interval: Interval,
    timezone: Annotated[
        str, strawberry.argument(description='An IANA timezone name, e.g. "Asia/Kolkata".')
    ] = "UTC",
) -> Series:
    context = info.context
    context.require_caller()
    time_range = range_.resolve()
    # Refuse an unknown timezone or too many points before any database work.
    bounds = timeranges.series_bounds(
        range=time_range, interval=interval.resolve(), timezone=timezone
    )
    selection = await _select(context, instances)
    await _charge_for_instances(context, selection)
    points = await _service(context).series(
        instances=selection.instances, interval=interval.resolve(), bounds=bounds
    )
    return Series(
        instance=selection.label,
        instances=[ref.name for ref in selection.instances],
        interval=interval,
        timezone=timezone,
        points=[SeriesPoint.from_point(point) for point in points],
    )


async def resolve_instances(info: Info) -> list[Instance]:
    context = info.context
    selection = await _select(context, None)
    summaries = await _service(context).summaries(instances=selection.instances)
    return [Instance.from_summary(summary) for summary in summaries]


async def resolve_update_instance_settings(
    info: Info, instance: str, ignore_group_messages: bool
) -> Instance:
    context = info.context
    ref = await update_instance_settings(
        db=context.db,
        caller=context.require_caller(),
        name=instance,
        ignore_group_messages=ignore_group_messages,
    )
    [summary] = await _service(context).summaries(instances=[ref])
    return Instance.from_summary(summary)


def _time_range(context: Context, given: TimeRange | None) -> timeranges.TimeRange | None:
    """The range in the data layer's terms (null and omitted alike: none), once the
    caller is known to be someone."""
    context.require_caller()
    return given.resolve() if isinstance(given, TimeRange) else None


async def _select(context: Context, instances: list[str] | None) -> Selection:
    names = instances if isinstance(instances, list) else None  # null and omitted alike
    return await select_instances(db=context.db, caller=context.require_caller(), names=names)


async def _charge_for_instances(context: Context, selection: Selection) -> None:
    """Charge what a field reading ``selection`` instance by instance costs beyond the
    point its operation paid for it (``INSTANCES_PER_POINT``); ``RateLimited`` before
    any of its work when the bucket has fewer points left."""
    meter = context.meter
    points = min(-(-len(selection.instances) // INSTANCES_PER_POINT), context.limits.max_cost)
    if meter is None or points <= 1:
        return
    decision = await meter.charge_more(points - 1)
    if not decision.allowed:
        raise rate_limited(decision, cost=points - 1)


def _service(context: Context) -> RollupService:
    """The app's rollup service; a plain full scan where there is none (direct
    ``schema.execute`` in tests)."""
    return context.rollups or RollupService(db=context.db, consumer=None)


def _selects(info: Info, names: frozenset[str]) -> bool:
    """Whether the field being resolved selects any of ``names`` (through fragments)."""
    return any(_any_named(field.selections, names) for field in info.selected_fields)


def _any_named(selections: Iterable[Selection_], names: frozenset[str]) -> bool:
    stack = list(selections)
    while stack:
        selection = stack.pop()
        if isinstance(selection, SelectedField) and selection.name in names:
            return True
        stack.extend(selection.selections)
    return False


def resolve_rate_limit(info: strawberry.Info[Context, None]) -> RateLimit:
    meter = info.context.meter
    if meter is None:
        raise Unavailable("No rate limit applies outside an HTTP request.")
    decision = meter.decision
    return RateLimit(
        limit=decision.limit,
        remaining=decision.remaining,
        reset_at=datetime.fromtimestamp(decision.reset, UTC),
        cost=meter.charged,
    )


@strawberry.type
class Mutation:
    update_instance_settings: Instance = strawberry.field(
        resolver=resolve_update_instance_settings,
        description=(
            "Change an instance's settings (an account token: any of its account; an "
            "instance token: its own); metrics count with them from the next request on."
        ),
    )


@strawberry.type
class Query:
    metrics: Metrics = strawberry.field(
        resolver=resolve_metrics,
        description=(
            "Metrics summed over the named instances; "
            "null or omitted = every instance the token can see."
        ),
    )
    metrics_by_instance: list[Metrics] = strawberry.field(
        resolver=resolve_metrics_by_instance,
        description="One Metrics per distinct instance, in the order named (or by name when null).",
    )
    series: Series = strawberry.field(
        resolver=resolve_series,
        description=(
            "Metrics per interval over the range, summed over the named instances, on the "
            "local calendar of the timezone; at most 1000 points."
        ),
    )
    instances: list[Instance] = strawberry.field(
        resolver=resolve_instances, description="The instances the token can see."
    )
    rate_limit: RateLimit = strawberry.field(
        resolver=resolve_rate_limit,
        description="The caller's rate-limit bucket, as this operation left it.",
    )


class OperationGuard(SchemaExtension):
    """The limits and the cost of an operation, measured by ``graph.analysis`` in one
    linear pass, before graphql-core's own (costlier) validation:

    - refuses an operation over the alias, depth or cost limits, one that fragments
      expand past the token limit, and introspection without a valid token;
    - charges its cost to the caller's bucket before it runs (the gate took one point),
      answering 429 when fewer points remain;
    - reports the cost in ``extensions.cost`` of every result.
    """

    def __init__(self) -> None:
        self.cost: int | None = None

    @property
    def context(self) -> Context:
        context = self.execution_context.context
        assert isinstance(context, Context)
        return context

    def on_operation(self) -> Iterator[None]:
        self.execution_context.parse_options["max_tokens"] = self.context.limits.max_tokens
        yield
        result = self.execution_context.result
        if result is not None and result.errors:
            result.errors = [_explain_abort(error) for error in result.errors]

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        refusal = self._refusal()
        text = context.query
        if refusal is not None:  # graphql-core's validation is then skipped
            context.pre_execution_errors = [refusal]
        elif text is not None and text in VALID_DOCUMENTS:  # valid before: valid now
            context.pre_execution_errors = []
        yield
        if refusal is None and text is not None and context.pre_execution_errors == []:
            VALID_DOCUMENTS.remember(text)

    async def on_execute(self) -> AsyncIterator[None]:
        refusal = await self._charge()
        if refusal is not None:  # a result set before execution replaces it
            self.execution_context.result = GraphQLExecutionResult(data=None, errors=[refusal])
        yield

    def get_results(self) -> dict[str, Any]:
        meter = self.context.meter
        if meter is None:
            return {}
        decision = meter.decision
        requested = self.cost if self.cost is not None else meter.charged
        requested += meter.extra_requested
        return {
            "cost": {
                "requested": requested,
                "remaining": decision.remaining,
                "limit": decision.limit,
            }
        }

    def _refusal(self) -> GraphQLError | None:
        document = self.execution_context.graphql_document
        assert document is not None
        try:
            analysis = analyze(
                document,
                operation_name=self.execution_context.operation_name,
                costly_fields=COSTLY_FIELDS,
            )
        except FragmentCycle as cycle:
            return _bad_input(f"{cycle} Fragments may not form cycles.")
        if analysis is None:
            return None  # no single operation to run: validation says why
        self.cost = operation_cost(analysis, mutation_cost=self.context.limits.mutation_cost)
        return self._over_limits(analysis, self.cost)

    def _over_limits(self, analysis: Analysis, cost: int) -> GraphQLError | None:
        limits = self.context.limits
        if analysis.aliases > limits.max_aliases:
            return _bad_input(
                f"An operation may use at most {limits.max_aliases} aliases; "
                f"this one uses {analysis.aliases} (fragments expanded)."
            )
        if analysis.depth > limits.max_depth:
            return _bad_input(
                f"An operation may nest fields at most {limits.max_depth} deep; "
                f"this one nests them {analysis.depth} deep (fragments expanded)."
            )
        if cost > limits.max_cost:
            return _bad_input(
                f"An operation may cost at most {limits.max_cost} points; this one costs "
                f"{cost} (one per metrics computation, fragments expanded)."
            )
        if analysis.fields > limits.max_tokens:
            return _bad_input(
                f"Fragments may not expand an operation past {limits.max_tokens} fields "
                f"(the token limit); this one expands to {analysis.fields}."
            )
        if analysis.introspection and not self._may_introspect():
            return _error(
                Unauthenticated(
                    "Introspection (__schema, __type) needs a valid token "
                    "(header `token` or `Authorization: Bearer`)."
                )
            )
        return None

    def _may_introspect(self) -> bool:
        return self.context.limits.public_introspection or self.context.caller is not None

    async def _charge(self) -> GraphQLError | None:
        meter = self.context.meter
        if meter is None or self.cost is None:
            return None
        try:
            decision = await meter.charge_up_to(self.cost)
        except MetricsError as error:  # the bucket storage is unreachable
            return self._refuse(error)
        if decision.allowed:
            return None
        return self._refuse(rate_limited(decision, cost=self.cost))

    def _refuse(self, error: MetricsError) -> GraphQLError:
        """``error`` as the operation's result, with its HTTP status when there is one."""
        response = self.context.response
        if response is not None:
            response.status_code = status_for(error.code)
        return _error(error)


def _error(error: MetricsError) -> GraphQLError:
    return GraphQLError(error.message, extensions=error.extensions)


def _bad_input(message: str) -> GraphQLError:
    return _error(BadUserInput(message))


def _explain_abort(error: GraphQLError) -> GraphQLError:
    """graphql-core's bare "Validation aborted." (its comparison budget spent, or fragments
    nested past the recursion limit) explained."""
    if error.message != _ABORTED:
        return error
    return GraphQLError(
        "Validation aborted: the operation is too complex to check (the same fields "
        "selected too many times, or fragments nested too deeply). Simplify it.",
        extensions={"code": "BAD_USER_INPUT"},
    )


class ErrorPolicy(SchemaExtension):
    """Every error leaves with an ``extensions.code``; unexpected ones leave masked."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is not None and result.errors:
            result.errors = [_public(error) for error in result.errors]


def _public(error: GraphQLError) -> GraphQLError:
    if should_mask_error(error):
        return GraphQLError(
            "Internal server error.",
            nodes=error.nodes,
            path=error.path,
            extensions={"code": INTERNAL_CODE},
        )
    if not (error.extensions or {}).get("code"):
        error.extensions = {**(error.extensions or {}), "code": "BAD_USER_INPUT"}
    return error


class MetricsSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Log what will be masked, with its traceback; expected errors are not news."""
        for error in errors:
            if should_mask_error(error):
                _log.error("unexpected error in %s", error.path, exc_info=error.original_error)


#: One schema for every app: the limits come with each request's context.
schema = MetricsSchema(
    query=Query,
    mutation=Mutation,
    config=StrawberryConfig(scalar_map={datetime: DATETIME_SCALAR}),
    extensions=[OperationGuard, ShortTextParserCache, ErrorPolicy],
    execution_context_class=PlainExecutionContext,
)
