"""Order statistics of timing samples (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from bench.model import Summary

__all__ = ["percentile", "summarize"]


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks,
    as numpy's default; one sample is its own every percentile."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0-100")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(samples: Sequence[float]) -> Summary:
    """Median, quartiles, p95, extremes and count of ``samples`` (seconds)."""
    return Summary(
        n=len(samples),
        median=percentile(samples, 50),
        p95=percentile(samples, 95),
        minimum=min(samples),
        maximum=max(samples),
        p25=percentile(samples, 25),
        p75=percentile(samples, 75),
    )
