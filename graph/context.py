"""The per-request context every resolver gets, built the same way for GraphQL and REST."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.requests import HTTPConnection

from resolvers import Caller, Database, Unauthenticated

__all__ = ["Clock", "Context", "build_context", "system_clock"]

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Context:
    db: Database
    caller: Caller | None
    clock: Clock
    query_timeout_ms: int | None = None

    def require_caller(self) -> Caller:
        """The authenticated caller, or ``Unauthenticated``."""
        if self.caller is None:
            raise Unauthenticated(
                "A valid token is required (header `token` or `Authorization: Bearer`)."
            )
        return self.caller


def build_context(connection: HTTPConnection) -> Context:
    """Context from what the lifespan (db, clock) and the gate (caller) left on the request."""
    state = connection.state
    return Context(
        db=state.db,
        caller=getattr(state, "caller", None),
        clock=state.clock,
        query_timeout_ms=state.query_timeout_ms,
    )
