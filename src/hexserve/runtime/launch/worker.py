"""A worker process: one device of one stage of one replica.

It joins the plan's torch.distributed world, builds every process group, loads its shard of the
checkpoint (its layers, its TP slices), reports how many KV blocks fit, allocates the number its leader
picks, then runs steps as the leader sends them: receive the hidden states from the previous stage (or
embed the tokens), run its layers, send to the next stage (or sample and answer the leader). Every step
is acknowledged, so that the leader can tell which worker stopped answering.
"""

from __future__ import annotations

import pickle
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from hexserve.runtime.config import load_config
from hexserve.runtime.device import kv_cache_budget, pick_dtype
from hexserve.runtime.kv_transfer import KvMover
from hexserve.runtime.launch.topology import WorkerSpec
from hexserve.runtime.launch.transfer import StageLink
from hexserve.runtime.model_runner import ModelRunner
from hexserve.runtime.parallel import COMM_SECONDS, Shard


@dataclass(frozen=True)
class WorldSettings:
    """What every worker of a launch shares."""

    folder: Path
    dtype: str
    block_size: int
    kv_cache_memory: int | None
    store_port: int
    world_size: int
    backend: str  # gloo | nccl
    groups: tuple[tuple[int, ...], ...]
    timeout_s: float  # collectives give up after this long (a dead or hung peer)
    threads: int = 1


def worker_main(spec: WorkerSpec, device: str, world: WorldSettings, conn) -> None:
    try:
        torch.set_num_threads(world.threads)
        runner, link = _start(spec, torch.device(device), world, conn)
        mover = KvMover(spec.rank, spec.layers, spec.tp_rank, spec.tp_size, runner.cfg.spec.num_kv_heads,
                        runner.cache)
        _serve(spec, runner, link, mover, conn)
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass  # the leader is gone or stopping us
    except Exception as e:  # report, so that the leader names this device
        detail = traceback.format_exc(limit=-3).strip().splitlines()[-1]
        try:
            conn.send(("error", f"{spec.name}: {type(e).__name__}: {e} [{detail}]"))
        except (OSError, BrokenPipeError):
            pass
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _start(spec: WorkerSpec, device: torch.device, world: WorldSettings, conn) -> tuple[ModelRunner, StageLink]:
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=world.timeout_s)
    store = dist.TCPStore("127.0.0.1", world.store_port, is_master=False, timeout=timeout)
    dist.init_process_group(world.backend, store=store, rank=spec.rank, world_size=world.world_size, timeout=timeout)
    groups = {}
    for ranks in world.groups:  # every rank creates every group, in the same order
        group = dist.new_group(list(ranks), timeout=timeout)
        if spec.rank in ranks:
            groups[ranks] = group
    cfg = load_config(world.folder)
    dtype = pick_dtype(world.dtype, cfg.spec.dtype, device)
    shard = Shard(
        tp_rank=spec.tp_rank, tp_size=spec.tp_size, layers=spec.layers, is_first=spec.is_first,
        is_last=spec.is_last, group=groups.get(spec.stage_ranks), leader=spec.stage_ranks[0],
    )
    runner = ModelRunner(cfg, device, dtype, shard)
    shape = runner.cache_shape(world.block_size)
    conn.send(("ready", shape.blocks_in(world.kv_cache_memory or kv_cache_budget(device))))
    kind, num_blocks = conn.recv()
    assert kind == "allocate", kind
    runner.allocate_cache(shape, num_blocks)
    conn.send(("allocated", num_blocks))
    return runner, StageLink(spec, groups)


def _serve(spec: WorkerSpec, runner: ModelRunner, link: StageLink, mover: KvMover, conn) -> None:
    """Run steps until told to stop. Each answer carries the step's seconds: (total from the step's
    arrival, in TP collectives, waiting for or sending to the neighbouring stages, receiving KV) and the
    KV bytes this worker has sent and received so far."""
    hidden_size = runner.cfg.spec.hidden_size
    while True:
        kind, step = pickle.loads(conn.recv_bytes())
        if kind == "stop":
            link.flush()
            mover.finish()
            return
        start, comm, kv = time.perf_counter(), COMM_SECONDS[0], mover.stats.seconds
        for transfer in step.transfers:  # before the forward pass: it may reuse a sent request's blocks
            mover.run(transfer)
        results, transfer = ([] if spec.is_last else None), 0.0
        if step.num_tokens:  # a step may carry only KV handoffs
            hidden = None
            if not spec.is_first:
                received = time.perf_counter()
                hidden = link.receive(step.num_tokens, hidden_size, runner.dtype, runner.device)
                transfer += time.perf_counter() - received
            out = runner.forward(step, hidden)
            if spec.is_last:
                results = runner.sample(out, step)
            else:
                sent = time.perf_counter()
                link.send(out)
                transfer += time.perf_counter() - sent
        seconds = (time.perf_counter() - start, COMM_SECONDS[0] - comm, transfer, mover.stats.seconds - kv)
        moved = (mover.stats.bytes_sent, mover.stats.bytes_received, mover.take_failed())
        if spec.samples:
            conn.send(("result", step.step_id, results, seconds, moved))
        else:
            conn.send(("done", step.step_id, seconds, moved))
