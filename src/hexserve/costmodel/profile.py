"""`hexserve profile`: measure this machine's device and write a calibration file.

It times what the cost model's factors stand for: a large GEMM, causal attention, a streaming copy,
a tiny kernel, and (with two or more worker processes) all-reduce and send over torch.distributed.
Efficiencies are the measured rates divided by the peak the device type declares: the catalogue's for a
GPU; for a CPU, whatever `--peak-tflops`/`--peak-gbps` say, or the measured rates themselves (then the
profile also prints the numbers to declare in the cluster file).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hexserve.specs.gpus import GPU_TYPES, DeviceType, lookup_device_type


@dataclass(frozen=True)
class Measured:
    """Achieved rates and fixed costs on one device."""

    device: str
    threads: int
    dtype: str
    matmul_tflops: float
    attention_tflops: float
    memory_gbps: float
    kernel_s: float
    allreduce_s: float | None = None  # fixed cost of a tiny all-reduce between 2 processes
    p2p_s: float | None = None
    link_gbps: float | None = None  # bus bandwidth of a large all-reduce


def _timed(fn: Callable[[], object], device: torch.device, repeat: int = 5) -> float:
    """Median seconds of one call after a warm-up."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_matmul(device: torch.device, dtype: torch.dtype, n: int) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / _timed(lambda: a @ b, device) / 1e12


def measure_attention(device: torch.device, dtype: torch.dtype, seq: int, heads: int = 8, head_dim: int = 64) -> float:
    q, k, v = (torch.randn(1, heads, seq, head_dim, device=device, dtype=dtype) for _ in range(3))
    seconds = _timed(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True), device)
    return 2 * seq**2 * heads * head_dim / seconds / 1e12  # the causal count of latency.prefill_attention


def measure_memory(device: torch.device, nbytes: int) -> float:
    src = torch.empty(nbytes // 4, device=device, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    return 2 * nbytes / _timed(lambda: dst.copy_(src), device) / 1e9  # read and write


def measure_kernel(device: torch.device, calls: int = 2000) -> float:
    """Seconds per call of an op too small to cost anything but its launch."""
    x = torch.zeros(1, device=device)

    def many() -> None:
        for _ in range(calls):
            x.add_(1)

    return _timed(many, device, repeat=3) / calls


def _collective_worker(rank: int, world: int, port: int, nbytes: int, threads: int, out: dict) -> None:
    torch.set_num_threads(threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    device = torch.device("cpu")
    tiny, big = torch.zeros(1), torch.zeros(nbytes // 4)
    allreduce_tiny = _timed(lambda: dist.all_reduce(tiny), device, repeat=20)
    allreduce_big = _timed(lambda: dist.all_reduce(big), device, repeat=5)

    def ping() -> None:  # rank 0 <-> rank 1, one small message each way
        if rank == 0:
            dist.send(tiny, 1)
            dist.recv(tiny, 1)
        elif rank == 1:
            dist.recv(tiny, 0)
            dist.send(tiny, 0)

    p2p = _timed(ping, device, repeat=20) / 2
    dist.barrier()
    if rank == 0:
        # ring all-reduce moves 2(t-1)/t of the buffer over each link (latency.allreduce_time)
        bus = 2 * (world - 1) / world * nbytes / max(allreduce_big - allreduce_tiny, 1e-9)
        out.update(allreduce_s=allreduce_tiny, p2p_s=p2p, link_gbps=bus / 1e9)
    dist.destroy_process_group()


def measure_collectives(world: int, threads: int, nbytes: int = 64 * 2**20, port: int = 29511) -> dict:
    """Gloo all-reduce and send between `world` local processes (the CPU runtime's data plane)."""
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_collective_worker, args=(world, port, nbytes, threads, out), nprocs=world, join=True)
        return dict(out)


def measure(threads: int = 1, world: int = 2, quick: bool = False) -> Measured:
    """Profile the local device: CUDA when there is one, else this CPU with `threads` threads."""
    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    torch.set_num_threads(threads)
    # fp32 on CPU, the dtype of the CPU device type's catalogue TFLOPS (docs/references.md); the engine may
    # compute in bfloat16 on hosts where that is faster (docs/engine.md).
    dtype = torch.float16 if on_gpu else torch.float32
    scale = 4 if quick else 1
    results = Measured(
        device=torch.cuda.get_device_name() if on_gpu else "cpu",
        threads=threads,
        dtype=str(dtype).removeprefix("torch."),
        matmul_tflops=measure_matmul(device, dtype, (8192 if on_gpu else 1536) // scale),
        attention_tflops=measure_attention(device, dtype, (8192 if on_gpu else 1024) // scale),
        memory_gbps=measure_memory(device, (2**30 if on_gpu else 2**28) // scale),
        kernel_s=measure_kernel(device),
    )
    if not on_gpu and world > 1:
        collectives = measure_collectives(world, threads, nbytes=64 * 2**20 // scale)
        results = Measured(**{**asdict(results), **collectives})
    return results


def device_type_of(measured: Measured) -> DeviceType:
    """The catalogue type of a profiled GPU from its driver name ("NVIDIA H100 80GB HBM3" -> H100-SXM)."""
    if measured.device == "cpu":
        return lookup_device_type("cpu")
    name = measured.device.lower().replace("nvidia", "").replace("geforce", "")
    for word in ("h200", "h100", "a100", "l40s", "l40", "a6000", "a5000", "a4000", "4090", "l4", "a10", "t4", "v100"):
        if word in name:
            base = lookup_device_type(word)
            return GPU_TYPES["A100-40GB"] if base.name == "A100-80GB" and "40gb" in name else base
    return lookup_device_type(name)  # raises with the list of known types


def calibration_entry(
    measured: Measured, peak_tflops: float | None = None, peak_gbps: float | None = None, link_gbps: float | None = None
) -> dict:
    """Efficiency factors of one device type from measured rates, relative to its declared peaks."""
    declared = device_type_of(measured)
    tflops = peak_tflops or (declared.tflops if not declared.is_cpu else measured.matmul_tflops)
    gbps = peak_gbps or (declared.mem_bandwidth_gbps if not declared.is_cpu else measured.memory_gbps)
    entry = {
        "matmul": min(1.0, measured.matmul_tflops / tflops),
        "attention": min(1.0, measured.attention_tflops / tflops),
        "memory": min(1.0, measured.memory_gbps / gbps),
        "kernel_s": measured.kernel_s,
    }
    if measured.allreduce_s is not None:
        entry.update(allreduce_s=measured.allreduce_s, p2p_s=measured.p2p_s)
        if link_gbps:
            entry["link"] = min(1.0, measured.link_gbps / link_gbps)
    return entry


def calibration_file(measured: Measured, **peaks: float | None) -> dict:
    """A calibration JSON (calibration.load_calibration reads it) with the raw measurements beside it."""
    return {
        "devices": {device_type_of(measured).name: calibration_entry(measured, **peaks)},
        "measured": asdict(measured),
        "torch": torch.__version__,
    }
