"""A Llama-family decoder in plain torch: RMSNorm, RoPE, grouped-query attention, SwiGLU, optional
Mixtral-style MoE, and a per-slot KV cache for continuous batching.

Built from a ModelShape (or a Hugging Face config.json) with random weights: the profiler times
the arithmetic and memory traffic of a model's shape, not its answers. Tensor parallelism is
applied to a built model by profiler.runtime.tp, not written into it.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gpumix.planner.catalog import ModelShape, shape_from_config


@dataclass(frozen=True)
class ModelArgs:
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    n_experts: int = 1
    top_k: int = 1
    tie_embeddings: bool = False
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    @classmethod
    def from_shape(cls, s: ModelShape, **over) -> "ModelArgs":
        """The planner's shape carries no RoPE base nor norm epsilon: they come from the config.json
        the shape was read from (`s.source`) when it is there, else the Llama defaults."""
        over = {**_rope_and_norm(s.source), **over}
        return cls(dim=s.hidden_size, n_layers=s.num_layers, n_heads=s.num_heads,
                   n_kv_heads=s.num_kv_heads, head_dim=s.head_dim,
                   # the runtime's MoE layers are all routed experts of one width
                   intermediate=(s.moe_intermediate_size or s.intermediate_size) if s.is_moe
                   else s.intermediate_size,
                   vocab=s.vocab_size, n_experts=s.num_experts, top_k=s.experts_per_token,
                   tie_embeddings=s.tie_word_embeddings, **over)

    @classmethod
    def from_config(cls, cfg: dict) -> "ModelArgs":
        text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else {}
        cfg = {**cfg, **text}
        return cls.from_shape(shape_from_config(cfg, "config"), **_rope_and_norm_of(cfg))

    def scaled(self, layers: int | None = None, hidden: float | None = None,
               vocab: int | None = None) -> "ModelArgs":
        """A smaller model of the same family for quick CPU profiles: fewer layers; heads, hidden
        size and FFN width times `hidden` with the head size and GQA group kept; vocab capped."""
        a = self
        if layers is not None:
            a = replace(a, n_layers=max(1, min(layers, a.n_layers)))
        if hidden is not None and hidden != 1.0:
            group = a.n_heads // a.n_kv_heads
            kv = max(1, round(a.n_kv_heads * hidden))
            heads = kv * group
            dim = heads * a.head_dim if a.dim == a.n_heads * a.head_dim else \
                max(64, round(a.dim * hidden / 64) * 64)
            a = replace(a, dim=dim, n_heads=heads, n_kv_heads=kv,
                        intermediate=max(64, round(a.intermediate * hidden / 64) * 64))
        if vocab is not None:
            a = replace(a, vocab=min(vocab, a.vocab))
        return a

    def shape(self, name: str) -> ModelShape:
        """The planner's view of these args (for the roofline and memory arithmetic)."""
        return ModelShape(name=name, hidden_size=self.dim, intermediate_size=self.intermediate,
                          num_layers=self.n_layers, num_heads=self.n_heads,
                          num_kv_heads=self.n_kv_heads, head_dim=self.head_dim, vocab_size=self.vocab,
                          tie_word_embeddings=self.tie_embeddings, num_experts=self.n_experts,
                          experts_per_token=self.top_k if self.n_experts > 1 else 1)

    def to_dict(self) -> dict:
        return asdict(self)


CONFIG_MAX_BYTES = 4 << 20  # a config.json is a few kB; the shape reader already took it


def _rope_and_norm(source: str) -> dict:
    """{rope_theta, norm_eps} of the config.json at `source`, as far as it says; {} if unreadable."""
    if not source or not source.endswith(".json"):
        return {}
    try:
        path = Path(source)
        if not path.is_file() or path.stat().st_size > CONFIG_MAX_BYTES:
            return {}
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return _rope_and_norm_of(cfg) if isinstance(cfg, dict) else {}


def _rope_and_norm_of(cfg: dict) -> dict:
    """rope_theta and rms_norm_eps (or a multimodal config's text_config's) when finite and > 0."""
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else {}
    cfg = {**cfg, **text}
    out = {}
    for key, field in (("rope_theta", "rope_theta"), ("rms_norm_eps", "norm_eps")):
        v = cfg.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0:
            out[field] = float(v)
    return out


LENGTH_STEP = 64  # attention key lengths are multiples of this (Transformer.forward)


class KVCache(nn.Module):
    """One layer's keys and values for n_slots sequences of up to max_seq tokens each."""

    def __init__(self, n_slots: int, max_seq: int, n_kv_heads: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (n_slots, max_seq, n_kv_heads, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, slots: Tensor | None, pos: Tensor, k: Tensor, v: Tensor, length: int):
        # slots: [B] or None (= slots 0..B-1), pos: [B, S], k/v: [B, S, Hkv, Dh]
        # returns keys/values of positions [0, length): [B, length, Hkv, Dh]
        B = k.shape[0]
        rows = torch.arange(B, device=k.device) if slots is None else slots
        self.k[rows[:, None], pos] = k
        self.v[rows[:, None], pos] = v
        if slots is None:  # contiguous slots: a view, no gather
            return self.k[:B, :length], self.v[:B, :length]
        return self.k[slots, :length], self.v[slots, :length]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, S, D]
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def rope_tables(head_dim: int, max_seq: int, theta: float, device) -> tuple[Tensor, Tensor]:
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    freqs = torch.outer(torch.arange(max_seq, device=device, dtype=torch.float32), inv)
    emb = torch.cat([freqs, freqs], dim=-1)  # [T, Dh], Hugging Face's half-rotation layout
    return emb.cos(), emb.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    # x: [B, S, H, Dh], cos/sin: [B, S, Dh]
    cos, sin = cos[:, :, None].type_as(x), sin[:, :, None].type_as(x)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = a.n_heads, a.n_kv_heads, a.head_dim
        self.wq = nn.Linear(a.dim, a.n_heads * a.head_dim, bias=False)
        self.wk = nn.Linear(a.dim, a.n_kv_heads * a.head_dim, bias=False)
        self.wv = nn.Linear(a.dim, a.n_kv_heads * a.head_dim, bias=False)
        self.wo = nn.Linear(a.n_heads * a.head_dim, a.dim, bias=False)
        self.cache: KVCache | None = None

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, pos: Tensor, slots: Tensor | None,
                length: int) -> Tensor:
        # x: [B, S, D]; pos: [B, S] absolute positions; keys cover positions [0, length)
        B, S, _ = x.shape
        q = self.wq(x).view(B, S, self.n_heads, self.head_dim)
        k = self.wk(x).view(B, S, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(B, S, self.n_kv_heads, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k, v = self.cache.update(slots, pos, k, v, length)  # [B, L, Hkv, Dh]
        mask = torch.arange(length, device=x.device)[None, None, :] <= pos[:, :, None]  # [B, S, L]
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=mask[:, None], enable_gqa=True)
        return self.wo(y.transpose(1, 2).reshape(B, S, -1))  # row-parallel under TP


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)  # gate
        self.w3 = nn.Linear(dim, hidden, bias=False)  # up
        self.w2 = nn.Linear(hidden, dim, bias=False)  # down: row-parallel under TP

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class MoE(nn.Module):
    """Mixtral-style: a router picks top_k of n_experts SwiGLU experts per token."""

    def __init__(self, a: ModelArgs):
        super().__init__()
        self.top_k = a.top_k
        self.gate = nn.Linear(a.dim, a.n_experts, bias=False)
        self.experts = nn.ModuleList(FeedForward(a.dim, a.intermediate) for _ in range(a.n_experts))

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, S, D] -> tokens t: [T, D]
        t = x.reshape(-1, x.shape[-1])
        weights, chosen = torch.topk(self.gate(t).float().softmax(-1), self.top_k, dim=-1)  # [T, k]
        weights = (weights / weights.sum(-1, keepdim=True)).type_as(t)
        out = torch.zeros_like(t)
        for e in chosen.unique().tolist():  # only the experts some token routes to are read
            tok, slot = (chosen == e).nonzero(as_tuple=True)
            out.index_add_(0, tok, self.experts[e](t[tok]) * weights[tok, slot, None])
        return out.view_as(x)


class Block(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.attention_norm = RMSNorm(a.dim, a.norm_eps)
        self.attention = Attention(a)
        self.ffn_norm = RMSNorm(a.dim, a.norm_eps)
        self.feed_forward = MoE(a) if a.n_experts > 1 else FeedForward(a.dim, a.intermediate)

    def forward(self, x, cos, sin, pos, slots, length):
        h = x + self.attention(self.attention_norm(x), cos, sin, pos, slots, length)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.args = a
        self.tok_embeddings = nn.Embedding(a.vocab, a.dim)
        self.layers = nn.ModuleList(Block(a) for _ in range(a.n_layers))
        self.norm = RMSNorm(a.dim, a.norm_eps)
        self.output = nn.Linear(a.dim, a.vocab, bias=False)
        if a.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.max_seq = 0

    def setup_cache(self, n_slots: int, max_seq: int) -> None:
        """(Re)allocate every layer's KV cache up front: n_slots sequences of max_seq tokens."""
        p = self.output.weight
        for layer in self.layers:
            att = layer.attention
            att.cache = None  # free the old cache before allocating the new one
            att.cache = KVCache(n_slots, max_seq, att.n_kv_heads, att.head_dim, p.dtype, p.device)
        self.cos, self.sin = rope_tables(self.args.head_dim, max_seq, self.args.rope_theta, p.device)
        self.max_seq = max_seq

    def forward(self, tokens: Tensor, pos: Tensor, slots: Tensor | None = None,
                last_only: bool = False) -> Tensor:
        # tokens, pos: [B, S]; slots: [B] cache rows (None: rows 0..B-1) -> logits [B, S or 1, V]
        # Keys cover [0, length) with length rounded up to LENGTH_STEP (the mask hides the rest): a
        # decode step's shapes then repeat for LENGTH_STEP steps instead of growing every step, so
        # the device's allocator reuses its blocks, as the profile's repeated timings assume.
        length = min(-(-(int(pos.max()) + 1) // LENGTH_STEP) * LENGTH_STEP, self.max_seq)
        cos, sin = self.cos[pos], self.sin[pos]  # [B, S, Dh]
        x = self.tok_embeddings(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin, pos, slots, length)
        if last_only:
            x = x[:, -1:]
        return self.output(self.norm(x))


def build(args: ModelArgs, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
          seed: int = 0) -> Transformer:
    """Random weights (std 0.02, norms 1) made directly on the device: the same seed gives the
    same weights on every rank, so TP ranks can each build the full model and keep their shard."""
    with torch.device("meta"):
        model = Transformer(args)
    # cast on the meta device, then allocate: the weights never exist in fp32 first (an 8B model
    # in bf16 would need 32 GB for a moment; runtime/memory.py counts them at the run dtype)
    model = model.to(dtype).to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
    return model.eval().requires_grad_(False)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of parameters one decode step reads (tied weights counted once)."""
    seen = {id(p): p for p in model.parameters()}
    return sum(p.numel() * p.element_size() for p in seen.values())


def default_dtype(device: str) -> torch.dtype:
    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


def head_count_ok(args: ModelArgs, tp: int) -> str:
    """'' if the model splits over tp ranks, else why not."""
    if args.n_heads % tp:
        return f"{args.n_heads} attention heads do not split over TP {tp}"
    if args.n_kv_heads % tp and tp % args.n_kv_heads:
        return f"{args.n_kv_heads} KV heads neither split over nor replicate across TP {tp}"
    if args.intermediate % tp:
        return f"FFN width {args.intermediate} does not split over TP {tp}"
    return ""

