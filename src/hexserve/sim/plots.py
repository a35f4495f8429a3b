"""Pictures of runs (matplotlib, imported only when a plot is asked for)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hexserve.sim.metrics import SLO_SCALES, attainment, latencies
from hexserve.sim.result import SimResult


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def latency_cdfs(runs: dict[str, SimResult], path: str | Path) -> None:
    """TTFT, TPOT and end-to-end CDFs, one line per run."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for label, r in runs.items():
        for ax, values in zip(axes, latencies(r), strict=True):
            v = np.sort(values[~np.isnan(values)])
            ax.plot(v, np.arange(1, v.size + 1) / max(v.size, 1), label=label)
    for ax, name in zip(axes, ("TTFT (s)", "TPOT (s)", "end-to-end (s)"), strict=True):
        ax.set_xlabel(name)
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def attainment_vs_scale(runs: dict[str, SimResult], slo_ttft: float, slo_tpot: float, path: str | Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, r in runs.items():
        a = attainment(r, slo_ttft, slo_tpot)
        ax.plot(list(a), [100 * v for v in a.values()], marker="o", label=label)
    ax.set_xlabel(f"SLO scale (x TTFT {slo_ttft:g} s, TPOT {slo_tpot:g} s)")
    ax.set_ylabel("SLO attainment (%)")
    ax.set_xticks(SLO_SCALES)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def attainment_vs_rate(curves: dict[str, list[tuple[float, float]]], path: str | Path) -> None:
    """curves: label -> [(request rate, attainment fraction)]."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, points in curves.items():
        ax.plot([p[0] for p in points], [100 * p[1] for p in points], marker="o", label=label)
    ax.set_xlabel("request rate (req/s)")
    ax.set_ylabel("SLO attainment (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
