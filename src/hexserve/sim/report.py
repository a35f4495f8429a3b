"""A run's summary as a rich table."""

from __future__ import annotations

from rich.table import Table

from hexserve.sim.metrics import Summary


def summary_table(s: Summary) -> Table:
    t = Table(title=f"{s.plan} | {s.workload}", show_edge=False)
    for col in ("metric", "mean", "p50", "p90", "p99"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for name, d in (("TTFT s", s.ttft_s), ("TPOT s", s.tpot_s), ("end-to-end s", s.e2e_s)):
        t.add_row(name, *(f"{v:.3f}" for v in (d.mean, d.p50, d.p90, d.p99)))
    return t


def summary_lines(s: Summary) -> list[str]:
    scales = ", ".join(f"{k:g}x {v:.0%}" for k, v in s.attainment.items())
    return [
        f"{s.completed:,} of {s.requests:,} requests completed ({s.rejected} rejected, {s.preemptions} preemptions) "
        f"in {s.makespan_s:,.1f} s simulated ({s.sim_wall_s:.2f} s wall)",
        f"throughput {s.requests_per_s:.3f} req/s (plan predicts {s.predicted_rps:.3f} at peak), "
        f"{s.output_tokens_per_s:,.0f} output tokens/s",
        f"SLO attainment (TTFT {s.slo_ttft_s:g} s, TPOT {s.slo_tpot_s:g} s, x scale): {scales}",
        f"goodput {s.goodput_rps:.3f} req/s; ${s.price_per_hour:.2f}/h, "
        f"${s.usd_per_million_output_tokens:.2f} per 1M output tokens",
    ]
