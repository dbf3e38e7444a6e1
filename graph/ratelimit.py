"""Per-token rate limit, one bucket shared by REST and GraphQL (the ``limits`` library)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItemPerMinute
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

__all__ = ["Decision", "RateLimiter"]


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # Unix seconds when a request is next free

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.reset - math.floor(time.time())))
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
        storage = storage_from_string(storage_uri)
        if not isinstance(storage, Storage):  # pragma: no cover - "async+" makes it async
            raise ValueError(f"not an async rate-limit storage: {storage_uri}")
        self._limiter = MovingWindowRateLimiter(storage)

    async def hit(self, key: str) -> Decision:
        """Count one request on ``key`` unless it is over the limit."""
        allowed = await self._limiter.hit(self._item, key)
        stats = await self._limiter.get_window_stats(self._item, key)
        return Decision(
            allowed=allowed,
            limit=self._item.amount,
            remaining=stats.remaining,
            reset=math.ceil(stats.reset_time),
        )
