"""`make demo`: the main job on shipped examples, one step after another, each shown with its command:
plan big models on heterogeneous clusters, then plan SmolLM2 on this machine's four CPU workers, serve
that plan over HTTP, ask it with the official openai client, replay a short trace against it, stop it,
and end with a simulated comparison for Llama-2-70B."""

from __future__ import annotations

import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from hexserve.cli import main as hexserve
from hexserve.costmodel.calibration import load_calibration
from hexserve.planner.auto import plan_auto
from hexserve.planner.workload import WORKLOAD_CLASSES
from hexserve.planner.workload import Workload as PlanWorkload
from hexserve.sim.metrics import summarize
from hexserve.sim.simulate import simulate
from hexserve.specs.cluster import load_cluster
from hexserve.specs.model import load_model
from hexserve.specs.workload import load_workload

STEPS = [
    ("A heterogeneous cluster from a shipped file", "cluster hetero-4"),
    ("Llama-2-70B on one 8xH100 node (HexGen-2's baseline)", "estimate --model llama-2-70b --gpus 8xh100"),
    ("HexGen's case: symmetric TP=8 overflows the 16 GiB A4000s",
     "estimate --model llama-2-70b --cluster hexgen-case --tp 8"),
    ("... so the planner lays it out asymmetrically: each stage sized to its GPUs (layers, types, TP)",
     "plan --model llama-2-70b --cluster hexgen-case --slo-tpot 0"),
    ("Colocated replicas over a whole heterogeneous cluster, written to a plan file",
     "plan --model llama-2-70b --cluster hetero-4 --out out/hetero-4-llama-2-70b.json"),
    ("This machine as a cluster: four CPU worker processes standing in for four devices; plan the embedded "
     "SmolLM2-135M-Instruct on it", "plan --model smollm2 --cluster cpu-local --out out/cpu-local-smollm2.json"),
]
LOCAL_PLAN = "out/cpu-local-smollm2.json"
SERVER_START_S = 180
QUESTION, ANSWER_TOKENS = "What is the capital of France?", 32


COMPARE = ("h100x8", "hetero-5")  # the same price: $29.52/h and $29.44/h
COMPARE_CLASS, COMPARE_REQUESTS = "HPLD", 400


def simulated_comparison() -> None:
    """Plan Llama-2-70B on 8xH100 and on a heterogeneous cluster of the same price (HexGen or HexGen-2,
    whichever predicts more), replay the same trace requests on both, and print one line each."""
    header(f"Simulated: Llama-2-70B, {COMPARE_REQUESTS} {COMPARE_CLASS} requests of the Azure trace, all at once")
    model, calibration = load_model("llama-2-70b"), load_calibration()
    lengths = WORKLOAD_CLASSES[COMPARE_CLASS]
    requests = load_workload(f"azure-conv:{COMPARE_CLASS}").sample(COMPARE_REQUESTS, seed=0).offline()
    rows = []
    for name in COMPARE:
        cluster = load_cluster(name)
        plan = plan_auto(model, cluster, PlanWorkload(*lengths, slo_tpot=0.2), calibration, time_budget_s=10)
        summary = summarize(simulate(plan, cluster, model, requests, calibration, router="least-loaded"))
        rows.append((name, cluster.price_per_hour, plan.planner, summary))
    base = rows[0][3].saturated_tokens_per_s
    for name, price, planner, s in rows:
        tokens = s.saturated_tokens_per_s
        print(
            f"  {name:9} ${price:5.2f}/h  {planner:8} {tokens:7.0f} output tok/s ({tokens / base:.2f}x)  "
            f"mean TTFT {s.ttft_s.mean:6.2f} s  TPOT {s.tpot_s.mean * 1e3:4.0f} ms"
        )
    print("  (docs/evaluation.md: where these agree with the papers' claims and where not)")


START = time.monotonic()


def header(title: str, command: str | None = None) -> None:
    """A step's title with the seconds since the demo started, and the command it runs, if any."""
    print(f"\n=== [{time.monotonic() - START:4.0f} s] {title}", flush=True)
    if command:
        print(f"$ hexserve {command}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def relay(proc: subprocess.Popen) -> None:
    """Show what the server prints (its device substitutions, its address) as it prints it."""
    for line in proc.stdout:
        print(f"  [server] {line.rstrip()}", flush=True)


def start_server(port: int) -> subprocess.Popen:
    """`hexserve serve --plan` in its own process; returns once /health answers."""
    command = ["serve", "--plan", LOCAL_PLAN, "--served-model-name", "smollm2", "--port", str(port)]
    header("Serve that plan: one worker process per device, an OpenAI-compatible API", f"{shlex.join(command)} &")
    proc = subprocess.Popen([sys.executable, "-m", "hexserve.cli", *command], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    threading.Thread(target=relay, args=(proc,), daemon=True).start()
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoError(f"the server exited with code {proc.returncode} (its output is above)")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise DemoError(f"the server did not answer /health within {SERVER_START_S} s")


class DemoError(RuntimeError):
    """A step of the demo went wrong: printed as one line, and the demo exits 1."""


def ask_with_openai(base: str) -> str:
    import openai

    header(f"The official openai client asks: {QUESTION}")
    print(f'  openai.OpenAI(base_url="{base}/v1").chat.completions.create(model="smollm2", temperature=0, ...)')
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=120)
    answer = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": QUESTION}],
                                            max_tokens=ANSWER_TOKENS, temperature=0)
    text = answer.choices[0].message.content
    print(f"  {text}", flush=True)
    return text


def single_process_answer() -> str:
    """The same question to the single-process engine (same model, same dtype rule, greedy)."""
    from hexserve.runtime.engine import LLM
    from hexserve.runtime.sampling import SamplingParams

    with LLM("smollm2") as llm:
        params = SamplingParams(max_tokens=ANSWER_TOKENS, temperature=0)
        return llm.chat([{"role": "user", "content": QUESTION}], params)[0].text


def verify(served: str) -> None:
    """The served plan (TP and PP over worker processes) must answer exactly as one process does."""
    header("Check: the plan's answer against the single-process engine's (greedy, same dtype)")
    alone = single_process_answer()
    if served != alone:
        raise DemoError(f"MISMATCH: the served plan answered {served!r} but the single-process engine answered "
                        f"{alone!r}")
    print(f"  identical: {alone!r}", flush=True)


def serve_story() -> int:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(port)
    try:
        verify(ask_with_openai(base))
        bench = (f"bench --endpoint {base} --model smollm2 --workload azure-conv --rate 2 --num-requests 12 "
                 "--scale 0.1 --max-model-len 2048 --no-progress")
        header("A short replay of the Azure conversation trace against the server (lengths x0.1)", bench)
        code = hexserve(shlex.split(bench))
    finally:
        header("Stop the server: SIGINT drains what it accepted, then its workers exit with it")
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise DemoError("the server did not stop within 60 s of SIGINT; killed it") from None
    if proc.returncode != 0:
        raise DemoError(f"the server exited with code {proc.returncode} on SIGINT")
    return code


def prepare_model() -> None:
    from hexserve.runtime.smollm2 import cache_dir, ensure_checkpoint

    header("The embedded SmolLM2-135M-Instruct: its GGUF file becomes a safetensors checkpoint (first run only)")
    start = time.monotonic()
    folder = ensure_checkpoint()
    took = f"converted in {time.monotonic() - start:.0f} s" if time.monotonic() - start > 1 else "already there"
    print(f"  {folder} ({took}; {cache_dir().parent} is $HEXSERVE_CACHE)", flush=True)


def main() -> int:
    try:
        return run()
    except DemoError as e:
        print(f"\nhexserve demo: FAILED: {e}", file=sys.stderr, flush=True)
        return 1


def run() -> int:
    Path("out").mkdir(exist_ok=True)
    for title, command in STEPS:
        header(title, command)
        code = hexserve(shlex.split(command))
        if code:
            return code
    prepare_model()
    code = serve_story()
    if code:
        return code
    simulated_comparison()
    print(f"\nhexserve demo: done in {time.monotonic() - START:.0f} s; the served plan answered as the "
          "single-process engine does", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
