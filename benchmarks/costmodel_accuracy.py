"""How close is the cost model to a real forward pass on this machine?

Profiles the CPU (one thread: `hexserve profile`), then times Hugging Face transformers running a
random-weight model with SmolLM2-135M's architecture in fp32 (prefill at several prompt lengths, decode
steps at several batch sizes) and compares each time with the cost model's prediction from the profiled
rates. Prints a table and writes benchmarks/results/costmodel_accuracy.json.

    .venv/bin/python benchmarks/costmodel_accuracy.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
import transformers

from hexserve.costmodel import profile
from hexserve.costmodel.calibration import load_calibration
from hexserve.costmodel.latency import decode_step_time, prefill_time
from hexserve.costmodel.stage import StageShape
from hexserve.specs.gpus import lookup_device_type
from hexserve.specs.model import load_model, resolve_model_path

OUT = Path(__file__).parent / "results" / "costmodel_accuracy.json"


def median_seconds(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def hf_model() -> transformers.PreTrainedModel:
    config = transformers.AutoConfig.from_pretrained(resolve_model_path("smollm2-135m").parent)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


@torch.inference_mode()
def time_prefill(model, prompt_len: int, repeat: int) -> float:
    ids = torch.randint(0, model.config.vocab_size, (1, prompt_len))
    return median_seconds(lambda: model(ids, use_cache=True, logits_to_keep=1), repeat)


@torch.inference_mode()
def time_decode(model, batch: int, context_len: int, steps: int) -> float:
    ids = torch.randint(0, model.config.vocab_size, (batch, context_len))
    cache = model(ids, use_cache=True).past_key_values
    token = ids[:, -1:]
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        out = model(token, past_key_values=cache, use_cache=True)
        times.append(time.perf_counter() - start)
        cache = out.past_key_values
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    measured = profile.measure(threads=1, world=2, quick=args.quick)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    calibration_path = OUT.with_name("cpu_calibration.json")
    calibration_path.write_text(json.dumps(profile.calibration_file(measured), indent=2))
    calibration = load_calibration(calibration_path)
    cpu = lookup_device_type("cpu").with_overrides(
        memory_gib=16, mem_bandwidth_gbps=measured.memory_gbps, tflops=measured.matmul_tflops
    )
    spec = replace(load_model("smollm2-135m"), dtype="float32")  # the CPU computes in fp32
    stage = StageShape(cpu, 1, spec.num_layers, has_embedding=True, has_head=True)
    torch.set_num_threads(1)
    model = hf_model()

    repeat = 2 if args.quick else 5
    cases = [("prefill", n, 1) for n in ((128, 512) if args.quick else (128, 512, 1024))]
    cases += [("decode", c, b) for b in ((1, 8) if args.quick else (1, 8, 32)) for c in (256,)]
    rows = []
    for phase, length, batch in cases:
        if phase == "prefill":
            real = time_prefill(model, length, repeat)
            predicted = prefill_time(spec, stage, calibration, batch, length) + calibration.for_type("cpu").step_s
        else:
            real = time_decode(model, batch, length, steps=repeat * 2)
            predicted = decode_step_time(spec, stage, calibration, batch, length) + calibration.for_type("cpu").step_s
        rows.append(dict(phase=phase, tokens=length, batch=batch, measured_ms=real * 1e3,
                         predicted_ms=predicted * 1e3, ratio=predicted / real))

    print(f"device: {measured.device}, 1 thread; GEMM {measured.matmul_tflops * 1e3:.1f} GFLOP/s, "
          f"copy {measured.memory_gbps:.1f} GB/s, kernel {measured.kernel_s * 1e6:.1f} us")
    print(f"{'phase':8} {'tokens':>6} {'batch':>5} {'measured ms':>12} {'predicted ms':>13} {'pred/meas':>9}")
    for r in rows:
        print(f"{r['phase']:8} {r['tokens']:>6} {r['batch']:>5} {r['measured_ms']:>12.1f} "
              f"{r['predicted_ms']:>13.1f} {r['ratio']:>9.2f}")
    errors = [abs(r["ratio"] - 1) for r in rows]
    print(f"mean absolute error {statistics.mean(errors):.0%}, worst {max(errors):.0%}")
    OUT.write_text(json.dumps({"measured": vars(measured), "rows": rows,
                               "mean_abs_error": statistics.mean(errors), "worst_abs_error": max(errors)}, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
