"""Per-token rate limit, one bucket shared by REST and GraphQL (the ``limits`` library).

A bucket holds points: a request costs one, a GraphQL operation one per metrics
computation (``graph.analysis``). When the storage cannot be reached (a shared Redis
that is down), every hit raises ``Unavailable``: the service fails closed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItemPerMinute
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from resolvers import Unavailable

__all__ = ["Decision", "Meter", "RateLimiter"]

#: A Redis that accepts connections but does not answer (stopped, overloaded) must not
#: hold requests: after these seconds (per attempt; coredis tries three times) the hit
#: fails, and the request is refused.
_REDIS_TIMEOUTS = {"connect_timeout": 1.0, "stream_timeout": 1.0}

_STORAGE_DOWN = (
    "The rate-limit storage cannot be reached, so requests are refused until it answers."
)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float  # Unix time when the oldest point in the window is freed

    @property
    def reset(self) -> int:
        """``reset_at`` in whole Unix seconds, rounded up."""
        return math.ceil(self.reset_at)

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.reset_at - time.time())))
        return headers


class RateLimiter:
    """A moving window of ``per_minute`` requests per key.

    ``storage_uri`` is a ``limits`` storage: ``memory://`` (one process) or a shared one
    such as ``redis://host:6379`` when several processes serve the same users.
    """

    def __init__(self, *, per_minute: int, storage_uri: str) -> None:
        if not storage_uri.startswith("async+"):
            storage_uri = f"async+{storage_uri}"
        self._item = RateLimitItemPerMinute(per_minute)
        options = _REDIS_TIMEOUTS if storage_uri.startswith("async+redis") else {}
        storage = storage_from_string(storage_uri, wrap_exceptions=True, **options)
        if not isinstance(storage, Storage):  # pragma: no cover - "async+" makes it async
            raise ValueError(f"not an async rate-limit storage: {storage_uri}")
        self._limiter = MovingWindowRateLimiter(storage)

    async def hit(self, key: str, *, cost: int = 1) -> Decision:
        """Take ``cost`` points from ``key``'s bucket; when fewer remain, take none and
        refuse. ``Unavailable`` when the storage cannot be reached."""
        try:
            allowed = await self._limiter.hit(self._item, key, cost=cost)
            stats = await self._limiter.get_window_stats(self._item, key)
        except StorageError as error:
            raise Unavailable(_STORAGE_DOWN) from error
        return Decision(
            allowed=allowed,
            limit=self._item.amount,
            remaining=stats.remaining,
            reset_at=stats.reset_time,
        )


class Meter:
    """One request's account with its bucket: the points ``charged`` so far (the gate's
    one), those ``extra_requested`` by fields once they knew their size, and the last
    ``decision`` (what the ``X-RateLimit-*`` headers report)."""

    def __init__(self, *, limiter: RateLimiter, key: str, decision: Decision) -> None:
        self._limiter = limiter
        self._key = key
        self.decision = decision
        self.charged = 1
        self.extra_requested = 0

    async def charge_more(self, points: int) -> Decision:
        """Take ``points`` more from the bucket (what a field found it costs once it knew
        its instances), or nothing when fewer remain (refused)."""
        self.extra_requested += points
        self.decision = await self._limiter.hit(self._key, cost=points)
        if self.decision.allowed:
            self.charged += points
        return self.decision

    async def charge_up_to(self, points: int) -> Decision:
        """Make this request cost ``points`` in all: take the difference from the bucket,
        or nothing when fewer remain (refused)."""
        extra = points - self.charged
        if extra > 0:
            self.decision = await self._limiter.hit(self._key, cost=extra)
            if self.decision.allowed:
                self.charged = points
        return self.decision
