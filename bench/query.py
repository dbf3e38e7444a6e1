"""The GraphQL operation the harness sends: every field of ``Metrics``."""

from __future__ import annotations

from graph.rest import LEGACY_FIELDS

__all__ = ["FULL_METRICS_QUERY"]

FULL_METRICS_QUERY = f"""
query BenchMetrics($instances: [String!]) {{
  metrics(instances: $instances) {{ instances {LEGACY_FIELDS} }}
}}
"""
