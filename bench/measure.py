"""Timing loops: one request at a time, interleaved paths, and concurrent clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from bench.anatomy import split_pipeline
from bench.model import DRIVER, GRAPHQL, HEALTH, REST, StageTiming
from bench.query import FULL_METRICS_QUERY
from bench.stats import summarize
from resolvers import Database, InstanceRef, build_metrics_pipeline
from resolvers.pipeline import MetricsResult, read_metrics

__all__ = [
    "Load",
    "MeasurementError",
    "Probe",
    "driver_probe",
    "explain_metrics",
    "graphql_probe",
    "health_probe",
    "measure_load",
    "measure_rounds",
    "rest_probe",
    "time_slices",
    "warm_up",
]


class MeasurementError(RuntimeError):
    """A request failed or answered wrongly: its timing would mean nothing."""


@dataclass(frozen=True, slots=True)
class Probe:
    """One way to ask for something: ``send`` is timed, ``check`` runs after, untimed."""

    path: str
    send: Callable[[], Awaitable[Any]]
    check: Callable[[Any], None]

    async def timed(self) -> float:
        started = time.perf_counter()
        answer = await self.send()
        elapsed = time.perf_counter() - started
        self.check(answer)
        return elapsed


# --- probes --------------------------------------------------------------------------


def _check_http(response: httpx.Response, what: str) -> Any:
    if response.status_code != 200:
        raise MeasurementError(f"{what}: HTTP {response.status_code}: {response.text[:300]}")
    return response.json()


def _check_total(what: str, total: object, expected: int) -> None:
    if total != expected:
        raise MeasurementError(f"{what}: totalMessages {total!r}, expected {expected}")


def rest_probe(
    client: httpx.AsyncClient, *, names: Sequence[str], token: str, expected: int
) -> Probe:
    url = "/metrics/" + quote(",".join(names), safe=",")

    async def send() -> httpx.Response:
        return await client.get(url, headers={"token": token})

    def check(response: httpx.Response) -> None:
        body = _check_http(response, f"GET {url}")
        _check_total(f"GET {url}", (body.get("metrics") or {}).get("totalMessages"), expected)

    return Probe(REST, send, check)


def graphql_probe(
    client: httpx.AsyncClient, *, names: Sequence[str], token: str, expected: int
) -> Probe:
    payload = {"query": FULL_METRICS_QUERY, "variables": {"instances": list(names)}}

    async def send() -> httpx.Response:
        return await client.post("/graphql", json=payload, headers={"token": token})

    def check(response: httpx.Response) -> None:
        body = _check_http(response, "POST /graphql")
        if body.get("errors"):
            raise MeasurementError(f"POST /graphql: {body['errors']}")
        _check_total("POST /graphql", body["data"]["metrics"]["totalMessages"], expected)

    return Probe(GRAPHQL, send, check)


def driver_probe(db: Database, *, refs: Sequence[InstanceRef], expected: int) -> Probe:
    """The aggregation alone, as the service runs it, from the harness's own client."""

    async def send() -> MetricsResult:
        pipeline = build_metrics_pipeline(instances=refs, now=datetime.now(UTC))
        cursor = await db.messages.aggregate(pipeline)
        rows = await cursor.to_list()
        return read_metrics(rows[0] if rows else {})

    def check(result: MetricsResult) -> None:
        _check_total("driver", result.total_messages, expected)

    return Probe(DRIVER, send, check)


def health_probe(client: httpx.AsyncClient) -> Probe:
    async def send() -> httpx.Response:
        return await client.get("/health")

    def check(response: httpx.Response) -> None:
        _check_http(response, "GET /health")

    return Probe(HEALTH, send, check)


# --- loops ---------------------------------------------------------------------------


async def warm_up(probes: Sequence[Probe], rounds: int) -> None:
    """Requests whose timings are discarded: connections, caches, lazy initialisation."""
    for _ in range(rounds):
        for probe in probes:
            await probe.timed()


async def measure_rounds(
    probes: Sequence[Probe], *, runs: int, min_runs: int, budget_s: float
) -> dict[str, list[float]]:
    """Timings per path, taken in rounds of one request per path so that drift hits every
    path alike (the order rotates each round). Stops after ``runs`` rounds, or earlier once
    ``min_runs`` rounds are done and another would overrun ``budget_s`` per path."""
    samples: dict[str, list[float]] = {probe.path: [] for probe in probes}
    deadline = budget_s * len(probes)
    started = time.perf_counter()
    for done in range(runs):
        elapsed = time.perf_counter() - started
        if done and done >= min_runs and elapsed + elapsed / done > deadline:
            break
        shift = done % len(probes)
        for probe in [*probes[shift:], *probes[:shift]]:
            samples[probe.path].append(await probe.timed())
    return samples


@dataclass(slots=True)
class Load:
    """What concurrent clients achieved."""

    completed: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_error: str | None = None


async def measure_load(
    probe: Probe, *, clients: int, max_requests: int, max_seconds: float
) -> Load:
    """``clients`` loops sending ``probe`` back to back until ``max_requests`` are sent or
    ``max_seconds`` pass; requests in flight then finish and count."""
    load = Load()
    issued = 0
    started = time.perf_counter()
    deadline = started + max_seconds

    async def client() -> None:
        nonlocal issued
        while issued < max_requests and time.perf_counter() < deadline:
            issued += 1
            try:
                load.latencies.append(await probe.timed())
                load.completed += 1
            except Exception as exc:  # counted and reported, the load goes on
                load.errors += 1
                load.first_error = load.first_error or f"{type(exc).__name__}: {exc}"[:300]

    await asyncio.gather(*(client() for _ in range(clients)))
    load.seconds = time.perf_counter() - started
    return load


# --- the database's own view -----------------------------------------------------------


async def explain_metrics(db: Database, refs: Sequence[InstanceRef]) -> Mapping[str, Any]:
    pipeline = build_metrics_pipeline(instances=refs, now=datetime.now(UTC))
    command = {"aggregate": "messages", "pipeline": pipeline, "cursor": {}}
    return await db.command("explain", command, verbosity="executionStats")


async def time_slices(db: Database, refs: Sequence[InstanceRef], runs: int) -> list[StageTiming]:
    """Each slice of the pipeline (the read, then every facet after it) timed alone."""
    pipeline = build_metrics_pipeline(instances=refs, now=datetime.now(UTC))
    timings = []
    for name, stages in split_pipeline(pipeline):
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            cursor = await db.messages.aggregate(stages)
            await cursor.to_list()
            samples.append(time.perf_counter() - started)
        timings.append(StageTiming(stage=name, summary=summarize(samples)))
    return timings
