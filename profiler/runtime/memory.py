"""Memory a model needs before it is built, and what this machine lets it have (`--memory-budget`).

A model too large for the machine must be refused before torch allocates it: on CPU the kernel
kills the process at the limit with no message, on CUDA the run dies in an OOM traceback.

  need   = weights at the run dtype (every TP rank builds the full model, then keeps its shard:
           runtime/model.py build, runtime/tp.py) + the KV cache (slots x max_seq tokens x layers
           x K and V x KV heads / TP x head dim x dtype bytes) + OVERHEAD of both (activations,
           logits, the allocator)
           CPU: the ranks of one replica, and the replicas run at once, share the machine's RAM;
           CUDA: each rank has its own device, so the need is per device
  budget = --memory-budget GB, or SAFETY_SHARE of what is free now: MemAvailable (/proc/meminfo,
           else os.sysconf) on CPU, torch.cuda.mem_get_info on CUDA

torch is imported only to read a CUDA device's free memory.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from gpumix.planner.errors import InputError

GB = 1e9
SAFETY_SHARE = 0.8  # of the free memory: the OS, other processes and torch's allocator need the rest
OVERHEAD = 0.1  # activations, logits and allocator slack on top of weights and KV cache
DTYPE_BYTES = {"fp32": 4, "float32": 4, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2}


def weight_params(a: dict) -> int:
    """Parameters of runtime/model.py's Transformer built from ModelArgs fields `a` (a dict)."""
    d, hd, layers = a["dim"], a["head_dim"], a["n_layers"]
    attn = d * a["n_heads"] * hd * 2 + d * a["n_kv_heads"] * hd * 2  # wq, wo; wk, wv
    ffn = 3 * d * a["intermediate"]
    if a.get("n_experts", 1) > 1:
        ffn = a["n_experts"] * ffn + d * a["n_experts"]  # experts and router
    embed = 2 * a["vocab"] * d  # build() materialises tied embeddings as two tensors
    return layers * (attn + ffn + 2 * d) + embed + d


@dataclass(frozen=True)
class Footprint:
    weights: float  # bytes of one full model at the run dtype
    kv: float  # bytes of one replica's KV cache, all ranks together
    tp: int
    n_slots: int
    max_seq: int
    dtype: str

    def per_device(self, device: str) -> float:
        """Bytes on one device of one replica (CPU: the whole machine holds every rank)."""
        if str(device).startswith("cuda"):
            return (self.weights + self.kv / self.tp) * (1 + OVERHEAD)
        return (self.tp * self.weights + self.kv) * (1 + OVERHEAD)

    def describe(self) -> str:
        return (f"weights {self.weights / GB:.1f} GB at {self.dtype}"
                + (f" on each of {self.tp} ranks" if self.tp > 1 else "")
                + f", KV cache {self.kv / GB:.1f} GB for "
                + (f"{self.n_slots} slots x " if self.n_slots > 1 else "") + f"{self.max_seq} tokens")


def footprint(args: dict, dtype: str, n_slots: int, max_seq: int, tp: int = 1) -> Footprint:
    b = DTYPE_BYTES.get(dtype, 4)
    kv = n_slots * max_seq * args["n_layers"] * 2 * args["n_kv_heads"] * args["head_dim"] * b
    return Footprint(weight_params(args) * b, kv, tp, n_slots, max_seq, dtype)


def spec_footprint(spec) -> Footprint:
    """The footprint of a runtime/replica.py ReplicaSpec."""
    return footprint(spec.args, spec.dtype, spec.n_slots, spec.max_seq, spec.tp)


def free_bytes(device: str, tp: int = 1) -> float:
    """Memory free now: on CUDA the least free of the devices the ranks use, else the machine's."""
    if str(device).startswith("cuda"):
        import torch

        base = int(str(device).partition(":")[2] or 0)
        devices = list(range(base, min(base + tp, torch.cuda.device_count()))) or [base]
        return float(min(torch.cuda.mem_get_info(i)[0] for i in devices))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def budget(device: str, budget_gb: float | None, tp: int = 1) -> tuple[float, str]:
    """(bytes allowed, where that figure comes from)."""
    if budget_gb is not None:
        return budget_gb * GB, f"--memory-budget {budget_gb:g}"
    free = free_bytes(device, tp)
    where = "the device's free memory" if str(device).startswith("cuda") else "the memory available now"
    return SAFETY_SHARE * free, f"{SAFETY_SHARE:.0%} of {where}, {free / GB:.1f} GB"


def refuse_if_too_large(cmd: str, what: str, need: list[Footprint], device: str,
                        budget_gb: float | None, same_device: bool = False) -> None:
    """InputError (exit 2) when the replicas `need` (built at once) exceed the budget on `device`.
    On CUDA they run on devices of their own unless `same_device` (models sharing one device), so
    the largest must fit; on CPU they all share the machine's memory."""
    if not need:
        return
    tp = max(f.tp for f in need)
    cuda = str(device).startswith("cuda")
    sizes = [f.per_device(device) for f in need]
    total = max(sizes) if cuda and not same_device else sum(sizes)
    allowed, where = budget(device, budget_gb, tp)
    if total <= allowed:
        return
    count = f"{len(need)} replicas of " if len(need) > 1 and (same_device or not cuda) else ""
    raise InputError(cmd, "--memory-budget",
                     f"{count}{what} needs about {total / GB:.1f} GB{' per device' if cuda else ''} "
                     f"({need[0].describe()}), more than the {allowed / GB:.1f} GB allowed ({where}); "
                     "scale it down (--scale-layers, --scale-hidden), lower --max-batch, or raise --memory-budget")
