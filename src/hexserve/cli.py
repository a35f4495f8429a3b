"""The `hexserve` command: estimate | cluster (more subcommands arrive with the planner and runtime)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from rich.console import Console
from rich.table import Table

from hexserve.cli_args import positive_int
from hexserve.costmodel.calibration import load_calibration
from hexserve.costmodel.estimate import Estimate, Workload, estimate
from hexserve.errors import SpecError
from hexserve.specs.cluster import Cluster, cluster_from_gpus, load_cluster
from hexserve.specs.model import load_model

GIB = 2**30


def _console() -> Console:
    # A wide fixed width keeps tables whole when output goes to a file or a pipe.
    return Console(width=160 if not sys.stdout.isatty() else None, highlight=False)


# ----------------------------------------------------------------------------- estimate


def _devices_for(args: argparse.Namespace) -> Cluster:
    if bool(args.gpus) == bool(args.cluster):
        raise SpecError("estimate: give exactly one of --gpus (e.g. 8xh100) or --cluster (a YAML file or shipped name)")
    return cluster_from_gpus(args.gpus, name=args.gpus) if args.gpus else load_cluster(args.cluster)


def print_estimate(e: Estimate, console: Console) -> None:
    m, w = e.model, e.workload
    console.print(
        f"[bold]{m.name}[/]: {m.params:,} parameters, {m.weights_bytes / GIB:.1f} GiB of weights ({m.dtype}), "
        f"{m.kv_bytes_per_token:,} KV bytes per token, {m.num_layers} layers"
    )
    console.print(f"on [bold]{e.cluster.name}[/]: {len(e.devices)} devices, ${e.cluster.price_per_hour:.2f}/h")
    table = Table(show_edge=False)
    for col in ("device", "type", "stage", "TP", "layers", "weights GiB", "used / usable GiB", "fits",
                "max KV tokens", "prefill ms", "decode ms"):
        table.add_column(col, justify="left" if col in ("device", "type") else "right")
    for d in e.devices:
        table.add_row(
            d.device.name,
            d.device.type.name,
            str(d.stage),
            str(d.shape.tp),
            f"{d.first_layer}-{d.first_layer + d.shape.num_layers - 1}",
            f"{d.memory.weights / GIB:.2f}",
            f"{d.memory.used(d.kv_tokens_needed) / GIB:.2f} / {d.memory.usable / GIB:.2f}",
            "yes" if d.fits else "[red]NO[/]",
            f"{d.memory.max_kv_tokens:,}",
            f"{d.prefill_s * 1e3:.2f}",
            f"{d.decode_step_s * 1e3:.2f}",
        )
    console.print(table)
    console.print(
        f"replica: prefill of one {w.prompt_len}-token prompt {e.prefill_s * 1e3:.1f} ms; decode step at batch "
        f"{w.decode_batch} x context {w.context_len} {e.decode_step_s * 1e3:.1f} ms "
        f"({w.decode_batch / e.decode_step_s:,.0f} tokens/s); KV cache holds {e.max_kv_tokens:,} tokens"
    )
    if e.fits:
        console.print(f"fits: yes (weights, workspace and the KV of {w.decode_batch} x {w.context_len} tokens)")
    else:
        console.print("[red]does not fit[/]: " + "; ".join(e.shortfalls()))
    console.print(f"[dim]per-device times are the device's stage; calibration: {e.calibration_source}[/]")


def cmd_estimate(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    cluster = _devices_for(args)
    calibration = load_calibration(args.calibration)
    workload = Workload(args.prompt_len, args.batch, args.context_len)
    result = estimate(model, cluster, calibration, tp=args.tp, workload=workload)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print_estimate(result, _console())
    return 0


# ----------------------------------------------------------------------------- cluster


def print_cluster(cluster: Cluster, console: Console) -> None:
    counts = ", ".join(f"{n}x{t}" for t, n in cluster.type_counts().items())
    price = f"${cluster.price_per_hour:.2f}/h"
    console.print(f"[bold]{cluster.name}[/]: {len(cluster.devices)} devices ({counts}), {price}")
    if cluster.description:
        console.print(cluster.description)
    table = Table(show_edge=False)
    for col in ("node", "devices", "memory GiB", "TFLOPS", "mem GB/s", "$/h", "intra link", "host GiB"):
        table.add_column(col, justify="left" if col in ("node", "devices", "intra link") else "right")
    for node in cluster.nodes:
        kinds = {}
        for d in node.devices:
            kinds.setdefault(d.type.name, []).append(d)
        for i, (name, ds) in enumerate(kinds.items()):
            t = ds[0].type
            link = node.intra_link
            table.add_row(
                node.name if i == 0 else "",
                f"{len(ds)}x {name}",
                f"{t.memory_gib:g}",
                f"{t.tflops:g}",
                f"{t.mem_bandwidth_gbps:g}",
                f"{sum(d.price_per_hour for d in ds):.2f}",
                f"{link.kind} {link.bandwidth_gbps:g} GB/s {link.latency_us:g} us" if i == 0 else "",
                f"{node.host_memory_gib:g}" if i == 0 else "",
            )
    console.print(table)
    if len(cluster.nodes) > 1:
        d = cluster.inter_node_default
        console.print(f"between nodes: {d.kind} {d.bandwidth_gbps:g} GB/s, {d.latency_us:g} us")
        for pair, link in cluster.inter_node_pairs.items():
            a, b = sorted(pair)
            console.print(f"  {a} <-> {b}: {link.kind} {link.bandwidth_gbps:g} GB/s, {link.latency_us:g} us")


def cmd_cluster(args: argparse.Namespace) -> int:
    cluster = load_cluster(args.file)
    if args.json:
        g = cluster.graph()
        print(json.dumps({
            "name": cluster.name,
            "price_per_hour": cluster.price_per_hour,
            "devices": [{"index": d.index, "name": d.name, "type": d.type.name, "memory_gib": d.type.memory_gib,
                         "price_per_hour": d.price_per_hour} for d in cluster.devices],
            "edges": [{"a": a, "b": b, "bandwidth_gbps": e["bandwidth"] / 1e9, "latency_us": e["latency"] * 1e6}
                      for a, b, e in g.edges(data=True)],
        }, indent=2))
    else:
        print_cluster(cluster, _console())
    return 0


# ----------------------------------------------------------------------------- profile


def cmd_profile(args: argparse.Namespace) -> int:
    from hexserve.costmodel import profile  # imports torch: only for this command

    measured = profile.measure(threads=args.threads, world=args.world, quick=args.quick)
    data = profile.calibration_file(
        measured, peak_tflops=args.peak_tflops, peak_gbps=args.peak_gbps, link_gbps=args.link_gbps
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(data, f, indent=2)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    m = measured
    console = _console()
    console.print(f"[bold]{m.device}[/], {m.threads} thread(s), {m.dtype}")
    gemm, attention = m.matmul_tflops * 1e3, m.attention_tflops * 1e3
    console.print(f"  GEMM {gemm:.1f} GFLOP/s, causal attention {attention:.1f} GFLOP/s")
    console.print(f"  memory copy {m.memory_gbps:.1f} GB/s, smallest kernel {m.kernel_s * 1e6:.1f} us")
    if m.allreduce_s is not None:
        console.print(
            f"  gloo between {args.world} processes: all-reduce {m.allreduce_s * 1e6:.0f} us fixed, "
            f"{m.link_gbps:.2f} GB/s bus; send {m.p2p_s * 1e6:.0f} us"
        )
    (type_name, entry), = data["devices"].items()
    factors = ", ".join(f"{k}={v:.3g}" for k, v in entry.items())
    console.print(f"calibration for {type_name}: {factors}")
    if m.device == "cpu" and not args.peak_tflops:
        console.print(
            f"declare this CPU in a cluster file as tflops: {m.matmul_tflops:.3g}, "
            f"mem_bandwidth_gbps: {m.memory_gbps:.3g} (per device with {m.threads} thread(s))"
        )
    if args.out:
        console.print(f"wrote {args.out}; use it with --calibration {args.out}")
    return 0


# ----------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hexserve", description="Serve LLMs across heterogeneous GPUs, links and CPUs."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("estimate", help="memory and time of a model on a set of devices, device by device")
    p.add_argument("--model", required=True, help="config.json, checkpoint folder, or shipped name (llama-2-70b, ...)")
    p.add_argument("--gpus", help='devices on one node, e.g. "2xa100-80gb,1xl40"')
    p.add_argument("--cluster", help="a cluster YAML file or shipped name instead of --gpus")
    p.add_argument("--tp", type=positive_int, help="TP degree of every stage (default: widest per run of one type)")
    p.add_argument("--prompt-len", type=positive_int, default=1024, help="prompt tokens for the prefill figure")
    p.add_argument("--batch", type=positive_int, default=32, help="sequences in the decode-step figure")
    p.add_argument("--context-len", type=positive_int, default=1024, help="context tokens per decoding sequence")
    p.add_argument("--calibration", help="calibration JSON (default: the built-in factors)")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    p.set_defaults(run=cmd_estimate)

    p = sub.add_parser("cluster", help="show a cluster file: devices, prices, links")
    p.add_argument("file", help="a cluster YAML file or shipped name (h100x8, hetero-1, ...)")
    p.add_argument("--json", action="store_true", help="devices and every pairwise link as JSON")
    p.set_defaults(run=cmd_cluster)

    p = sub.add_parser("profile", help="measure this machine's device and write a calibration file")
    p.add_argument("--threads", type=positive_int, default=1, help="CPU threads per device (default 1)")
    p.add_argument("--world", type=positive_int, default=2, help="processes for the gloo collectives (1: skip)")
    p.add_argument("--peak-tflops", type=float, help="declared peak the efficiencies are relative to (CPU)")
    p.add_argument("--peak-gbps", type=float, help="declared memory bandwidth (CPU)")
    p.add_argument("--link-gbps", type=float, help="declared link bandwidth for the link efficiency")
    p.add_argument("--quick", action="store_true", help="smaller sizes: a rough profile in seconds")
    p.add_argument("--out", help="write the calibration JSON here")
    p.add_argument("--json", action="store_true", help="print the calibration JSON")
    p.set_defaults(run=cmd_profile)
    from hexserve.cli_plan import register as register_plan
    register_plan(sub)
    from hexserve.cli_generate import register as register_generate
    register_generate(sub)
    from hexserve.cli_serve import register as register_serve
    register_serve(sub)
    from hexserve.cli_bench import register as register_bench
    register_bench(sub)
    from hexserve.cli_simulate import register as register_simulate
    register_simulate(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except SpecError as e:
        print(f"hexserve {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
