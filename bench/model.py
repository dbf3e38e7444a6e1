"""What a benchmark run measured: plain immutable records, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "DRIVER",
    "GRAPHQL",
    "HEALTH",
    "METRICS_PATHS",
    "REST",
    "Environment",
    "ExplainStat",
    "Figure",
    "InsertStat",
    "Ratio",
    "Results",
    "StageTiming",
    "Summary",
    "Throughput",
]

REST = "REST"
GRAPHQL = "GraphQL"
DRIVER = "driver"
HEALTH = "health"
#: The three ways of getting the same metrics, in report order.
METRICS_PATHS = (REST, GRAPHQL, DRIVER)


@dataclass(frozen=True, slots=True)
class Summary:
    """Timing samples reduced to order statistics, in seconds."""

    n: int
    median: float
    p95: float
    minimum: float
    maximum: float
    p25: float
    p75: float

    @property
    def notch(self) -> float:
        """Half-width of the boxplot notch, 1.58·IQR/√n: medians whose notches do not
        overlap differ at roughly 95% confidence (McGill, Tukey and Larsen, 1978)."""
        return 1.58 * (self.p75 - self.p25) / self.n**0.5 if self.n else float("inf")

    @property
    def spread(self) -> float:
        """p95 over median: 1.0 is perfectly steady."""
        return self.p95 / self.median if self.median else float("nan")


@dataclass(frozen=True, slots=True)
class InsertStat:
    """One benchmark instance and how long its messages took to generate and insert."""

    instance: str
    messages: int
    generate_s: float
    insert_s: float

    @property
    def rate(self) -> float:
        """Inserted messages per second (insert time only, generation excluded)."""
        return self.messages / self.insert_s if self.insert_s else float("nan")


@dataclass(frozen=True, slots=True)
class Figure:
    """The latency of one path (REST, GraphQL, driver, health) on one target."""

    target: str  # "10k", "100k", "3x10k", or "-" for health
    messages: int  # messages in the target, 0 for health
    path: str
    summary: Summary
    instances: int = 1  # instances summed by the request; 0 for health


@dataclass(frozen=True, slots=True)
class Throughput:
    """Concurrent clients hammering one path on one target."""

    target: str
    path: str
    clients: int
    completed: int
    errors: int
    seconds: float
    latency: Summary | None
    first_error: str | None = None

    @property
    def rps(self) -> float:
        return self.completed / self.seconds if self.seconds else float("nan")


@dataclass(frozen=True, slots=True)
class ExplainStat:
    """What ``explain`` (executionStats) says one metrics request reads."""

    target: str
    messages: int
    docs_examined: int | None
    keys_examined: int | None
    plan_stages: tuple[str, ...]
    cursor_ms: int | None  # executionTimeMillis of the read stage, when reported


@dataclass(frozen=True, slots=True)
class StageTiming:
    """One slice of the pipeline run on its own (driver path), to see where time goes."""

    stage: str
    summary: Summary


@dataclass(frozen=True, slots=True)
class Ratio:
    name: str
    value: float | None
    note: str = ""


@dataclass(frozen=True, slots=True)
class Environment:
    date: str
    cpu_count: int
    cpu_model: str
    platform: str
    python: str
    database: str


@dataclass(frozen=True, slots=True)
class Results:
    environment: Environment
    settings: tuple[tuple[str, str], ...]
    inserts: tuple[InsertStat, ...]
    figures: tuple[Figure, ...]
    explains: tuple[ExplainStat, ...] = ()
    stages: tuple[StageTiming, ...] = ()
    throughput: Throughput | None = None
    elapsed_s: float = 0.0
    notes: tuple[str, ...] = field(default=())
    base_target: str = ""  # growth ratios and pipeline slices; "" = smallest single instance
