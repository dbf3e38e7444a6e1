"""``latency.png``: median latency against instance size, per path (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from bench.model import HEALTH, METRICS_PATHS, Figure, Results

__all__ = ["plot_latency"]

_STYLE = {"REST": ("tab:blue", "o"), "GraphQL": ("tab:orange", "s"), "driver": ("tab:green", "^")}


def _series(figures: Sequence[Figure], path: str, *, consolidated: bool) -> list[Figure]:
    chosen = [
        f for f in figures if f.path == path and (f.instances > 1) == consolidated and f.messages
    ]
    return sorted(chosen, key=lambda f: f.messages)


def plot_latency(results: Results, output: Path) -> None:
    """Medians joined by lines, bars up to p95; hollow markers for the consolidated list;
    the health round trip as a dashed floor. Log-scale on both axes."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for path in METRICS_PATHS:
        color, marker = _STYLE.get(path, ("tab:gray", "x"))
        series = _series(results.figures, path, consolidated=False)
        if series:
            xs = [f.messages for f in series]
            ys = [f.summary.median * 1000 for f in series]
            up = [(f.summary.p95 - f.summary.median) * 1000 for f in series]
            bars: list[list[float]] = [[0.0] * len(up), up]
            ax.errorbar(xs, ys, yerr=bars, color=color, marker=marker, capsize=3, label=path)
        for f in _series(results.figures, path, consolidated=True):
            ax.plot(
                [f.messages],
                [f.summary.median * 1000],
                marker=marker,
                markerfacecolor="none",
                color=color,
                linestyle="none",
                label=f"{path}, {f.target} consolidated",
            )
    health = next((f for f in results.figures if f.path == HEALTH), None)
    if health is not None:
        ax.axhline(
            health.summary.median * 1000,
            color="gray",
            linestyle="--",
            label=f"GET /health ({health.summary.median * 1000:.2f} ms)",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("messages in the request's instances")
    ax.set_ylabel("latency, ms (median; bar to p95)")
    ax.set_title(f"Metrics latency vs data size\n{results.environment.database}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
