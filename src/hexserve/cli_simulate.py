"""`hexserve simulate`: replay a workload against a plan file and report what it achieved."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from hexserve.cli_args import positive_int
from hexserve.costmodel.calibration import load_calibration
from hexserve.planner.plan import load_plan
from hexserve.sim.arrivals import parse_rate, with_rate
from hexserve.sim.metrics import summarize
from hexserve.sim.report import summary_lines, summary_table
from hexserve.sim.router import ROUTERS
from hexserve.sim.simulate import simulate
from hexserve.specs.cluster import load_cluster
from hexserve.specs.model import load_model
from hexserve.specs.workload import load_workload

LONG_RUN = 2000  # requests: above this a progress bar is shown (on a terminal)


def _run(args: argparse.Namespace, **inputs):
    if args.json or len(inputs["workload"].requests) < LONG_RUN or not sys.stderr.isatty():
        return simulate(**inputs)
    columns = (TextColumn("simulating"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} requests"),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("sim", total=len(inputs["workload"].requests))
        return simulate(**inputs, progress=lambda done, total: bar.update(task, completed=done))


def cmd_simulate(args: argparse.Namespace) -> int:
    rate = parse_rate(args.rate)  # first: a bad rate fails before any file is read
    plan = load_plan(args.plan)
    cluster = load_cluster(args.cluster or plan.cluster)
    model = load_model(args.model or plan.model)
    workload = load_workload(args.workload)
    if args.num_requests:
        workload = workload.sample(args.num_requests, args.seed)
    workload = with_rate(workload, rate, plan, args.seed)
    result = _run(args, plan=plan, cluster=cluster, model=model, workload=workload,
                  calibration=load_calibration(args.calibration), router=args.router)
    summary = summarize(result, args.slo_ttft or plan.workload.slo_ttft, args.slo_tpot or plan.workload.slo_tpot)
    if args.plot:
        from hexserve.sim.plots import attainment_vs_scale, latency_cdfs

        out = Path(args.plot)
        out.mkdir(parents=True, exist_ok=True)
        latency_cdfs({args.rate: result}, out / "latency_cdf.png")
        attainment_vs_scale({args.rate: result}, summary.slo_ttft_s, summary.slo_tpot_s, out / "slo_attainment.png")
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
        return 0
    console = Console(width=160 if not sys.stdout.isatty() else None, highlight=False)
    console.print(summary_table(summary))
    for line in summary_lines(summary):
        console.print(line)
    if args.plot:
        console.print(f"wrote {args.plot}/latency_cdf.png and {args.plot}/slo_attainment.png")
    return 0


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add `hexserve simulate` to the CLI's subcommands."""
    p = sub.add_parser("simulate", help="replay a workload against a plan file with the cost model")
    p.add_argument("--plan", required=True, help="a plan JSON written by `hexserve plan --out`")
    p.add_argument("--cluster", help="cluster YAML or shipped name (default: the plan's; must match its fingerprint)")
    p.add_argument("--model", help="model config or shipped name (default: the plan's)")
    p.add_argument("--workload", default="azure-conv",
                   help="azure-conv, azure-conv:CLASS (HPLD, HPHD, LPHD, LPLD), or a CSV/JSONL path[:CLASS]")
    p.add_argument("--rate", default="0.75peak",
                   help="arrivals: FRACTIONpeak of the plan's predicted peak req/s (default 0.75peak), a rate "
                        "in req/s (Poisson), inf (all at once: offline), or trace (the file's own timestamps)")
    p.add_argument("--num-requests", type=positive_int, help="sample this many requests of the workload (seeded)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling and of Poisson arrivals (default 0)")
    p.add_argument("--router", choices=ROUTERS, default="shares", help="follow the plan's shares or least loaded")
    p.add_argument("--slo-ttft", type=_positive_seconds,
                   help="TTFT reference for SLO attainment (default: plan's or 2 s)")
    p.add_argument("--slo-tpot", type=_positive_seconds, help="TPOT reference (default: plan's or 0.2 s)")
    p.add_argument("--calibration", help="calibration JSON (default: the built-in factors)")
    p.add_argument("--plot", metavar="DIR", help="write latency CDFs and SLO attainment vs scale PNGs here")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=cmd_simulate)
