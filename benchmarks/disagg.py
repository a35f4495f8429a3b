"""Disaggregated vs colocated plans of the same devices, measured on the runtime and replayed in the simulator.

    .venv/bin/python benchmarks/disagg.py [--quick] [--requests 10] [--scale 0.15] [--output-scale 0.3]
                                          [--max-output 48] [--rate 0.2] [--rounds 2] [--plans planner,hand]
                                          [--calibration FILE] [--out FILE]

Pairs of plans over the four CPU workers of cluster cpu-local (SmolLM2-135M, float32):
- planner: `hexserve plan --mode colocated` vs `--mode disaggregated`, both planned for the mean lengths of
  the requests below (the model's float32 bytes, built-in calibration, seed 0, TPOT SLO 0.2 s, 5 s of
  disaggregated refinement);
- hand: four colocated TP-1 replicas vs two TP-1 prefill replicas -> two TP-1 decode replicas.
Each plan runs at its own operating point (a planner plan: its predicted sequences in flight; a hand-written
one: the engine's default 64); every replica gets the same KV blocks, enough for all requests at once.

Requests: half drawn from the Azure conversation trace's HPLD class (long prompts, short outputs), half
from LPHD (short prompts, long outputs), shuffled; prompts scaled by --scale (capped at --max-prompt),
outputs by --output-scale (capped at --max-output, at least 4 tokens), random token ids, greedy,
ignore_eos; the same fixed seed for every plan. Two arrival patterns: all at once ("offline") and Poisson
at --rate req/s.

Per run, in the leader loop (this process steps `llm.step()` itself and looks at each request's tokens
after every step, as `llm.output(request).token_ids` would show them): when each request's first token,
second token and last token appeared, and for a disaggregated plan when it was placed on a decode
replica. Output throughput = output tokens / (last finish - first arrival); TTFT from the scheduled
arrival; TPOT = (finish - first token) / (output - 1). KV transfer: bytes and seconds from
`llm.stats().replicas` (seconds the decode workers spent in `recv`, waiting for the sender included).
Each worker's CPU seconds (/proc) against its busy seconds (executor timings) show how much of a core a
busy worker got. The plans of a pair are started side by side and their timed runs interleaved (ABBA),
each keeping the fastest of --rounds (other jobs share this machine's cores).

Then the simulator replays the same plans, lengths and arrivals with a calibration of this host
(`hexserve profile`, run once into a temp file unless --calibration is given) and the model's float32
bytes (the runtime computes in float32 on CPU). The simulator's first token of a disaggregated request is
when its KV reaches the decode replica, so the comparison uses that on both sides: the measured KV
arrival is estimated as the second token's time minus the request's later per-token interval, and TPOT is
that interval. A second replay scales the calibration's compute and memory rates by the CPU share the
workers got (the time-sharing check). Prints tables, writes benchmarks/results/disagg.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hexserve.costmodel.calibration import Calibration, load_calibration
from hexserve.planner.hexgen import plan_colocated
from hexserve.planner.hexgen2 import plan_disaggregated
from hexserve.planner.plan import Plan, Replica, Stage, load_plan
from hexserve.planner.workload import Workload as PlanWorkload
from hexserve.runtime.engine import LLM
from hexserve.runtime.sampling import SamplingParams
from hexserve.runtime.scheduler import DEFAULT_MAX_NUM_SEQS
from hexserve.sim.metrics import summarize
from hexserve.sim.simulate import simulate
from hexserve.specs.cluster import Cluster, load_cluster
from hexserve.specs.model import ModelSpec, load_model
from hexserve.specs.workload import Request as TraceRequest
from hexserve.specs.workload import Workload, load_workload

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = "cpu-local"
BLOCK = 16
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CAVEAT = ("This machine has {cores} CPU cores shared with other jobs: four single-thread worker processes (and "
          "the leader) time-share them, so absolute speeds here are a fraction of four real devices'.")


# ----------------------------------------------------------------------------- requests


@dataclasses.dataclass(frozen=True)
class Requests:
    prompts: list[list[int]]
    outputs: list[int]
    offline: list[float]  # arrival seconds: all at 0
    poisson: list[float]  # arrival seconds at --rate

    @property
    def prompt_lens(self) -> list[int]:
        return [len(p) for p in self.prompts]


def draw_lengths(n: int, scale: tuple[float, float], max_prompt: int, max_output: int,
                 seed: int) -> list[tuple[int, int]]:
    """n (prompt, output) lengths: half long prompts (HPLD), half long outputs (LPHD), shuffled (in strict
    turns a round-robin router would give every long prompt to the same replicas), scaled down to fit CPU
    time; at least 4 output tokens so each request has a per-token interval after its second token."""
    trace = load_workload("azure-conv")
    halves = [trace.of_class(k).sample(-(-n // 2), seed, keep_order=False).requests for k in ("HPLD", "LPHD")]
    mixed = [r for pair in zip(*halves, strict=True) for r in pair][:n]
    mixed = [mixed[i] for i in np.random.default_rng(seed).permutation(n)]
    return [(max(1, min(max_prompt, round(r.prompt_len * scale[0]))),
             max(4, min(max_output, round(r.output_len * scale[1])))) for r in mixed]


def make_requests(args, vocab: int) -> Requests:
    lengths = draw_lengths(args.requests, (args.scale, args.output_scale), args.max_prompt, args.max_output, args.seed)
    g = torch.Generator().manual_seed(args.seed)
    prompts = [torch.randint(100, vocab, (p,), generator=g).tolist() for p, _ in lengths]
    # The simulator's own Poisson draw, so the runtime and the simulator see the same arrival times.
    base = Workload("disagg", tuple(TraceRequest(0.0, p, o) for p, o in lengths))
    poisson = [r.arrival_s for r in base.with_poisson_arrivals(args.rate, args.seed).requests]
    return Requests(prompts, [o for _, o in lengths], [0.0] * len(lengths), poisson)


def as_workload(reqs: Requests, arrivals: list[float]) -> Workload:
    return Workload("disagg", tuple(TraceRequest(a, len(p), o)
                                    for a, p, o in zip(arrivals, reqs.prompts, reqs.outputs, strict=True)))


# ----------------------------------------------------------------------------- plans


def planner_pair(model: ModelSpec, cluster: Cluster, reqs: Requests, seed: int) -> tuple[Plan, Plan]:
    """What `hexserve plan` picks on these devices for the requests' mean lengths, in each mode."""
    w = PlanWorkload(round(float(np.mean(reqs.prompt_lens))), round(float(np.mean(reqs.outputs))), None, 0.2)
    cal = load_calibration()
    return plan_colocated(model, cluster, w, cal, "throughput", seed), plan_disaggregated(model, cluster, w, cal,
                                                                                          seed, 5.0)


def hand_pair(template: Plan, layers: int) -> tuple[Plan, Plan]:
    """4 x TP-1 colocated vs TP-1 prefill x2 -> TP-1 decode x2 (each prefill to both decodes by share)."""
    def rep(role: str, device: int, share: float) -> Replica:
        return Replica(role=role, stages=(Stage(devices=(device,), tp=1, layers=(0, layers)),), share=share)

    bare = dataclasses.replace(template, planner="hand-written", predicted=None, routing=(), notes=())
    colocated = dataclasses.replace(bare, replicas=tuple(rep("colocated", d, 0.25) for d in range(4)))
    disagg = dataclasses.replace(bare, replicas=(rep("prefill", 0, 0.5), rep("prefill", 1, 0.5),
                                                 rep("decode", 2, 0.5), rep("decode", 3, 0.5)))
    return colocated, disagg


def describe(plan: Plan) -> str:
    """One line: each replica's role, devices, TP and layers."""
    parts = []
    for r in plan.replicas:
        stages = " + ".join(f"TP-{s.tp} {s.layers[0]}-{s.layers[1] - 1} on {','.join(map(str, s.devices))}"
                            for s in r.stages)
        seqs = f", {r.predicted.in_flight} seqs" if r.predicted else ""
        parts.append(f"{r.role[0].upper()}[{stages}{seqs}]")
    return " ".join(parts)


def plan_json(plan: Plan) -> dict:
    return {"planner": plan.planner, "layout": describe(plan),
            "replicas": [{"role": r.role, "share": round(r.share, 4),
                          "in_flight": r.predicted.in_flight if r.predicted else None,
                          "stages": [{"devices": list(s.devices), "tp": s.tp, "layers": list(s.layers)}
                                     for s in r.stages]} for r in plan.replicas],
            "routing": [{"prefill": x.prefill, "decode": x.decode, "share": round(x.share, 4)} for x in plan.routing],
            "predicted_tokens_per_s": round(plan.predicted.tokens_per_s, 1) if plan.predicted else None}


def pairs(names: list[str], model: ModelSpec, cluster: Cluster, reqs: Requests, template: Plan) -> list[dict]:
    """The pairs asked for: each a name and its colocated and disaggregated plan."""
    made = {"planner": lambda: planner_pair(model, cluster, reqs, 0),
            "hand": lambda: hand_pair(template, model.num_layers)}
    out = []
    for name in names:
        if name not in made:
            raise SystemExit(f"--plans: unknown pair {name!r}; use planner and/or hand")
        colocated, disagg = made[name]()
        out.append({"pair": name, "plans": {"colocated": colocated, "disaggregated": disagg}})
    return out


# ----------------------------------------------------------------------------- runtime


def worker_pids(llm: LLM) -> dict[int, int]:
    return {w.spec.rank: w.process.pid for r in llm.replicas for w in r.executor.workers}


def cpu_seconds(pids: dict[int, int]) -> dict[int, float]:
    """CPU seconds (user + system) each worker process has used so far, from /proc."""
    out = {}
    for rank, pid in pids.items():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        out[rank] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def snapshot(llm: LLM) -> dict:
    """Everything cumulative that a run's figures are differences of."""
    timings = {rank: list(t) for r in llm.replicas for rank, t in r.executor.timings.items()}
    kv = [(s.kv_bytes_sent, s.kv_bytes_received, s.kv_seconds) for s in llm.stats().replicas]
    return {"timings": timings, "kv": kv, "cpu": cpu_seconds(worker_pids(llm)), "leader_cpu": time.process_time(),
            "t": time.perf_counter()}


def start_llm(plan: Plan, blocks: int) -> tuple[LLM, float]:
    """The plan's LLM (its own operating point, the given KV blocks) and its start-up seconds; a short
    warm-up (which for a disaggregated plan moves KV too) so the timed runs pay no first-use costs."""
    start = time.perf_counter()
    llm = LLM(plan=plan, num_kv_blocks=blocks, step_timeout_s=600.0)
    seconds = time.perf_counter() - start
    warm = [[100 + i] * 24 for i in range(len(plan.replicas))]
    llm.generate(warm, SamplingParams(max_tokens=4, temperature=0, ignore_eos=True))
    return llm, seconds


def drive(llm: LLM, reqs: Requests, arrivals: list[float]) -> dict:
    """Add each request at its arrival time and step the engine until all are done, noting per request
    when its first and second tokens and its finish appeared, and when it reached a decode replica."""
    n = len(reqs.prompts)
    params = [SamplingParams(max_tokens=o, temperature=0, ignore_eos=True) for o in reqs.outputs]
    decoders = {r.index for r in llm.replicas if r.role == "decode"}
    times = {k: [float("nan")] * n for k in ("first", "second", "placed", "finish")}
    added, live, begin = [], [], snapshot(llm)
    t0 = begin["t"]
    while len(added) < n or live:
        now = time.perf_counter() - t0
        while len(added) < n and arrivals[len(added)] <= now:
            i = len(added)
            added.append(llm.add_request(reqs.prompts[i], params[i]))
            if added[i].seq is None:
                raise RuntimeError(f"request {i} refused: {added[i].error}")
            live.append(i)
        if not llm.has_work():  # idle until the next arrival
            time.sleep(max(0.0, min(0.05, arrivals[len(added)] - now)) if len(added) < n else 0.0)
            continue
        llm.step()
        now = time.perf_counter() - t0
        live = [i for i in live if not note(added[i].seq, i, now, times, decoders)]
    end = snapshot(llm)
    outs = [llm.output(r) for r in added]
    bad = [o.error or "short output" for o, want in zip(outs, reqs.outputs, strict=True)
           if o.error or len(o.token_ids) != want]
    if bad:
        raise RuntimeError(f"a request failed: {bad[0]}")
    return {"times": times, "begin": begin, "end": end, "tokens": [o.token_ids for o in outs]}


def note(seq, i: int, now: float, times: dict, decoders: set[int]) -> bool:
    """Record what request i's sequence has reached by `now` (its token ids are what llm.output shows;
    read directly so the leader does not detokenize every step); True once it has finished."""
    got = len(seq.output_ids)
    for key, reached in (("first", got >= 1), ("second", got >= 2), ("placed", seq.replica in decoders)):
        if reached and np.isnan(times[key][i]):
            times[key][i] = now
    if seq.is_finished:
        times["finish"][i] = now
    return seq.is_finished


def dist(values: np.ndarray) -> dict:
    return {"mean": float(np.mean(values)), "p50": float(np.median(values)), "p90": float(np.percentile(values, 90))}


def latency(reqs: Requests, arrivals: list[float], times: dict) -> dict:
    """Throughput, TTFT and TPOT as a user of the runtime sees them, and as the simulator defines them
    (first token = KV at the decode replica, estimated as the second token minus the later interval)."""
    arrive, out = np.array(arrivals), np.array(reqs.outputs, dtype=float)
    first, second, finish, placed = (np.array(times[k]) for k in ("first", "second", "finish", "placed"))
    later = (finish - second) / (out - 2)  # per-token interval after the second token
    disagg = not np.isnan(placed).all()
    kv_at = second - later if disagg else first
    return {
        "makespan_s": float(finish.max() - arrive.min()),
        "output_tokens_per_s": float(out.sum() / (finish.max() - arrive.min())),
        "ttft_s": dist(first - arrive), "tpot_s": dist((finish - first) / (out - 1)),
        "ttft_sim_def_s": dist(kv_at - arrive),
        "tpot_sim_def_s": dist((finish - kv_at) / (out - 1)),
        "handoff_wait_s": dist(placed - first) if disagg else None,  # prefilled, waiting for decode room
        "first_to_second_s": dist(second - first),
    }


def transfer(begin: dict, end: dict, prompt_tokens: int, kv_bytes_per_token: int) -> dict | None:
    """KV moved in the run: bytes sent and received, receive seconds, effective GB/s, bytes per prompt token."""
    delta = [[e - b for b, e in zip(bs, es, strict=True)] for bs, es in zip(begin["kv"], end["kv"], strict=True)]
    sent, received, seconds = (sum(d[k] for d in delta) for k in range(3))
    if not received:
        return None
    return {"bytes_sent": int(sent), "bytes_received": int(received), "recv_seconds": round(seconds, 3),
            "effective_gbps": round(received / seconds / 1e9, 3) if seconds else None,
            "bytes_per_prompt_token": round(received / prompt_tokens), "expected_per_prompt_token": kv_bytes_per_token}


def cores_used(begin: dict, end: dict) -> dict:
    """How busy the workers were and how much of a core a busy worker got: CPU seconds over busy seconds
    (a step's seconds from its arrival to its end; waits on TP peers and KV included)."""
    wall = end["t"] - begin["t"]
    busy = {r: end["timings"][r][1] - begin["timings"][r][1] for r in begin["timings"]}
    waits = {r: sum(end["timings"][r][k] - begin["timings"][r][k] for k in (2, 3, 4)) for r in begin["timings"]}
    cpu = {r: end["cpu"][r] - begin["cpu"][r] for r in begin["cpu"]}
    compute = sum(busy.values()) - sum(waits.values())
    return {"workers_busy_mean": round(sum(busy.values()) / wall, 2),
            "workers_cpu_cores_mean": round(sum(cpu.values()) / wall, 2),
            "leader_cpu_cores_mean": round((end["leader_cpu"] - begin["leader_cpu"]) / wall, 2),
            "cpu_share_while_computing": round(sum(cpu.values()) / compute, 3) if compute > 0 else None,
            "per_worker_busy_s": {str(r): round(v, 2) for r, v in sorted(busy.items())},
            "per_worker_cpu_s": {str(r): round(v, 2) for r, v in sorted(cpu.items())}}


def run_pair(pair: dict, reqs: Requests, blocks: int, rounds: int, kv_per_token: int) -> dict:
    """Both plans of a pair started side by side, then offline and Poisson runs interleaved round by round
    (ABBA), each keeping its fastest round by output throughput."""
    kinds = list(pair["plans"])
    llms: dict[str, LLM] = {}
    rows: dict[str, dict] = {k: {"runs": {}} for k in kinds}
    try:
        for kind in kinds:
            print(f"  starting {pair['pair']} {kind}: {describe(pair['plans'][kind])}", file=sys.stderr, flush=True)
            llms[kind], rows[kind]["startup_s"] = start_llm(pair["plans"][kind], blocks)
        tokens: dict[str, list] = {}
        for r in range(rounds):
            for mode in ("offline", "poisson"):
                for kind in (kinds if r % 2 == 0 else kinds[::-1]):
                    one_run(rows[kind], llms[kind], reqs, mode, kind, r, tokens, kv_per_token)
        rows["same_tokens"] = len({json.dumps(t) for t in tokens.values()}) == 1
    finally:
        for llm in llms.values():
            llm.shutdown()
    return rows


def one_run(row: dict, llm: LLM, reqs: Requests, mode: str, kind: str, r: int, tokens: dict,
            kv_per_token: int) -> None:
    arrivals = reqs.offline if mode == "offline" else reqs.poisson
    load = os.getloadavg()[0]
    run = drive(llm, reqs, arrivals)
    tokens[kind] = run["tokens"]
    m = latency(reqs, arrivals, run["times"])
    runs = row["runs"].setdefault(mode, {"tokens_per_s_rounds": []})
    best = "measured" not in runs or m["output_tokens_per_s"] > runs["measured"]["output_tokens_per_s"]
    runs["tokens_per_s_rounds"].append(round(m["output_tokens_per_s"], 2))
    print(f"    {kind} {mode} round {r + 1}: {m['makespan_s']:.1f} s, {m['output_tokens_per_s']:.1f} tok/s "
          f"(load {load:.1f})", file=sys.stderr, flush=True)
    if best:
        runs.update(measured=m, load_average=round(load, 2), cores=cores_used(run["begin"], run["end"]),
                    kv_transfer=transfer(run["begin"], run["end"], sum(reqs.prompt_lens), kv_per_token))


# ----------------------------------------------------------------------------- simulator


def profile_host(quick: bool) -> dict:
    """`hexserve profile` of this host into a temp file, declared peaks = cpu-local's per-device figures
    (so the efficiencies scale the cluster file's rates), gloo between 2 processes; returns the file's JSON."""
    node = load_cluster(CLUSTER).nodes[0]
    dev, link = node.devices[0].type, node.intra_link
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "calibration.json"
        cmd = [sys.executable, "-m", "hexserve.cli", "profile", "--world", "2", "--peak-tflops", str(dev.tflops),
               "--peak-gbps", str(dev.mem_bandwidth_gbps), "--link-gbps", str(link.bandwidth_gbps),
               "--out", str(path)] + (["--quick"] if quick else [])
        print("  " + " ".join(["hexserve"] + cmd[3:-2] + ["--out", "TMP"]), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, stdout=sys.stderr)
        return json.loads(path.read_text())


def calibration_from(data: dict) -> Calibration:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(data, f)
    try:
        return load_calibration(f.name)
    finally:
        os.unlink(f.name)


def time_shared(cal: Calibration, share: float) -> Calibration:
    """The calibration with compute and memory rates scaled by the CPU share a busy worker got, and the
    per-kernel cost stretched by it: what the cost model would say of a device that gets `share` of a core."""
    cpu = cal.for_type("cpu")
    scaled = dataclasses.replace(cpu, matmul=cpu.matmul * share, attention=cpu.attention * share,
                                 memory=cpu.memory * share, kernel_s=cpu.kernel_s / share)
    return dataclasses.replace(cal, per_type={**cal.per_type, "cpu": scaled}, source="time-shared")


def replay(plan: Plan, cluster: Cluster, model: ModelSpec, workload: Workload, cal: Calibration) -> dict:
    """The simulator's figures for a plan and workload, at the runtime's operating point (hand-written
    plans: the engine's default sequences per replica)."""
    seqs = None if plan.replicas[0].predicted else DEFAULT_MAX_NUM_SEQS
    s = summarize(simulate(plan, cluster, model, workload, cal, router="shares", max_seqs=seqs))
    pick = lambda d: {"mean": d.mean, "p50": d.p50, "p90": d.p90}  # noqa: E731
    return {"output_tokens_per_s": s.output_tokens_per_s, "makespan_s": s.makespan_s, "ttft_s": pick(s.ttft_s),
            "tpot_s": pick(s.tpot_s), "preemptions": s.preemptions}


def compare(measured: dict, simulated: dict) -> dict:
    """simulated / measured for throughput and the means and medians of TTFT and TPOT (simulator's
    definitions on both sides)."""
    out = {"output_tokens_per_s": simulated["output_tokens_per_s"] / measured["output_tokens_per_s"]}
    for metric in ("ttft", "tpot"):
        for stat in ("mean", "p50"):
            out[f"{metric}_{stat}"] = simulated[f"{metric}_s"][stat] / measured[f"{metric}_sim_def_s"][stat]
    return {k: round(v, 3) for k, v in out.items()}


def simulate_all(results: list[dict], pair_plans: list[dict], reqs: Requests, cal: Calibration,
                 model: ModelSpec, cluster: Cluster) -> None:
    """Add to every measured run its replays (profiled, and time-shared at the run's measured CPU share)."""
    for res, pp in zip(results, pair_plans, strict=True):
        for kind, plan in pp["plans"].items():
            for mode, run in res[kind]["runs"].items():
                w = as_workload(reqs, reqs.offline if mode == "offline" else reqs.poisson)
                run["simulated"] = replay(plan, cluster, model, w, cal)
                run["sim_over_measured"] = compare(run["measured"], run["simulated"])
                share = run["cores"]["cpu_share_while_computing"]
                if share:
                    run["simulated_time_shared"] = replay(plan, cluster, model, w, time_shared(cal, min(1.0, share)))
                    run["time_shared_over_measured"] = compare(run["measured"], run["simulated_time_shared"])


# ----------------------------------------------------------------------------- report


def fmt(d: dict, scale: float = 1.0) -> str:
    return f"{d['mean'] * scale:.2f}/{d['p50'] * scale:.2f}/{d['p90'] * scale:.2f}"


def print_tables(results: list[dict], pair_plans: list[dict]) -> None:
    head = (f"{'pair':<8} {'plan':<14} {'arrivals':<9} {'out tok/s':>9} {'TTFT s mean/p50/p90':>20} "
            f"{'TPOT ms mean/p50/p90':>22} {'KV MB':>7} {'KV s':>6} {'GB/s':>6} {'busy':>5} {'share':>5}  rounds tok/s")
    print(head)
    print("-" * len(head))
    for res, pp in zip(results, pair_plans, strict=True):
        for kind in pp["plans"]:
            for mode, run in res[kind]["runs"].items():
                m, kv, c = run["measured"], run["kv_transfer"], run["cores"]
                kv_text = (f"{kv['bytes_received'] / 1e6:>7.1f} {kv['recv_seconds']:>6.2f} {kv['effective_gbps']:>6.3f}"
                           if kv else f"{'-':>7} {'-':>6} {'-':>6}")
                print(f"{pp['pair']:<8} {kind:<14} {mode:<9} {m['output_tokens_per_s']:>9.1f} {fmt(m['ttft_s']):>20} "
                      f"{fmt(m['tpot_s'], 1e3):>22} {kv_text} {c['workers_busy_mean']:>5.2f} "
                      f"{c['cpu_share_while_computing'] or 0:>5.2f}  "
                      f"{' / '.join(f'{x:.1f}' for x in run['tokens_per_s_rounds'])}")
    print("\nSimulated vs measured (simulator's definitions: a disaggregated request's first token = its KV at the "
          "decode replica; means)")
    head = (f"{'pair':<8} {'plan':<14} {'arrivals':<9} {'tok/s meas':>10} {'sim':>7} {'ratio':>6} {'TTFT meas':>9} "
            f"{'sim':>6} {'ratio':>6} {'TPOT meas ms':>12} {'sim':>6} {'ratio':>6}   time-shared: tok/s TTFT TPOT")
    print(head)
    print("-" * len(head))
    for res, pp in zip(results, pair_plans, strict=True):
        for kind in pp["plans"]:
            for mode, run in res[kind]["runs"].items():
                m, s, q = run["measured"], run["simulated"], run["sim_over_measured"]
                t = run.get("time_shared_over_measured")
                shared = f"{t['output_tokens_per_s']:.2f} {t['ttft_mean']:.2f} {t['tpot_mean']:.2f}" if t else "-"
                print(f"{pp['pair']:<8} {kind:<14} {mode:<9} {m['output_tokens_per_s']:>10.1f} "
                      f"{s['output_tokens_per_s']:>7.1f} {q['output_tokens_per_s']:>6.2f} "
                      f"{m['ttft_sim_def_s']['mean']:>9.2f} {s['ttft_s']['mean']:>6.2f} {q['ttft_mean']:>6.2f} "
                      f"{m['tpot_sim_def_s']['mean'] * 1e3:>12.0f} {s['tpot_s']['mean'] * 1e3:>6.0f} "
                      f"{q['tpot_mean']:>6.2f}   {shared}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the hand pair, 6 requests at x0.1, 1 round, a quick "
                    "profile (about 3 minutes)")
    ap.add_argument("--requests", type=int, default=None, help="default 10 (--quick: 6)")
    ap.add_argument("--scale", type=float, default=None, help="trace lengths x this (default 0.15, --quick: 0.1)")
    ap.add_argument("--output-scale", type=float, default=None, help="trace output lengths x this (default "
                    "0.3, --quick: 0.2): outputs cost more CPU time per token than prompts")
    ap.add_argument("--max-prompt", type=int, default=1024)
    ap.add_argument("--max-output", type=int, default=None, help="output cap (default 48, --quick: 32)")
    ap.add_argument("--rate", type=float, default=None, help="Poisson arrivals, req/s (default 0.2, --quick 0.5)")
    ap.add_argument("--rounds", type=int, default=None, help="timed runs per plan and arrival pattern, fastest "
                    "kept (default 2, --quick: 1)")
    ap.add_argument("--plans", default=None, help="comma-separated pairs: planner, hand (default both; --quick: hand)")
    ap.add_argument("--calibration", default=None, help="a `hexserve profile` file (default: profile now)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/disagg.json"))
    args = ap.parse_args()
    q = args.quick
    args.requests = args.requests or (6 if q else 10)
    args.scale = args.scale or (0.1 if q else 0.15)
    args.output_scale = args.output_scale or (0.2 if q else 0.3)
    args.max_output = args.max_output or (32 if q else 48)
    args.rate = args.rate or (0.5 if q else 0.2)
    args.rounds = args.rounds or (1 if q else 2)
    args.plans = [p.strip() for p in (args.plans or ("hand" if q else "planner,hand")).split(",")]
    return args


def command() -> str:
    """This run's command line, file arguments by their name only (no machine paths in the results)."""
    return " ".join(["benchmarks/disagg.py"] + [Path(a).name if os.sep in a else a for a in sys.argv[1:]])


def main() -> None:
    args = parse_args()
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    model = dataclasses.replace(load_model("smollm2"), dtype="float32")  # the runtime computes in float32 on CPU
    cluster = load_cluster(CLUSTER)
    reqs = make_requests(args, model.vocab_size)
    pair_plans = pairs(args.plans, model, cluster, reqs, load_plan(ROOT / "examples/plans/smollm2-asym.json"))
    blocks = sum(-(-(len(p) + o) // BLOCK) for p, o in zip(reqs.prompts, reqs.outputs, strict=True)) * 5 // 4 + 16
    caveat = CAVEAT.format(cores=os.cpu_count())
    lens, outs = reqs.prompt_lens, reqs.outputs
    print(f"{args.requests} requests (HPLD/LPHD shuffled, x{args.scale}/x{args.output_scale}): prompts "
          f"{min(lens)}-{max(lens)} tokens (mean {np.mean(lens):.0f}), outputs {min(outs)}-{max(outs)} "
          f"(mean {np.mean(outs):.0f}); Poisson {args.rate} req/s over {reqs.poisson[-1]:.0f} s; {blocks} KV "
          f"blocks per replica; load average {load_start:.1f}.\n{caveat}", flush=True)
    for pp in pair_plans:
        for kind, plan in pp["plans"].items():
            print(f"  {pp['pair']} {kind}: {describe(plan)}", flush=True)
    results = [run_pair(pp, reqs, blocks, args.rounds, model.kv_bytes_per_token) for pp in pair_plans]
    print("  calibrating ...", file=sys.stderr, flush=True)
    cal_data = json.loads(Path(args.calibration).read_text()) if args.calibration else profile_host(args.quick)
    simulate_all(results, pair_plans, reqs, calibration_from(cal_data), model, cluster)
    print()
    print_tables(results, pair_plans)
    print(f"\n{caveat}")
    out = {
        "model": "smollm2 (SmolLM2-135M), float32", "cluster": CLUSTER, "cpu_cores": os.cpu_count(),
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "command": command(), "requests": args.requests, "scale": args.scale, "output_scale": args.output_scale,
        "max_prompt": args.max_prompt, "max_output": args.max_output, "rate_rps": args.rate, "rounds": args.rounds,
        "seed": args.seed, "prompt_lens": reqs.prompt_lens, "output_lens": reqs.outputs,
        "poisson_arrivals_s": [round(a, 3) for a in reqs.poisson], "kv_blocks_per_replica": blocks,
        "calibration": {k: cal_data[k] for k in ("devices", "measured") if k in cal_data},
        "load_average_start": round(load_start, 2), "load_average_end": round(os.getloadavg()[0], 2),
        "caveat": caveat, "total_runtime_s": round(time.perf_counter() - started, 1),
        "pairs": [{"pair": pp["pair"], "same_tokens": res.pop("same_tokens", None),
                   "plans": {kind: {"plan": plan_json(plan), **res[kind]} for kind, plan in pp["plans"].items()}}
                  for res, pp in zip(results, pair_plans, strict=True)],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out} ({out['total_runtime_s']:.0f} s)")


if __name__ == "__main__":
    main()
