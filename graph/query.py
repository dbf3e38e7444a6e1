"""The GraphQL schema: one query, ``metrics``, and the policies around it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from functools import partial

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaxAliasesLimiter, MaxTokensLimiter, SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from graph.context import Context
from graph.errors import INTERNAL_CODE, should_mask_error
from graph.types import DATETIME_SCALAR, Metrics
from resolvers import fetch_metrics, select_instances

__all__ = ["MAX_ALIASES", "MAX_TOKENS", "Query", "schema"]

MAX_ALIASES = 10
MAX_TOKENS = 5_000

_log = logging.getLogger(__name__)


async def resolve_metrics(
    info: strawberry.Info[Context, None], instances: list[str] | None = strawberry.UNSET
) -> Metrics:
    context = info.context
    caller = context.require_caller()
    names = instances if isinstance(instances, list) else None  # null and omitted alike
    selection = await select_instances(db=context.db, caller=caller, names=names)
    result = await fetch_metrics(
        db=context.db,
        instances=selection.instances,
        now=context.clock(),
        max_time_ms=context.query_timeout_ms,
    )
    return Metrics.from_result(selection=selection, result=result)


@strawberry.type
class Query:
    metrics: Metrics = strawberry.field(
        resolver=resolve_metrics,
        description=(
            "Metrics summed over the named instances; "
            "null or omitted = every instance the token can see."
        ),
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


schema = MetricsSchema(
    query=Query,
    config=StrawberryConfig(scalar_map={datetime: DATETIME_SCALAR}),
    extensions=[
        partial(MaxTokensLimiter, max_token_count=MAX_TOKENS),
        partial(MaxAliasesLimiter, max_alias_count=MAX_ALIASES),
        ErrorPolicy,
    ],
)
