"""The legacy REST path: a front door that runs the GraphQL operation and reshapes it."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from graph.context import build_context
from graph.errors import error_code
from graph.query import schema
from graph.responses import rest_error

__all__ = ["METRICS_QUERY", "reshape", "rest_routes"]

#: Every field of the legacy response, in its order (``Metrics`` has ``instances`` too).
LEGACY_FIELDS = """
    instance totalMessages messagesReceived messagesSent
    messagesByType { key count }
    groupMessages individualMessages messagesWithMedia
    mediaByType { key count }
    messagesByStatus { key count }
    uniqueChats uniqueGroups uniqueContacts
    messagesLast7Days messagesLast30Days firstMessageAt lastMessageAt
"""

#: What ``GET /metrics/{instances}`` runs.
METRICS_QUERY = f"""
query LegacyMetrics($instances: [String!]!) {{
  metrics(instances: $instances) {{{LEGACY_FIELDS}  }}
}}
"""

_SUCCESS = "Metrics retrieved successfully"


def reshape(metrics: dict[str, Any]) -> dict[str, Any]:
    """GraphQL's ``[{key, count}]`` lists become JSON objects; everything else as is."""
    return {
        field: {item["key"]: item["count"] for item in value} if isinstance(value, list) else value
        for field, value in metrics.items()
    }


async def legacy_metrics(request: Request) -> Response:
    """``GET /metrics/{instances}``: one name or a comma-separated list."""
    names = request.path_params.get("instances", "").split(",")
    result = await schema.execute(
        METRICS_QUERY, variable_values={"instances": names}, context_value=build_context(request)
    )
    if result.errors:
        error = result.errors[0]
        return rest_error(code=error_code(error), message=error.message)
    assert result.data is not None
    body = {"success": True, "message": _SUCCESS, "metrics": reshape(result.data["metrics"])}
    return JSONResponse(body)


def rest_routes(*prefixes: str) -> list[Route]:
    """The legacy routes under each prefix (the bare prefix answers 400 like an empty list)."""
    routes = []
    for prefix in prefixes:
        routes.append(Route(f"{prefix}/{{instances:path}}", legacy_metrics, methods=["GET"]))
        routes.append(Route(prefix, legacy_metrics, methods=["GET"]))
    return routes
