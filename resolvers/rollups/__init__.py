"""Rollups: per-instance counters kept from ``messages`` so a metrics request costs the
same whatever the history (see "Rollups" in docs/metrics.md). No Strawberry imports."""

from resolvers.rollups.build import build_rollups
from resolvers.rollups.changes import Changes
from resolvers.rollups.contribution import Contribution, contribution
from resolvers.rollups.read import read_rollup_metrics
from resolvers.rollups.store import COLLECTIONS, apply_changes, drop_rollups

__all__ = [
    "COLLECTIONS",
    "Changes",
    "Contribution",
    "apply_changes",
    "build_rollups",
    "contribution",
    "drop_rollups",
    "read_rollup_metrics",
]
