"""The REST paths: front doors that run a GraphQL operation and reshape its result.

- ``GET /metrics/{instances}[?from=…&to=…]``: the legacy body (for that range);
- ``GET /metrics/{instances}/series?from=…&to=…&interval=day[&timezone=…]``: the series,
  as JSON (``{"success": true, "series": {…}}``) or, with ``Accept: text/csv`` or
  ``format=csv``, as CSV for spreadsheets.

The series route is matched first, so ``/metrics/a,b/series`` is the series of ``a`` and
``b``; ``/metrics/series`` stays the metrics of an instance named "series" (and
``/metrics/series/series`` its series). An instance whose name ends in ``/series`` is
read through GraphQL.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from graph.context import build_context
from graph.errors import error_code
from graph.query import schema
from graph.responses import JSONBody, rest_error
from graph.types import Interval, parse_datetime
from resolvers import BadUserInput
from resolvers.pipeline import KNOWN_STATUSES, KNOWN_TYPES

__all__ = [
    "CSV_COUNTERS",
    "METRICS_QUERY",
    "SERIES_QUERY",
    "reshape",
    "rest_routes",
    "series_csv",
]

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

#: What ``GET /metrics/{instances}`` runs (``range`` null without ``from`` and ``to``).
METRICS_QUERY = f"""
query LegacyMetrics($instances: [String!]!, $range: TimeRange) {{
  metrics(instances: $instances, range: $range) {{{LEGACY_FIELDS}  }}
}}
"""

#: The counters of a series point, in the order of the JSON and of the CSV columns.
CSV_COUNTERS = (
    "totalMessages",
    "messagesSent",
    "messagesReceived",
    "groupMessages",
    "individualMessages",
    "messagesWithMedia",
)

#: What ``GET /metrics/{instances}/series`` runs.
SERIES_QUERY = f"""
query LegacySeries(
  $instances: [String!]!, $range: TimeRange!, $interval: Interval!, $timezone: String!
) {{
  series(instances: $instances, range: $range, interval: $interval, timezone: $timezone) {{
    instance instances interval timezone
    points {{ start end {" ".join(CSV_COUNTERS)}
      messagesByType {{ key count }} messagesByStatus {{ key count }} }}
  }}
}}
"""

_SUCCESS = "Metrics retrieved successfully"
_INTERVALS = ", ".join(interval.name.lower() for interval in Interval)
#: A ``+`` left unencoded in a query string arrives as a space: ``…T00:00:00 05:30``.
_SPACED_OFFSET = re.compile(r"(.*\d\d:\d\d(?::\d\d(?:[.,]\d+)?)?) (\d\d(?::?\d\d)?)")
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def reshape(metrics: dict[str, Any]) -> dict[str, Any]:
    """GraphQL's ``[{key, count}]`` lists become JSON objects; everything else as is."""
    return {
        field: {item["key"]: item["count"] for item in value} if isinstance(value, list) else value
        for field, value in metrics.items()
    }


def reshape_series(series: dict[str, Any]) -> dict[str, Any]:
    """The series with each point reshaped like the legacy body."""
    return {**series, "points": [reshape(point) for point in series["points"]]}


def series_csv(series: Mapping[str, Any]) -> str:
    """A reshaped series as CSV: one row per point under a header of the counters, then
    ``byType.<key>`` and ``byStatus.<key>`` for the known keys and every other key of any
    point (by name); a key a point lacks is 0 there. Every key is behind its prefix, so
    no cell can start with a character a spreadsheet reads as a formula (= + - @)."""
    points = series["points"]
    types = _columns(KNOWN_TYPES, (point["messagesByType"] for point in points))
    statuses = _columns(KNOWN_STATUSES, (point["messagesByStatus"] for point in points))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "start",
            "end",
            *CSV_COUNTERS,
            *(f"byType.{key}" for key in types),
            *(f"byStatus.{key}" for key in statuses),
        ]
    )
    for point in points:
        writer.writerow(
            [
                point["start"],
                point["end"],
                *(point[counter] for counter in CSV_COUNTERS),
                *(point["messagesByType"].get(key, 0) for key in types),
                *(point["messagesByStatus"].get(key, 0) for key in statuses),
            ]
        )
    return out.getvalue()


def _columns(known: Iterable[str], maps: Iterable[Mapping[str, int]]) -> list[str]:
    first = list(known)
    seen = {key for counts in maps for key in counts}
    return first + sorted(seen.difference(first))


async def legacy_metrics(request: Request) -> Response:
    """``GET /metrics/{instances}``: one name or a comma-separated list; ``from`` and
    ``to`` (together) restrict it to a range."""
    try:
        variables = {"instances": _names(request), "range": _range(request.query_params)}
    except BadUserInput as error:
        return rest_error(code=error.code, message=error.message)
    data = await _execute(request, METRICS_QUERY, variables)
    if isinstance(data, Response):
        return data
    body = {"success": True, "message": _SUCCESS, "metrics": reshape(data["metrics"])}
    return JSONBody(body)


async def legacy_series(request: Request) -> Response:
    """``GET /metrics/{instances}/series?from=…&to=…&interval=day[&timezone=…]``."""
    params = request.query_params
    try:
        as_csv = _wants_csv(params, request.headers.get("accept", ""))
        variables = {
            "instances": _names(request),
            "range": _required_range(params),
            "interval": _interval(params),
            "timezone": _timezone(params),
        }
    except BadUserInput as error:
        return rest_error(code=error.code, message=error.message)
    data = await _execute(request, SERIES_QUERY, variables)
    if isinstance(data, Response):
        return data
    series = reshape_series(data["series"])
    if as_csv:
        return _csv_response(series)
    return JSONBody({"success": True, "series": series}, headers={"Vary": "Accept"})


async def _execute(request: Request, query: str, variables: dict[str, Any]) -> Any:
    """The operation's data, or the REST error of its first error."""
    result = await schema.execute(
        query, variable_values=variables, context_value=build_context(request)
    )
    if result.errors:
        error = result.errors[0]
        return rest_error(code=error_code(error), message=error.message)
    assert result.data is not None
    return result.data


def _csv_response(series: Mapping[str, Any]) -> Response:
    label = _UNSAFE_FILENAME.sub("_", series["instance"]).strip("._")[:80] or "instances"
    filename = f"series-{label}-{series['interval'].lower()}.csv"
    return Response(
        series_csv(series),
        media_type="text/csv",  # Starlette adds "; charset=utf-8"
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Vary": "Accept"},
    )


def _names(request: Request) -> list[str]:
    names: str = request.path_params.get("instances", "")
    return names.split(",")


def _range(params: QueryParams) -> dict[str, str] | None:
    """``{from, to}`` when both are given, None when neither is; one alone is refused."""
    if "from" not in params and "to" not in params:
        return None
    return _required_range(params)


def _single(params: QueryParams, name: str) -> str | None:
    """The value of the parameter ``name`` (None when absent); given more than once, it
    is refused rather than one value picked (a proxy may read another than we would)."""
    values = params.getlist(name)
    if len(values) > 1:
        raise BadUserInput(f"`{name}` is given {len(values)} times; give it once.")
    return values[0] if values else None


def _required_range(params: QueryParams) -> dict[str, str]:
    if "from" not in params or "to" not in params:
        raise BadUserInput(
            "Give `from` and `to` together: ISO 8601 date-times with a UTC offset, "
            "e.g. ?from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z."
        )
    return {"from": _date(params, "from"), "to": _date(params, "to")}


def _date(params: QueryParams, name: str) -> str:
    value = _single(params, name) or ""
    spaced = _SPACED_OFFSET.fullmatch(value)
    if spaced:
        value = f"{spaced[1]}+{spaced[2]}"
    try:
        return parse_datetime(value).isoformat()
    except BadUserInput as error:
        raise BadUserInput(f"`{name}`: {error.message} (Encode + as %2B.)") from None


def _timezone(params: QueryParams) -> str:
    """``timezone``, UTC when absent. No IANA name has a space: one is the ``+`` of
    ``Etc/GMT+5`` left unencoded, which a query string turns into a space."""
    value = _single(params, "timezone")
    return "UTC" if value is None else value.replace(" ", "+")


def _interval(params: QueryParams) -> str:
    value = _single(params, "interval") or ""
    if value.upper() not in Interval.__members__:
        raise BadUserInput(f"`interval` must be one of {_INTERVALS}; got {value[:32]!r}.")
    return value.upper()


def _wants_csv(params: QueryParams, accept: str) -> bool:
    """``format=csv|json`` when given, else CSV when ``Accept`` prefers ``text/csv``."""
    chosen = _single(params, "format")
    if chosen is not None:
        if chosen.lower() not in ("csv", "json"):
            raise BadUserInput(f"`format` must be csv or json; got {chosen[:32]!r}.")
        return chosen.lower() == "csv"
    weights = _accept_weights(accept)
    csv_weight = weights.get("text/csv", 0.0)
    return csv_weight > 0 and csv_weight >= weights.get("application/json", 0.0)


def _accept_weights(accept: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for media_range in accept.split(","):
        name, *params = (part.strip().lower() for part in media_range.split(";"))
        weight = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[name] = max(weights.get(name, 0.0), weight)
    return weights


def rest_routes(*prefixes: str) -> list[Route]:
    """The REST routes under each prefix (the bare prefix answers 400 like an empty list);
    the series route comes first, or ``{instances:path}`` would swallow it."""
    routes = []
    for prefix in prefixes:
        routes.append(Route(f"{prefix}/{{instances:path}}/series", legacy_series, methods=["GET"]))
        routes.append(Route(f"{prefix}/{{instances:path}}", legacy_metrics, methods=["GET"]))
        routes.append(Route(prefix, legacy_metrics, methods=["GET"]))
    return routes
