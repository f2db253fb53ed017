"""Model shapes: the sizes in a decoder LLM's Hugging Face config.json that set memory and compute.

`ModelShape` is the planner's whole view of a model: parameter counts, the KV cache per token and
per sequence, attention FLOPs and the weight bytes one GPU of a TP group holds. It covers dense
GQA decoders (Llama, Mistral, Qwen2/2.5/3, Gemma 2/3, Phi-3), MoE (Mixtral, Qwen2/3-MoE,
DeepSeek-V2/V3, GLM-4.5) with dense leading layers and shared experts, multi-head latent attention
(MLA, DeepSeek) and sliding-window layers. Its defaults mean "dense Llama-like GQA, full attention",
so the runtime's `ModelArgs.shape()` builds one with the original twelve fields. A checkpoint's
quantization is a `QuantSpec` (planner.checkpoint_quant).

`shape_from_config` reads a parsed config.json into a ModelShape and refuses, naming the field,
what gpumix does not model (encoders, encoder-decoders, vision towers) and nonsense values;
`load_config_file` reads one from disk and turns those refusals into InputError (exit 2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from gpumix.planner import reading
from gpumix.planner.checkpoint_quant import QuantSpec, read_quant
from gpumix.planner.errors import InputError
from gpumix.planner.reading import quote, read_json

__all__ = ["ConfigError", "ModelShape", "QuantSpec", "load_config_file", "shape_from_config"]


@dataclass(frozen=True)
class ModelShape:
    """The sizes of one decoder LLM. Terms: H hidden, L layers, h heads, h_kv KV heads, d head dim."""

    name: str
    hidden_size: int
    intermediate_size: int  # dense MLP width (the dense layers of an MoE model too)
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int  # MLA: qk_nope_head_dim + qk_rope_head_dim
    vocab_size: int
    tie_word_embeddings: bool = False
    num_experts: int = 1  # routed experts per MoE layer (1 = dense)
    experts_per_token: int = 1
    source: str = ""
    moe_intermediate_size: int = 0  # one routed expert's width; 0: intermediate_size (Mixtral)
    num_shared_experts: int = 0  # informational; their total width is the next field
    shared_expert_intermediate_size: int = 0  # all shared experts of one MoE layer together
    moe_layer_count: int | None = None  # None: every layer is MoE when num_experts > 1
    kv_lora_rank: int = 0  # 0: not MLA
    q_lora_rank: int = 0  # MLA: 0 when queries are not compressed (config null)
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    sliding_window: int | None = None  # tokens a sliding-window layer attends to
    sliding_layers: int = 0  # how many layers use the window (the rest attend to everything)
    model_type: str = ""
    checkpoint_quant: QuantSpec | None = None
    qkv_bias: bool = False
    qk_norm: bool = False  # per-head RMSNorm on q and k (Qwen3, Gemma 3)
    norms_per_layer: int = 2  # Gemma 2/3 norm before and after attention and MLP: 4
    max_context: int | None = None  # tokens of context (config's max_position_embeddings or kin); None: not given

    # -- structure ------------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1 and self.moe_layers > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def moe_layers(self) -> int:
        if self.num_experts <= 1:
            return 0
        return self.num_layers if self.moe_layer_count is None else self.moe_layer_count

    @property
    def dense_layers(self) -> int:
        return self.num_layers - self.moe_layers

    @property
    def full_layers(self) -> int:
        """Layers whose KV cache holds the whole context."""
        return self.num_layers - (self.sliding_layers if self.sliding_window else 0)

    # -- parameters -------------------------------------------------------------------------------
    @property
    def attn_params_per_layer(self) -> int:
        """Weights of one layer's attention projections (no biases, no norms)."""
        h, hd = self.hidden_size, self.num_heads
        if self.is_mla:
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            q = h * self.q_lora_rank + self.q_lora_rank * hd * qk if self.q_lora_rank else h * hd * qk
            kv_a = h * (self.kv_lora_rank + self.qk_rope_head_dim)  # latent and the shared rope key
            kv_b = self.kv_lora_rank * hd * (self.qk_nope_head_dim + self.v_head_dim)
            return q + kv_a + kv_b + hd * self.v_head_dim * h
        q_o = 2 * h * self.num_heads * self.head_dim
        kv = 2 * h * self.num_kv_heads * self.head_dim
        return q_o + kv

    @property
    def routed_expert_params(self) -> int:
        """One routed expert of one MoE layer: gate, up and down (SwiGLU)."""
        return 3 * self.hidden_size * (self.moe_intermediate_size or self.intermediate_size)

    @property
    def expert_params(self) -> int:
        return self.routed_expert_params

    @property
    def shared_expert_params(self) -> int:
        """All shared experts of one MoE layer."""
        return 3 * self.hidden_size * self.shared_expert_intermediate_size

    @property
    def dense_mlp_params(self) -> int:
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def embedding_params(self) -> int:
        """Input embedding and lm_head (one table when tied)."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    @property
    def linear_params(self) -> int:
        """Weights a quantization method quantizes: attention projections, dense MLPs, routed and
        shared experts. Not embeddings, lm_head, norms or router gates."""
        moe = self.num_experts * self.routed_expert_params + self.shared_expert_params
        return (self.num_layers * self.attn_params_per_layer + self.dense_layers * self.dense_mlp_params
                + self.moe_layers * moe)

    @property
    def router_params(self) -> int:
        return self.moe_layers * self.hidden_size * self.num_experts

    @property
    def bias_params(self) -> int:
        if not self.qkv_bias:
            return 0
        if self.is_mla:
            return 0  # DeepSeek's projections carry no bias
        return self.num_layers * (self.num_heads + 2 * self.num_kv_heads) * self.head_dim

    @property
    def norm_params(self) -> int:
        """RMSNorm weights: per layer, MLA's latent norms, q/k norms, and the final norm."""
        per_layer = self.norms_per_layer * self.hidden_size
        if self.is_mla:
            per_layer += self.kv_lora_rank + self.q_lora_rank
        if self.qk_norm:
            per_layer += 2 * self.head_dim
        return self.num_layers * per_layer + self.hidden_size

    @property
    def params(self) -> int:
        """Every weight vLLM loads to serve the model. DeepSeek/GLM multi-token-prediction layers
        (`num_nextn_predict_layers`) are not counted: vLLM loads them only for speculative decoding."""
        return (self.linear_params + self.embedding_params + self.router_params + self.bias_params
                + self.norm_params)

    @property
    def active_params(self) -> int:
        """Weights one token multiplies: attention, dense MLPs, its top-k routed experts, the shared
        experts and the router, and the vocabulary once (the lm_head matmul; the embedding lookup
        costs no FLOPs). Qwen's published "activated" counts include the embedding table too, so
        theirs are larger by V * H."""
        moe = self.experts_per_token * self.routed_expert_params + self.shared_expert_params
        return (self.num_layers * self.attn_params_per_layer + self.dense_layers * self.dense_mlp_params
                + self.moe_layers * moe + self.router_params + self.vocab_size * self.hidden_size)

    # -- KV cache ---------------------------------------------------------------------------------
    def kv_bytes_per_token_layer(self, tp: int, dtype_bytes: float = 2) -> float:
        """KV cache of one token in one layer on one GPU of a TP group.

        GQA: K and V of ceil(h_kv / tp) heads (KV heads replicate when tp > h_kv). MLA: the latent
        (kv_lora_rank) and the rope key, the same on every rank (vLLM replicates the latent cache)."""
        if self.is_mla:
            return (self.kv_lora_rank + self.qk_rope_head_dim) * dtype_bytes
        return 2 * math.ceil(self.num_kv_heads / tp) * self.head_dim * dtype_bytes

    def kv_bytes_per_token(self, tp: int, dtype_bytes: float = 2) -> float:
        """KV cache per token on one GPU of a TP group with every layer full: the upper bound."""
        return self.num_layers * self.kv_bytes_per_token_layer(tp, dtype_bytes)

    def kv_bytes_per_sequence(self, tp: int, tokens: float, dtype_bytes: float = 2) -> float:
        """KV cache of one sequence of `tokens` tokens on one GPU; sliding-window layers keep at most
        the window."""
        held = self.full_layers * tokens
        if self.sliding_window:
            held += self.sliding_layers * min(tokens, self.sliding_window)
        return held * self.kv_bytes_per_token_layer(tp, dtype_bytes)

    # -- compute ----------------------------------------------------------------------------------
    def attention_flops(self, new_tokens: float, context: float) -> float:
        """Forward FLOPs of attention scores and values, whole model (not divided by tp), for
        `new_tokens` tokens each attending to `context` positions (capped at the window on
        sliding layers). Prefill of n tokens ~ attention_flops(n, n / 2); a decode step at
        context c: attention_flops(1, c). MLA counts its uncompressed dims (qk_nope + qk_rope for
        scores, v_head_dim for values), as vLLM's prefill computes them."""
        if self.is_mla:
            qk, v = self.qk_nope_head_dim + self.qk_rope_head_dim, self.v_head_dim
        else:
            qk = v = self.head_dim
        positions = self.full_layers * context
        if self.sliding_window:
            positions += self.sliding_layers * min(context, self.sliding_window)
        return 2 * new_tokens * positions * self.num_heads * (qk + v)

    # -- tensor parallelism -----------------------------------------------------------------------
    def tp_problem(self, tp: int) -> str:
        """'' if the attention heads split evenly over tp, else why not."""
        if tp < 1:
            return f"TP {tp} is not a positive degree"
        if self.num_heads % tp:
            return f"{self.num_heads} attention heads do not split over TP {tp}"
        return ""

    def weight_bytes_per_gpu(self, tp: int, linear_bytes_per_param: float = 2.0,
                             other_bytes_per_param: float = 2.0) -> float:
        """Weights on one GPU of a TP group. Linear layers and the vocabulary (embedding, lm_head)
        shard over tp; norms and router gates replicate. vLLM also replicates, approximately:
        K/V projections of ceil(h_kv / tp) heads when tp > h_kv, and MLA's down-projections
        (q_a_proj, kv_a_proj_with_mqa), which are ReplicatedLinear. Biases shard with their layers.
        """
        h = self.hidden_size
        if self.is_mla:
            replicated = self.num_layers * (h * self.q_lora_rank
                                            + h * (self.kv_lora_rank + self.qk_rope_head_dim))
            sharded = self.linear_params - replicated
        else:
            kv_heads = math.ceil(self.num_kv_heads / tp)
            replicated = self.num_layers * 2 * h * kv_heads * self.head_dim
            sharded = self.linear_params - self.num_layers * 2 * h * self.num_kv_heads * self.head_dim
        linear = sharded / tp + replicated
        other = (self.embedding_params + self.bias_params) / tp + self.norm_params + self.router_params
        return linear * linear_bytes_per_param + other * other_bytes_per_param


# -- reading config.json ----------------------------------------------------------------------------

class ConfigError(ValueError):
    """A config.json value gpumix refuses; `field` is its path, e.g. `text_config.num_local_experts`."""

    def __init__(self, field: str, message: str):
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}" if field else message)


ENCODERS = frozenset({
    "bert", "roberta", "deberta", "deberta-v2", "distilbert", "electra", "xlm-roberta", "xlm-roberta-xl",
    "albert", "camembert", "mpnet", "modernbert", "nomic_bert", "xlnet", "funnel", "longformer",
    "megatron-bert", "rembert", "roformer", "squeezebert", "ibert", "mobilebert", "canine",
    "layoutlm", "layoutlmv2", "layoutlmv3", "luke", "esm",
})
ENCODER_DECODERS = frozenset({
    "t5", "mt5", "umt5", "longt5", "bart", "mbart", "pegasus", "pegasus_x", "marian", "whisper",
    "led", "m2m_100", "nllb-moe", "prophetnet", "blenderbot", "blenderbot-small", "fsmt", "bigbird_pegasus",
    "switch_transformers", "speech_to_text", "seamless_m4t", "encoder-decoder",
})
VISION = frozenset({
    "vit", "clip", "clip_vision_model", "siglip", "siglip2", "siglip_vision_model", "dinov2", "convnext",
    "convnextv2", "swin", "swinv2", "beit", "deit", "resnet", "efficientnet", "mobilevit", "dino",
    "vit_mae", "sam", "detr", "yolos", "segformer",
})
# Decoder families whose keys this reader knows; any other model_type must give every size key.
KNOWN = frozenset({
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
    "gemma3", "gemma3_text", "phi3", "deepseek_v2", "deepseek_v3", "glm4_moe",
})
TIED_BY_DEFAULT = frozenset({"gemma", "gemma2", "gemma3", "gemma3_text", "cohere", "cohere2"})
QKV_BIAS_BY_DEFAULT = frozenset({"qwen2", "qwen2_moe"})  # Qwen2 has q/k/v biases and no attention_bias key
QK_NORM = frozenset({"qwen3", "qwen3_moe", "gemma3", "gemma3_text"})
FOUR_NORMS = frozenset({"gemma2", "gemma3", "gemma3_text"})
QWEN = frozenset({"qwen2", "qwen2_moe", "qwen3", "qwen3_moe"})
# transformers' Gemma3TextConfig defaults: Gemma 3 checkpoints omit the keys that equal them.
FAMILY_DEFAULTS = {
    "gemma3_text": {"vocab_size": 262_208, "hidden_size": 2304, "intermediate_size": 9216,
                    "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
                    "head_dim": 256, "sliding_window": 4096, "sliding_window_pattern": 6},
}
LAYER_TYPES = ("full_attention", "sliding_attention")
CAUSAL_HEADS = ("ForCausalLM", "ForConditionalGeneration", "LMHeadModel")
OTHER_HEADS = ("Model", "ForMaskedLM", "ForSequenceClassification", "ForTokenClassification",
               "ForQuestionAnswering", "ForImageClassification", "ForMultipleChoice", "ForPreTraining")


MAX_COUNT = 10**9  # largest size a config.json may give (layers, widths, vocabulary, experts)


def _count(value, field: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, f"must be an integer, not {quote(value)}")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ConfigError(field, f"must be an integer, not {quote(value)}")
        value = int(value)
    if value > MAX_COUNT:
        raise ConfigError(field, f"must be at most {MAX_COUNT:,}, not {quote(value)}")
    if value < minimum:
        raise ConfigError(field, f"must be {'positive' if minimum == 1 else f'>= {minimum}'}, not {value}")
    return value


class _Config:
    """Decoder keys of a config.json: text_config first (multimodal wrappers such as
    Gemma3ForConditionalGeneration keep the decoder there), then the top level, then the family's
    transformers defaults."""

    def __init__(self, cfg: dict):
        text = cfg.get("text_config")
        self.scopes = [("text_config.", text), ("", cfg)] if isinstance(text, dict) else [("", cfg)]
        self.defaults: dict = {}
        self.model_type = str(self.find("model_type")[0] or "")
        self.defaults = FAMILY_DEFAULTS.get(self.model_type, {})

    def find(self, key: str):
        """(value, field path); value None when absent or null."""
        for prefix, scope in self.scopes:
            if key in scope:
                return scope[key], prefix + key
        return self.defaults.get(key), self.scopes[0][0] + key

    def count(self, key: str, default: int | None = None, minimum: int = 1) -> int:
        value, field = self.find(key)
        if value is None:
            if default is not None:
                return default
            hint = "" if self.model_type in KNOWN else (
                f" (model_type {quote(self.model_type)} is not a family gpumix knows, so every size key "
                "must be given)" if self.model_type else " (no model_type, so every size key must be given)")
            raise ConfigError(field, "missing key in config.json" + hint)
        return _count(value, field, minimum)

    def flag(self, key: str, default: bool) -> bool:
        value, field = self.find(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(field, f"must be true or false, not {quote(value)}")
        return value


def _refuse_non_decoders(cfg: dict, c: _Config) -> None:
    for prefix, scope in c.scopes:
        mt = scope.get("model_type") if isinstance(scope.get("model_type"), str) else None
        kind = ("an encoder" if mt in ENCODERS else "an encoder-decoder" if mt in ENCODER_DECODERS
                else "a vision model" if mt in VISION else "")
        if kind:
            raise ConfigError(prefix + "model_type", f"{quote(mt)} is {kind}; gpumix plans decoder LLMs only")
    if cfg.get("is_encoder_decoder") is True:
        raise ConfigError("is_encoder_decoder", "an encoder-decoder; gpumix plans decoder LLMs only")
    archs = cfg.get("architectures")
    if isinstance(archs, list) and archs and all(isinstance(a, str) for a in archs):
        if not any(a.endswith(CAUSAL_HEADS) for a in archs) and all(a.endswith(OTHER_HEADS) for a in archs):
            raise ConfigError("architectures", f"{quote(archs[0])} has no causal LM head; gpumix plans decoder "
                              "LLMs only")


def _read_moe(c: _Config, layers: int) -> dict:
    """Routed and shared experts and which layers carry them (layer i is MoE when i >=
    first_k_dense_replace, i % moe_layer_freq == 0, (i + 1) % decoder_sparse_step == 0 and i is
    not in mlp_only_layers: the DeepSeek/GLM and Qwen-MoE rules, which never occur together)."""
    key = next((k for k in ("num_local_experts", "num_experts", "n_routed_experts")
                if c.find(k)[0] is not None), None)
    if key is None:
        return {}
    experts = c.count(key)
    if experts == 1:
        return {}
    top_k = c.count("num_experts_per_tok")
    if top_k > experts:
        raise ConfigError(c.find("num_experts_per_tok")[1],
                          f"{top_k} experts per token but only {experts} experts ({c.find(key)[1]})")
    moe_i = c.count("moe_intermediate_size") if c.find("moe_intermediate_size")[0] is not None else 0
    shared_i = c.count("shared_expert_intermediate_size", default=0, minimum=0)
    n_shared = 1 if shared_i else 0
    if c.find("n_shared_experts")[0] is not None:
        n_shared = c.count("n_shared_experts", minimum=0)
        shared_i = n_shared * moe_i if moe_i else None  # Mixtral-width shared experts: filled in below
    first_k = c.count("first_k_dense_replace", default=0, minimum=0)
    if first_k > layers:
        raise ConfigError(c.find("first_k_dense_replace")[1],
                          f"{first_k} dense layers but the model has {layers} (num_hidden_layers)")
    freq = c.count("moe_layer_freq", default=1)
    step = c.count("decoder_sparse_step", default=1)
    only, field = c.find("mlp_only_layers")
    only = only or []
    if not isinstance(only, list):
        raise ConfigError(field, "must be a list of layer indices")
    only = {_count(i, f"{field}[{j}]", minimum=0) for j, i in enumerate(only)}
    moe_layers = sum(1 for i in range(layers)
                     if i >= first_k and i % freq == 0 and (i + 1) % step == 0 and i not in only)
    return {"num_experts": experts, "experts_per_token": top_k, "moe_intermediate_size": moe_i,
            "num_shared_experts": n_shared, "shared_expert_intermediate_size": shared_i,
            "moe_layer_count": None if moe_layers == layers else moe_layers}


def _read_mla(c: _Config) -> dict:
    if c.find("kv_lora_rank")[0] is None:
        return {}
    return {"kv_lora_rank": c.count("kv_lora_rank"),
            "q_lora_rank": c.count("q_lora_rank") if c.find("q_lora_rank")[0] is not None else 0,
            "qk_nope_head_dim": c.count("qk_nope_head_dim"), "qk_rope_head_dim": c.count("qk_rope_head_dim"),
            "v_head_dim": c.count("v_head_dim")}


def _read_window(c: _Config, layers: int) -> dict:
    """Sliding-window layers: a `layer_types` list; else the family's rule (Gemma 2 alternates,
    starting with a sliding layer; Gemma 3 makes every `sliding_window_pattern`-th layer full;
    Qwen with use_sliding_window slides from layer max_window_layers on); else, Mistral-style, a
    `sliding_window` applies to every layer. A null window or use_sliding_window false: full."""
    types, field = c.find("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != layers:
            raise ConfigError(field, f"must be a list of {layers} layer types (num_hidden_layers)")
        for i, t in enumerate(types):
            if t not in LAYER_TYPES:
                raise ConfigError(f"{field}[{i}]", f"layer type {quote(t)} is not one gpumix models "
                                  f"({', '.join(LAYER_TYPES)})")
        sliding = types.count("sliding_attention")
        return {"sliding_window": c.count("sliding_window"), "sliding_layers": sliding} if sliding else {}
    # Qwen configs switch the window on with use_sliding_window (default false); others have no switch
    if c.find("sliding_window")[0] is None or not c.flag("use_sliding_window", c.model_type not in QWEN):
        return {}
    window = c.count("sliding_window")
    if c.model_type == "gemma2":
        sliding = (layers + 1) // 2
    elif c.model_type in ("gemma3", "gemma3_text"):
        sliding = layers - layers // c.count("sliding_window_pattern", default=6)
    elif c.find("use_sliding_window")[0] is True:
        sliding = max(0, layers - c.count("max_window_layers", default=0, minimum=0))
    else:
        sliding = layers
    return {"sliding_window": window, "sliding_layers": sliding} if sliding else {}


# the keys vLLM reads for a model's context (the smallest given wins), and its rope-scaling rule
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
                "max_sequence_length", "max_seq_length", "seq_len")


def _read_context(c: _Config) -> int | None:
    """The model's context in tokens as vLLM derives it (min of CONTEXT_KEYS; a rope_scaling factor
    other than llama3/longrope multiplies it, YaRN from original_max_position_embeddings), never
    below what the config declares; None when the config names none."""
    found = [_count(v, f) for v, f in (c.find(k) for k in CONTEXT_KEYS) if v is not None]
    if not found:
        return None
    declared = derived = min(found)
    rope = c.find("rope_scaling")[0]
    if isinstance(rope, dict):
        kind, factor = rope.get("rope_type") or rope.get("type"), rope.get("factor")
        ok = isinstance(factor, (int, float)) and not isinstance(factor, bool) and 1 <= factor <= 1e4
        if ok and kind not in ("su", "longrope", "llama3", "default", "mrope"):
            orig = rope.get("original_max_position_embeddings")
            if kind == "yarn" and isinstance(orig, int) and not isinstance(orig, bool) and 0 < orig <= MAX_COUNT:
                derived = orig
            derived = int(derived * factor)
    return min(max(declared, derived), MAX_COUNT)


def context_problem(shape: "ModelShape | None", input_tokens: int, output_tokens: int) -> tuple[str, str] | None:
    """(field, message) when a bucket's input + output tokens exceed the model's context, else None."""
    ctx = getattr(shape, "max_context", None)
    if not ctx or input_tokens + output_tokens <= ctx:
        return None
    field = "input_tokens" if input_tokens > ctx else "output_tokens"
    return field, (f"input_tokens + output_tokens = {input_tokens + output_tokens:,} exceeds the model's "
                   f"context of {ctx:,} tokens (its config.json's max_position_embeddings)")


def shape_from_config(cfg: dict, name: str, source: str = "") -> ModelShape:
    """Build a ModelShape from a parsed config.json; raises ConfigError (a ValueError) naming the
    field. An unsupported `quantization_config` is not an error here (see QuantSpec)."""
    if not isinstance(cfg, dict):
        raise ConfigError("", "config.json must be a JSON object")
    c = _Config(cfg)
    _refuse_non_decoders(cfg, c)
    hidden, layers = c.count("hidden_size"), c.count("num_hidden_layers")
    heads, vocab = c.count("num_attention_heads"), c.count("vocab_size")
    kv_heads = c.count("num_key_value_heads", default=heads)
    if kv_heads > heads or heads % kv_heads:
        raise ConfigError(c.find("num_key_value_heads")[1], f"{kv_heads} KV heads do not divide "
                          f"{heads} attention heads (num_attention_heads)")
    moe, mla = _read_moe(c, layers), _read_mla(c)
    if mla:
        head_dim = mla["qk_nope_head_dim"] + mla["qk_rope_head_dim"]
    else:
        head_dim = c.count("head_dim", default=hidden // heads or None)
    all_moe = moe and moe["moe_layer_count"] is None
    inter = c.count("intermediate_size", default=moe.get("moe_intermediate_size") or None if all_moe else None)
    if moe and moe["shared_expert_intermediate_size"] is None:
        moe["shared_expert_intermediate_size"] = moe["num_shared_experts"] * inter
    mt = c.model_type
    return ModelShape(
        name=name, hidden_size=hidden, intermediate_size=inter, num_layers=layers, num_heads=heads,
        num_kv_heads=kv_heads, head_dim=head_dim, vocab_size=vocab,
        tie_word_embeddings=c.flag("tie_word_embeddings", mt in TIED_BY_DEFAULT),
        source=source, model_type=mt, checkpoint_quant=read_quant(cfg),
        qkv_bias=c.flag("attention_bias", mt in QKV_BIAS_BY_DEFAULT),
        qk_norm=mt in QK_NORM or c.flag("use_qk_norm", False),
        norms_per_layer=4 if mt in FOUR_NORMS else 2,
        **moe, **mla, **_read_window(c, layers), max_context=_read_context(c),
    )


def load_config_file(path: Path, name: str, field_path: str, referrer: str) -> ModelShape:
    """Read a local config.json; errors name the workload file and field that pointed at it, or the
    config file and its bad field."""
    if not reading.exists(path):
        raise InputError(referrer, field_path, f"config file not found: {quote(str(path))}")
    cfg = read_json(path, "config")
    try:
        return shape_from_config(cfg, name, source=str(path))
    except ConfigError as e:
        raise InputError(str(path), e.field, e.message) from None
