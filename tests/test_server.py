"""The OpenAI-compatible server as users meet it: a real `hexserve serve` process on 127.0.0.1, driven
by the official `openai` client (and raw httpx where the client would refuse to send a bad body)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from hexserve.cli import main

STARTUP_S = 90


def tiny_checkpoint(folder: Path) -> Path:
    """A 2-layer random Llama with SmolLM2's tokenizer and chat template: real text in, text out, fast."""
    import torch
    import transformers

    from hexserve.runtime.smollm2 import ensure_checkpoint

    config = transformers.LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                      bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    source = ensure_checkpoint()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(source / name, folder / name)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(*args: str):
    """`hexserve serve` on a free loopback port until /health answers; always killed at the end."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hexserve.cli", "serve", "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"server exited: {proc.stdout.read()}"
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise TimeoutError("server did not start")
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return str(tiny_checkpoint(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def server(tiny):
    with serve("--model", tiny, "--served-model-name", "tiny") as (base, _):
        yield base


def client(base: str, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60)


def test_serve_missing_plan_is_a_one_line_error(capsys):
    assert main(["serve", "--plan", "missing-plan.json"]) == 2
    err = capsys.readouterr().err.strip()
    assert "plan: no file 'missing-plan.json'" in err and "\n" not in err


@pytest.mark.slow
def test_completion_chat_and_streams(server):
    c = client(server)
    assert [m.id for m in c.models.list().data] == ["tiny"]
    done = c.completions.create(model="tiny", prompt="Hello there", max_tokens=8, temperature=0,
                                extra_body={"ignore_eos": True})
    assert done.choices[0].finish_reason == "length" and done.usage.completion_tokens == 8 and done.choices[0].text
    chunks = list(c.completions.create(model="tiny", prompt="Hello there", max_tokens=8, stream=True, temperature=0,
                                       extra_body={"ignore_eos": True}))
    assert "".join(ch.choices[0].text for ch in chunks) == done.choices[0].text  # greedy: same text
    assert chunks[-1].choices[0].finish_reason == "length"
    messages = [{"role": "user", "content": "Hi!"}]
    chat = c.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0)
    assert chat.choices[0].message.role == "assistant" and chat.usage.prompt_tokens > 5
    stream = list(c.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert stream[0].choices[0].delta.role == "assistant"
    assert "".join(s.choices[0].delta.content or "" for s in stream if s.choices) == chat.choices[0].message.content
    assert stream[-1].usage.completion_tokens == chat.usage.completion_tokens


@pytest.mark.slow
def test_many_concurrent_requests_all_answered(server):
    c = client(server)

    def ask(i: int):
        return c.completions.create(model="tiny", prompt=f"Request {i}: count", max_tokens=5 + i % 7,
                                    extra_body={"ignore_eos": True})

    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = list(pool.map(ask, range(48)))
    assert [a.usage.completion_tokens for a in answers] == [5 + i % 7 for i in range(48)]
    assert metric(server, "hexserve:kv_blocks_used") == 0


BAD = [  # (body, status, param)
    ("{not json", 400, None),
    ({"model": "tiny"}, 400, "messages"),
    ({"model": "tiny", "messages": []}, 400, "messages"),
    ({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6}, 400, "max_tokens"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": -0.5}, 400, "temperature"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}, 400, "max_tokens"),
    ({"model": "tiny", "messages": "hi"}, 400, "messages"),
    ({"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "top_p": 0}, 400, "top_p"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "n"),
]


@pytest.mark.slow
def test_each_bad_request_gets_its_4xx_and_the_server_keeps_serving(server):
    url = f"{server}/v1/chat/completions"
    good = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    for body, status, param in BAD:
        raw = body if isinstance(body, str) else json.dumps(body)
        r = httpx.post(url, content=raw, headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code == status, (body, r.text)
        error = r.json()["error"]
        assert error["param"] == param and error["message"] and error["type"], (body, error)
        assert httpx.post(url, json=good, timeout=30).status_code == 200
    long_prompt = {"model": "tiny", "prompt": list(range(3, 600)), "max_tokens": 1}
    r = httpx.post(f"{server}/v1/completions", json=long_prompt, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    with pytest.raises(openai.BadRequestError):
        client(server).completions.create(model="tiny", prompt="x", max_tokens=-1)


@pytest.mark.slow
def test_disconnect_mid_stream_frees_blocks(server):
    body = {"model": "tiny", "prompt": "Tell me a long story", "max_tokens": 450, "ignore_eos": True, "stream": True}
    aborted = metric(server, 'hexserve:request_success_total{finished_reason="abort"}')
    with httpx.stream("POST", f"{server}/v1/completions", json=body, timeout=30) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data:")
        assert metric(server, "hexserve:kv_blocks_used") > 0  # the request holds blocks while it runs
    deadline = time.monotonic() + 15
    while metric(server, "hexserve:kv_blocks_used") > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(server, "hexserve:kv_blocks_used") == 0
    assert metric(server, 'hexserve:request_success_total{finished_reason="abort"}') == aborted + 1
    assert metric(server, "hexserve:num_requests_running") == 0


@pytest.mark.slow
def test_api_key_and_queue_limit(tiny):
    with serve("--model", tiny, "--served-model-name", "tiny", "--api-key", "sekret", "--max-queue", "1") as (base, _):
        with pytest.raises(openai.AuthenticationError):
            client(base, "wrong").models.list()
        assert httpx.get(f"{base}/v1/models", timeout=5).status_code == 401
        assert httpx.get(f"{base}/health", timeout=5).status_code == 200  # probes need no key
        c = client(base, "sekret")
        assert c.models.list().data[0].id == "tiny"
        stream = c.completions.create(model="tiny", prompt="Go on", max_tokens=300, stream=True,
                                      extra_body={"ignore_eos": True})
        next(iter(stream))
        with pytest.raises(openai.RateLimitError):  # the one slot is taken
            c.completions.create(model="tiny", prompt="me too", max_tokens=2)


class HeldRequest:
    """A completion request whose body arrives in two parts: between them the server has accepted it
    (its handler waits for the body), so a drain cannot end before the test sends the rest."""

    def __init__(self, base: str, body: dict):
        self.raw = json.dumps(body).encode()
        self.sock = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=120)
        head = (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(self.raw)}\r\nConnection: close\r\n\r\n")
        self.sock.sendall(head.encode() + self.raw[:5])

    def finish(self) -> tuple[int, dict]:
        """Send the rest of the body; the status and JSON of the answer."""
        self.sock.sendall(self.raw[5:])
        data = b"".join(iter(lambda: self.sock.recv(65536), b""))  # Connection: close ends it
        self.sock.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(body)


def health(base: str) -> dict:
    return httpx.get(f"{base}/health", timeout=5).json()


def wait_for(condition, what: str, seconds: float = 60) -> None:
    """Polls a condition that the test itself makes true (not a guess at how long something takes)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def tiny_plan(checkpoint: str, folder: Path) -> Path:
    """The tiny model as a plan of one single-device replica on the shipped cpu-local cluster: one worker
    process, to see it stopped."""
    from hexserve.planner.plan import Plan, Replica, Stage, cluster_fingerprint, model_fingerprint, save_plan
    from hexserve.planner.workload import Workload
    from hexserve.runtime.config import load_config
    from hexserve.specs.cluster import load_cluster

    spec, cluster = load_config(Path(checkpoint)).spec, load_cluster("cpu-local")
    stage = Stage((0,), 1, (0, spec.num_layers))
    plan = Plan(model=spec.name, model_fingerprint=model_fingerprint(spec), cluster=cluster.name,
                cluster_fingerprint=cluster_fingerprint(cluster), workload=Workload(),
                replicas=(Replica("colocated", (stage,), 1.0),))
    save_plan(plan, folder / "tiny-plan.json")
    return folder / "tiny-plan.json"


@pytest.mark.slow
def test_sigterm_drains_accepted_requests_refuses_new_ones_and_exits_0(tiny, tmp_path):
    """SIGTERM while a stream runs and another request is accepted: both end with their full length
    (the stream with [DONE]), a new request meanwhile gets 503, then the server exits 0 and its worker
    process is gone. The drain is held open by the half-sent request, so no step depends on timing."""
    args = ("--model", tiny, "--plan", str(tiny_plan(tiny, tmp_path)), "--served-model-name", "tiny")
    with serve(*args, "--drain-timeout", "300") as (base, proc):
        workers = children(proc.pid)
        assert workers
        held = HeldRequest(base, {"model": "tiny", "prompt": "Held", "max_tokens": 8, "ignore_eos": True})
        wait_for(lambda: health(base)["requests"] == 1, "the server accepted the held request")
        body = {"model": "tiny", "prompt": "Tell me a long story", "max_tokens": 200, "ignore_eos": True,
                "stream": True, "stream_options": {"include_usage": True}}
        with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=120) as r:
            lines = (line for line in r.iter_lines() if line)
            first = json.loads(next(lines).removeprefix("data: "))
            assert first["choices"][0]["text"] is not None and first["choices"][0]["finish_reason"] is None
            proc.send_signal(signal.SIGTERM)
            wait_for(lambda: httpx.get(f"{base}/health", timeout=5).status_code == 503, "/health says draining")
            assert health(base) == {"status": "draining", "requests": 2}
            refused = httpx.post(f"{base}/v1/completions", json={"model": "tiny", "prompt": "new", "max_tokens": 2},
                                 timeout=30)
            assert refused.status_code == 503 and "shutting down" in refused.json()["error"]["message"]
            rest = list(lines)
        chunks = [json.loads(line.removeprefix("data: ")) for line in rest[:-1]]
        assert rest[-1] == "data: [DONE]"
        assert chunks[-2]["choices"][0]["finish_reason"] == "length"
        assert chunks[-1]["usage"]["completion_tokens"] == 200
        status, answer = held.finish()
        assert status == 200 and answer["usage"]["completion_tokens"] == 8
        assert answer["choices"][0]["finish_reason"] == "length"
        assert proc.wait(timeout=60) == 0
        out = proc.stdout.read()
        assert "draining 2 requests, up to 300.0 s" in out and "Traceback" not in out
    wait_for(lambda: not [w for w in workers if alive(w)], "the worker processes exited", 15)


@pytest.mark.slow
def test_bench_against_the_server(server, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--endpoint", server, "--model", "tiny", "--workload", "azure-conv", "--rate", "20",
                 "--num-requests", "12", "--scale", "0.1", "--max-model-len", "512", "--json", str(out),
                 "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["completed"] == 12 and result["failed"] == 0
    assert result["ttft_ms"]["mean"] > 0 and result["output_throughput"] > 0
    assert abs(result["prompt_token_error"]) < 0.02  # synthetic prompts hit their token counts
    assert "Output token throughput" in capsys.readouterr().out


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.slow
def test_smollm2_plan_of_four_workers_answers_paris_through_openai():
    """The real model served by the asymmetric plan (TP-3 stage, then TP-1 stage: four worker
    processes); a graceful stop ends every worker."""
    with serve("--plan", "examples/plans/smollm2-asym.json", "--served-model-name", "smollm2") as (base, proc):
        workers = children(proc.pid)
        assert len(workers) >= 4
        answer = client(base).chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=24, temperature=0)
        stream = client(base).completions.create(model="smollm2", prompt="1, 2, 3, 4,", max_tokens=8,
                                                 temperature=0, stream=True)
        streamed = "".join(chunk.choices[0].text for chunk in stream)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    assert "Paris" in answer.choices[0].message.content and answer.choices[0].finish_reason == "stop"
    assert streamed.startswith(" 5, 6")
    time.sleep(1)
    assert not [w for w in workers if alive(w)]


def alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"  # a zombie has exited
