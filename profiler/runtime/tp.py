"""Tensor parallelism applied to a built Transformer, and the processes that run it.

Megatron-style: wq/wk/wv and w1/w3 are column-parallel (each rank keeps its heads / FFN slice),
wo and w2 row-parallel; one all-reduce after each row-parallel block (attention, FFN or the
whole MoE). Embeddings, norms and the output head stay replicated. KV heads are replicated when
there are fewer of them than ranks, as serving engines do.

Launch: `spawn(fn, world, ...)` starts worker processes on one machine (gloo on CPU, NCCL on
CUDA) on a loopback port picked at run time; under torchrun (RANK/WORLD_SIZE in the environment,
one or many nodes) `init_from_env` joins the group torchrun set up instead.
"""
from __future__ import annotations

import os
import pickle
import queue
import socket
import traceback
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from gpumix.profiler.runtime.model import Attention, FeedForward, MoE, Transformer, head_count_ok


def backend_for(device: str) -> str:
    return "nccl" if str(device).startswith("cuda") else "gloo"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def init_from_env(device: str) -> tuple[int, int, str]:
    """Join the process group torchrun describes; returns (rank, world, this rank's device)."""
    local = int(os.environ.get("LOCAL_RANK", 0))
    dev = f"cuda:{local}" if str(device).startswith("cuda") else "cpu"
    if dev.startswith("cuda"):
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend_for(device))
    return dist.get_rank(), dist.get_world_size(), dev


def _shard(linear: nn.Linear, dim: int, start: int, size: int) -> None:
    # dim 0: output features (column-parallel); dim 1: input features (row-parallel)
    w = linear.weight.narrow(dim, start, size).clone()
    linear.weight = nn.Parameter(w, requires_grad=False)
    linear.in_features, linear.out_features = w.shape[1], w.shape[0]


def _shard_ffn(ffn: FeedForward, rank: int, world: int) -> None:
    part = ffn.w1.out_features // world
    _shard(ffn.w1, 0, rank * part, part)
    _shard(ffn.w3, 0, rank * part, part)
    _shard(ffn.w2, 1, rank * part, part)


def _shard_attention(att: Attention, rank: int, world: int) -> None:
    d = att.head_dim
    hq = att.n_heads // world
    if att.n_kv_heads % world == 0:
        hkv, kv0 = att.n_kv_heads // world, rank * (att.n_kv_heads // world)
    else:  # fewer KV heads than ranks: each rank keeps the one its query heads read
        hkv, kv0 = 1, rank // (world // att.n_kv_heads)
    _shard(att.wq, 0, rank * hq * d, hq * d)
    _shard(att.wk, 0, kv0 * d, hkv * d)
    _shard(att.wv, 0, kv0 * d, hkv * d)
    _shard(att.wo, 1, rank * hq * d, hq * d)
    att.n_heads, att.n_kv_heads = hq, hkv


def apply_tp(model: Transformer, rank: int, world: int, group=None) -> Transformer:
    """Shard a full model in place for `rank` of `world` and add the all-reduces."""
    why = head_count_ok(model.args, world)
    if why:
        raise ValueError(why)
    if world == 1:
        return model

    def all_reduce(_module, _inputs, y):
        dist.all_reduce(y, group=group)  # in place: the hook's output is y, summed over ranks

    for layer in model.layers:
        _shard_attention(layer.attention, rank, world)
        layer.attention.wo.register_forward_hook(all_reduce)
        ff = layer.feed_forward
        for expert in (ff.experts if isinstance(ff, MoE) else [ff]):
            _shard_ffn(expert, rank, world)
        ff.register_forward_hook(all_reduce)  # MoE: once after summing the experts' partial sums
    return model


def _worker(rank: int, world: int, port: int, device: str, q, fn: Callable, args: tuple) -> None:
    try:
        if device.startswith("cuda"):
            dev = f"cuda:{rank}"
            torch.cuda.set_device(dev)
        else:
            dev = "cpu"
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        dist.init_process_group(backend_for(device), init_method=f"tcp://127.0.0.1:{port}",
                                rank=rank, world_size=world)
        report = (lambda msg: q.put(("progress", rank, msg))) if rank == 0 else (lambda msg: None)
        result = fn(rank, world, dev, report, *args)
        dist.barrier()
        # plain pickle copies tensors into the message; the queue's own pickler would share their
        # memory with a process that is about to exit
        q.put(("result", rank, pickle.dumps(result) if rank == 0 else None))
    except BaseException:  # noqa: BLE001 - the parent re-raises it with the traceback
        q.put(("error", rank, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def spawn(fn: Callable, world: int, device: str, args: tuple = (),
          on_progress: Callable[[object], None] | None = None, timeout_s: float = 3600.0):
    """Run fn(rank, world, device, report, *args) in `world` fresh processes; return rank 0's result.

    fn must be importable (a module-level function). report(msg) on rank 0 reaches on_progress here.
    """
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, device, q, fn, args), daemon=True)
             for r in range(world)]
    for p in procs:
        p.start()
    result, done, waited = None, set(), 0.0
    try:
        while len(done) < world:
            try:
                kind, rank, payload = q.get(timeout=1.0)
            except queue.Empty:
                waited += 1.0
                dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0) and r not in done]
                if dead:
                    raise RuntimeError(f"TP worker {dead[0]} died with exit code {procs[dead[0]].exitcode}")
                if waited > timeout_s:
                    raise TimeoutError(f"TP workers did not finish within {timeout_s:g} s")
                continue
            waited = 0.0
            if kind == "progress" and on_progress is not None:
                on_progress(payload)
            elif kind == "error":
                raise RuntimeError(f"TP worker {rank} failed:\n{payload}")
            elif kind == "result":
                done.add(rank)
                if rank == 0:
                    result = pickle.loads(payload)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
    return result
