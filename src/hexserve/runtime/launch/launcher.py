"""Start a plan's workers on this machine and hand back one executor per replica.

One process per device (torch.multiprocessing, spawn), one torch.distributed world for the whole plan
(its TCPStore lives here in the leader, so it outlives any worker), every process group built at
start. Devices: with enough CUDA GPUs each plan device i runs on cuda:i over NCCL; otherwise each is a
CPU process over gloo standing in for the device, one thread each (the same code path).
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hexserve.errors import SpecError
from hexserve.planner.plan import Plan
from hexserve.runtime.config import load_config
from hexserve.runtime.device import dtype_name, pick_dtype
from hexserve.runtime.launch.executor import PipelineExecutor, WorkerHandle
from hexserve.runtime.launch.topology import WorkerSpec, plan_groups, plan_workers
from hexserve.runtime.launch.worker import WorldSettings, worker_main
from hexserve.specs.cluster import Cluster

START_TIMEOUT_S = 600.0  # loading a big checkpoint shard can take minutes


def plan_devices(workers: list[WorkerSpec], device: str | None) -> list[str]:
    """The torch device of each worker: cuda:<plan device> when this machine has the GPUs, else cpu."""
    ids = [w.device_id for w in workers]
    if device not in (None, "cpu", "cuda"):
        raise SpecError(f"device: {device!r} cannot run a plan; use cpu or cuda (a plan names its own devices)")
    gpus = torch.cuda.device_count() if device != "cpu" else 0
    if device == "cuda" and max(ids) >= gpus:
        raise SpecError(f"device: the plan uses device {max(ids)} but this machine has {gpus} GPUs; use --device cpu")
    if gpus and max(ids) < gpus:
        return [f"cuda:{i}" for i in ids]
    return ["cpu"] * len(workers)


def describe_devices(workers: list[WorkerSpec], devices: list[str], cluster: Cluster, threads: int) -> list[str]:
    """One line per worker: the plan's device and what stands in for it here (printed once at launch)."""
    lines = []
    for w, dev in zip(workers, devices, strict=True):
        d = cluster.devices[w.device_id]
        here = f"a CPU process ({threads} thread{'s' if threads > 1 else ''})" if dev == "cpu" else dev
        lines.append(f"plan device {w.device_id} ({d.name}, {d.type.name}) -> {here}: replica {w.replica} "
                     f"stage {w.stage} TP rank {w.tp_rank}, layers {w.layers[0]}-{w.layers[1] - 1}")
    return lines


def launch_plan(
    plan: Plan,
    cluster: Cluster,
    folder: Path,
    dtype: str,
    block_size: int,
    wanted_blocks: list[int],
    kv_cache_memory: int | None,
    step_timeout_s: float,
    device: str | None = None,
) -> list[tuple[PipelineExecutor, int]]:
    """(executor, KV blocks) per replica, with every worker loaded and its cache allocated; replica r
    gets at most wanted_blocks[r] blocks per device."""
    workers = plan_workers(plan)
    devices = plan_devices(workers, device)
    # One dtype for the whole plan, resolved here when the caller has not: stages exchange activations in it.
    dtype = dtype_name(pick_dtype(dtype, load_config(folder).spec.dtype, torch.device(devices[0])))
    for line in describe_devices(workers, devices, cluster, WorldSettings.threads):
        print(line, file=sys.stderr, flush=True)
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                          timeout=timedelta(seconds=START_TIMEOUT_S))
    world = WorldSettings(
        folder=folder, dtype=dtype, block_size=block_size, kv_cache_memory=kv_cache_memory, store_port=store.port,
        world_size=len(workers), backend="nccl" if devices[0].startswith("cuda") else "gloo",
        groups=tuple(plan_groups(workers)), timeout_s=step_timeout_s,
    )
    ctx = mp.get_context("spawn")
    handles = []
    for spec, dev in zip(workers, devices, strict=True):
        parent, child = ctx.Pipe()
        process = ctx.Process(target=worker_main, args=(spec, dev, world, child), daemon=True,
                              name=f"hexserve-worker-{spec.rank}")
        process.start()
        child.close()
        handles.append(WorkerHandle(spec, process, parent))
    try:
        capacity = _await_all(handles, "ready")
        launched = []
        for r in range(len(plan.replicas)):
            mine = [h for h in handles if h.spec.replica == r]
            blocks = min(min(capacity[h.spec.rank] for h in mine), wanted_blocks[r])
            for h in mine:
                h.conn.send(("allocate", blocks))
            launched.append((mine, blocks))
        _await_all(handles, "allocated")
    except BaseException:
        _kill(handles)
        raise
    executors = [(PipelineExecutor(r, mine, step_timeout_s), blocks) for r, (mine, blocks) in enumerate(launched)]
    executors[0][0].keepalive = store
    return executors


def _await_all(handles: list[WorkerHandle], kind: str) -> dict[int, int]:
    """Each worker's answer to the start-up stage `kind`; a worker that fails or dies stops the launch."""
    answers: dict[int, int] = {}
    deadline = time.monotonic() + START_TIMEOUT_S
    while len(answers) < len(handles):
        for h in handles:
            if h.spec.rank in answers:
                continue
            if h.conn.poll(0.05):
                message = h.conn.recv()
                if message[0] == "error":
                    raise SpecError(f"plan: the worker failed to start: {message[1]}")
                answers[h.spec.rank] = message[1]
            elif not h.process.is_alive():
                code = h.process.exitcode
                raise SpecError(f"plan: the worker on {h.spec.name} died while starting (exit code {code})")
        if time.monotonic() > deadline:
            raise SpecError(f"plan: workers did not start within {START_TIMEOUT_S:g} s")
    return answers


def _kill(handles: list[WorkerHandle]) -> None:
    for h in handles:
        if h.process.is_alive():
            h.process.kill()
        h.process.join(5.0)
