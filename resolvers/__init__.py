"""Data work: aggregation pipeline builders and the code that runs them (no Strawberry)."""

from resolvers.db import Database, open_client, translate_driver_errors
from resolvers.errors import (
    BadUserInput,
    Forbidden,
    MetricsError,
    NotFound,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from resolvers.indexes import ensure_indexes
from resolvers.instances import (
    InstanceRef,
    Selection,
    select_instances,
    update_instance_settings,
)
from resolvers.metrics import fetch_metrics
from resolvers.pipeline import MetricsResult, build_metrics_pipeline
from resolvers.tokens import AccountCaller, Caller, InstanceCaller, authenticate, hash_token

__all__ = [
    "AccountCaller",
    "BadUserInput",
    "Caller",
    "Database",
    "Forbidden",
    "InstanceCaller",
    "InstanceRef",
    "MetricsError",
    "MetricsResult",
    "NotFound",
    "RateLimited",
    "Selection",
    "Unauthenticated",
    "Unavailable",
    "authenticate",
    "build_metrics_pipeline",
    "ensure_indexes",
    "fetch_metrics",
    "hash_token",
    "open_client",
    "select_instances",
    "translate_driver_errors",
    "update_instance_settings",
]
