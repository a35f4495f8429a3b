"""`hexserve plan`: HexGen's colocated planner, its baselines, and the explanation of a plan file."""

from __future__ import annotations

import argparse
import json

from hexserve.costmodel.calibration import load_calibration
from hexserve.errors import SpecError
from hexserve.planner.baselines import BASELINES, run_baseline
from hexserve.planner.build import plan_from_fits
from hexserve.planner.explain import explain_plan
from hexserve.planner.hexgen import plan_colocated
from hexserve.planner.plan import Plan, load_plan, save_plan
from hexserve.planner.stagecost import CostTable
from hexserve.planner.validate import validate_plan
from hexserve.planner.workload import OBJECTIVES, Workload
from hexserve.specs.cluster import load_cluster
from hexserve.specs.model import load_model


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 means no SLO), got {value}")
    return value or None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _explain_file(args: argparse.Namespace) -> Plan:
    plan = load_plan(args.explain)
    cluster = load_cluster(args.cluster or plan.cluster)
    model = load_model(args.model or plan.model)
    validate_plan(plan, cluster, model, load_calibration(args.calibration))
    return plan


def _make_plan(args: argparse.Namespace) -> Plan:
    if not args.cluster or not args.model:
        raise SpecError("plan: give --cluster and --model (or --explain PLAN.json to explain a saved plan)")
    cluster, model = load_cluster(args.cluster), load_model(args.model)
    calibration = load_calibration(args.calibration)
    workload = Workload(args.prompt_len, args.output_len, args.slo_ttft, args.slo_tpot)
    if args.baseline is None:
        return plan_colocated(model, cluster, workload, calibration, args.objective, args.seed)
    table = CostTable(model, cluster, calibration, workload)
    result = run_baseline(table, args.baseline, args.tp, args.pp)
    if not result.fits:
        short = result.problems[0] if result.problems else "no layout meets the SLOs"
        raise SpecError(f"--baseline {args.baseline}: infeasible on {cluster.name}: {short}")
    return plan_from_fits(table, result.fits, f"baseline:{args.baseline}", "throughput")


def cmd_plan(args: argparse.Namespace) -> int:
    plan = _explain_file(args) if args.explain else _make_plan(args)
    if args.out:
        save_plan(plan, args.out)
    if args.json:
        print(json.dumps(plan.to_json(), indent=2))
    else:
        print(explain_plan(plan, load_cluster(args.cluster or plan.cluster)))
        if args.out:
            print(f"\nwrote {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `hexserve plan` to the CLI's subcommands."""
    p = sub.add_parser("plan", help="plan replicas and asymmetric TP/PP layouts (HexGen), or explain a plan file")
    p.add_argument("--cluster", help="a cluster YAML file or shipped name (hetero-1, hexgen-case, ...)")
    p.add_argument("--model", help="config.json, checkpoint folder, or a shipped name (llama-2-70b, ...)")
    p.add_argument("--prompt-len", type=_positive, default=512, help="mean prompt tokens (default 512)")
    p.add_argument("--output-len", type=_positive, default=128, help="mean output tokens (default 128)")
    p.add_argument("--slo-ttft", type=_seconds, default=None, help="time-to-first-token target, seconds (default none)")
    p.add_argument("--slo-tpot", type=_seconds, default=0.2,
                   help="time-per-output-token target in seconds (default 0.2; 0 for none)")
    p.add_argument("--mode", choices=["colocated"], default="colocated", help="colocated replicas (HexGen)")
    p.add_argument("--objective", choices=OBJECTIVES, default="throughput",
                   help="throughput (default), per-dollar (tokens/s per $/h) or latency")
    p.add_argument("--baseline", choices=BASELINES, help="plan a baseline instead of searching")
    p.add_argument("--tp", type=_positive, help="with --baseline symmetric: the TP degree of every stage")
    p.add_argument("--pp", type=_positive, help="with --baseline symmetric: the number of stages")
    p.add_argument("--seed", type=int, default=0, help="seed of the search's tie-breaking (default 0)")
    p.add_argument("--calibration", help="calibration JSON (default: the built-in factors)")
    p.add_argument("--out", help="write the plan file here")
    p.add_argument("--explain", metavar="FILE", help="validate and explain a saved plan instead of planning")
    p.add_argument("--json", action="store_true", help="print the plan JSON instead of the explanation")
    p.set_defaults(run=cmd_plan)
