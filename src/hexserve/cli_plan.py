"""`hexserve plan`: HexGen's colocated planner, HexGen-2's disaggregated planner (`--mode`), their
baselines, the explanation of a plan file and its picture (`--draw`)."""

from __future__ import annotations

import argparse
import json

from hexserve.cli_args import positive_int
from hexserve.costmodel.calibration import load_calibration
from hexserve.errors import SpecError
from hexserve.planner.auto import plan_auto
from hexserve.planner.baselines import BASELINES, run_baseline
from hexserve.planner.build import plan_from_fits
from hexserve.planner.explain import explain_plan
from hexserve.planner.hexgen import plan_colocated
from hexserve.planner.hexgen2 import TIME_BUDGET_S, plan_disaggregated
from hexserve.planner.plan import Plan, load_plan, save_plan
from hexserve.planner.stagecost import CostTable
from hexserve.planner.validate import validate_plan
from hexserve.planner.workload import OBJECTIVES, WORKLOAD_CLASSES, Workload, class_lengths
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


MODES = ("colocated", "disaggregated", "auto")


def _lengths(args: argparse.Namespace) -> tuple[int, int]:
    """Mean prompt and output tokens: a workload class's, or the flags' (512 / 128 by default)."""
    if args.workload is not None:
        if args.prompt_len is not None or args.output_len is not None:
            raise SpecError("--workload: give a workload class or --prompt-len/--output-len, not both")
        return class_lengths(args.workload)
    return args.prompt_len or 512, args.output_len or 128


def _check_mode(args: argparse.Namespace) -> None:
    if args.mode not in MODES:
        raise SpecError(f"--mode: unknown mode {args.mode!r}; use one of {', '.join(MODES)}")
    if args.mode == "disaggregated" and args.objective != "throughput":
        raise SpecError(f"--objective {args.objective}: the disaggregated planner maximises throughput; "
                        "use --objective throughput or --mode auto")
    if args.mode != "colocated" and args.baseline is not None:
        raise SpecError(f"--baseline: baselines are colocated plans; drop --mode {args.mode}")
    if args.time_budget is not None and args.time_budget <= 0:
        raise SpecError(f"--time-budget: must be > 0 seconds (got {args.time_budget})")


def _explain_file(args: argparse.Namespace) -> Plan:
    plan = load_plan(args.explain)
    cluster = load_cluster(args.cluster or plan.cluster)
    model = load_model(args.model or plan.model)
    validate_plan(plan, cluster, model, load_calibration(args.calibration))
    return plan


def _make_plan(args: argparse.Namespace) -> Plan:
    if not args.cluster or not args.model:
        raise SpecError("plan: give --cluster and --model (or --explain PLAN.json to explain a saved plan)")
    _check_mode(args)
    cluster, model = load_cluster(args.cluster), load_model(args.model)
    calibration = load_calibration(args.calibration)
    workload = Workload(*_lengths(args), args.slo_ttft, args.slo_tpot)
    budget = args.time_budget or TIME_BUDGET_S
    if args.mode == "disaggregated":
        return plan_disaggregated(model, cluster, workload, calibration, args.seed, budget)
    if args.mode == "auto":
        return plan_auto(model, cluster, workload, calibration, args.objective, args.seed, budget)
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
    if args.draw:
        from hexserve.planner.draw import draw_plan  # matplotlib loads only when a picture is asked for

        draw_plan(plan, load_cluster(args.cluster or plan.cluster), args.draw)
    if args.json:
        print(json.dumps(plan.to_json(), indent=2))
    else:
        print(explain_plan(plan, load_cluster(args.cluster or plan.cluster)))
        for path in (args.out, args.draw):
            if path:
                print(f"\nwrote {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `hexserve plan` to the CLI's subcommands."""
    p = sub.add_parser(
        "plan", help="plan replicas with asymmetric TP/PP, colocated (HexGen) or disaggregated (HexGen-2)"
    )
    p.add_argument("--cluster", help="a cluster YAML file or shipped name (hetero-1, hexgen-case, ...)")
    p.add_argument("--model", help="config.json, checkpoint folder, or a shipped name (llama-2-70b, ...)")
    p.add_argument("--prompt-len", type=positive_int, default=None, help="mean prompt tokens (default 512)")
    p.add_argument("--output-len", type=positive_int, default=None, help="mean output tokens (default 128)")
    p.add_argument("--workload", metavar="CLASS",
                   help=f"a HexGen-2 workload class of the Azure conversation trace, for its mean lengths: "
                        f"{', '.join(f'{k} ({p}/{o})' for k, (p, o) in WORKLOAD_CLASSES.items())}")
    p.add_argument("--slo-ttft", type=_seconds, default=None, help="time-to-first-token target, seconds (default none)")
    p.add_argument("--slo-tpot", type=_seconds, default=0.2,
                   help="time-per-output-token target in seconds (default 0.2; 0 for none)")
    p.add_argument("--mode", default="colocated",
                   help="colocated replicas (HexGen, default), disaggregated prefill/decode replicas (HexGen-2), "
                        "or auto: plan both, keep the better and say why")
    p.add_argument("--time-budget", type=float, default=None, metavar="S",
                   help=f"seconds for the disaggregated refinement (default {TIME_BUDGET_S:g})")
    p.add_argument("--draw", metavar="PNG", help="also draw the plan on the device graph to this file")
    p.add_argument("--objective", choices=OBJECTIVES, default="throughput",
                   help="throughput (default), per-dollar (tokens/s per $/h) or latency")
    p.add_argument("--baseline", choices=BASELINES, help="plan a baseline instead of searching")
    p.add_argument("--tp", type=positive_int, help="with --baseline symmetric: the TP degree of every stage")
    p.add_argument("--pp", type=positive_int, help="with --baseline symmetric: the number of stages")
    p.add_argument("--seed", type=int, default=0, help="seed of the search's tie-breaking (default 0)")
    p.add_argument("--calibration", help="calibration JSON (default: the built-in factors)")
    p.add_argument("--out", help="write the plan file here")
    p.add_argument("--explain", metavar="FILE", help="validate and explain a saved plan instead of planning")
    p.add_argument("--json", action="store_true", help="print the plan JSON instead of the explanation")
    p.set_defaults(run=cmd_plan)
