"""The GraphQL schema: ``metrics`` and ``rateLimit``, and the policies around them."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import strawberry
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import GraphQLError
from graphql.validation.rules import overlapping_fields_can_be_merged
from strawberry.extensions import SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from graph.analysis import Analysis, FragmentCycle, analyze, operation_cost
from graph.context import Context
from graph.errors import INTERNAL_CODE, should_mask_error, status_for
from graph.gate import rate_limited
from graph.types import DATETIME_SCALAR, Metrics, RateLimit
from resolvers import (
    BadUserInput,
    MetricsError,
    Unauthenticated,
    Unavailable,
    fetch_metrics,
    select_instances,
)

__all__ = ["COSTLY_FIELDS", "VALIDATION_BUDGET", "OperationGuard", "Query", "schema"]

#: Fields that each run one metrics computation: one rate-limit point each.
COSTLY_FIELDS = frozenset({"metrics"})

#: graphql-core's OverlappingFieldsCanBeMerged compares same-named fields pairwise, so a
#: document repeating one field many times costs its square; graphql-core aborts the
#: validation once this budget of comparisons is spent. Its default, 500,000, is about a
#: second of the event loop; real documents spend a few units (GraphiQL's introspection
#: query, none), so this bounds the worst case to a few milliseconds.
VALIDATION_BUDGET = 10_000
overlapping_fields_can_be_merged.MAX_COMPLEXITY_BUDGET = VALIDATION_BUDGET

_ABORTED = "Validation aborted."
_log = logging.getLogger(__name__)


async def resolve_metrics(
    info: strawberry.Info[Context, None], instances: list[str] | None = strawberry.UNSET
) -> Metrics:
    context = info.context
    caller = context.require_caller()
    names = instances if isinstance(instances, list) else None  # null and omitted alike
    selection = await select_instances(db=context.db, caller=caller, names=names)
    now = context.clock()
    if context.rollups is None:
        result = await fetch_metrics(db=context.db, instances=selection.instances, now=now)
    else:
        result = await context.rollups.metrics(instances=selection.instances, now=now)
    return Metrics.from_result(selection=selection, result=result)


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
class Query:
    metrics: Metrics = strawberry.field(
        resolver=resolve_metrics,
        description=(
            "Metrics summed over the named instances; "
            "null or omitted = every instance the token can see."
        ),
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
        refusal = self._refusal()
        if refusal is not None:  # graphql-core's validation is then skipped
            self.execution_context.pre_execution_errors = [refusal]
        yield

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
    config=StrawberryConfig(scalar_map={datetime: DATETIME_SCALAR}),
    extensions=[OperationGuard, ErrorPolicy],
)
