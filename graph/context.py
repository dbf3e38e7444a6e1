"""The per-request context every resolver gets, built the same way for GraphQL and REST."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from starlette.requests import HTTPConnection
from starlette.responses import Response

from graph.ratelimit import Meter
from graph.settings import Settings
from resolvers import Caller, Database, Unauthenticated
from resolvers.rollups.service import RollupService

__all__ = ["Clock", "Context", "OperationLimits", "build_context", "system_clock"]

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class OperationLimits:
    """What one GraphQL operation may ask for (``GRAPHQL_*`` settings)."""

    max_tokens: int
    max_aliases: int
    max_depth: int
    max_cost: int
    mutation_cost: int
    public_introspection: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> OperationLimits:
        return cls(
            max_tokens=settings.graphql_max_tokens,
            max_aliases=settings.graphql_max_aliases,
            max_depth=settings.graphql_max_depth,
            max_cost=settings.graphql_max_cost,
            mutation_cost=settings.graphql_mutation_cost,
            public_introspection=settings.graphql_public_introspection,
        )


def _default_limits() -> OperationLimits:
    """The settings' defaults, not the environment's (``model_construct`` reads none)."""
    return OperationLimits.from_settings(Settings.model_construct())


@dataclass(frozen=True, slots=True)
class Context:
    """``meter`` is the request's rate-limit account (None outside the gate); ``response``
    is the HTTP response being built (None on the REST path), whose status and headers
    GraphQL may set; ``rollups`` answers metrics (None: the full scan alone)."""

    db: Database
    caller: Caller | None
    clock: Clock
    limits: OperationLimits = field(default_factory=_default_limits)
    meter: Meter | None = None
    response: Response | None = None
    rollups: RollupService | None = None

    def require_caller(self) -> Caller:
        """The authenticated caller, or ``Unauthenticated``."""
        if self.caller is None:
            raise Unauthenticated(
                "A valid token is required (header `token` or `Authorization: Bearer`)."
            )
        return self.caller


def build_context(connection: HTTPConnection, *, response: Response | None = None) -> Context:
    """Context from what the lifespan (db, clock, limits) and the gate (caller, meter) left
    on the request; ``response`` is Strawberry's sub-response on ``/graphql``."""
    state = connection.state
    return Context(
        db=state.db,
        caller=getattr(state, "caller", None),
        clock=state.clock,
        limits=getattr(state, "limits", None) or _default_limits(),
        meter=getattr(state, "meter", None),
        response=response,
        rollups=getattr(state, "rollups", None),
    )
