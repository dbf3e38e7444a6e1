"""Rollups: per-instance counters kept from ``messages`` so a metrics request costs the
same whatever the history (see "Rollups" in docs/metrics.md). No Strawberry imports."""

from resolvers.rollups.changes import Changes
from resolvers.rollups.contribution import Contribution, contribution

__all__ = ["Changes", "Contribution", "contribution"]
