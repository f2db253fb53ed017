"""GPU and model catalogs: the bundled data/ files, Hugging Face config.json shapes, name lookup."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from gpumix.data import DATA_DIR
from gpumix.planner.errors import InputError


def norm_name(name: str) -> str:
    """Lookup key: case, spaces, underscores and an org prefix ("meta-llama/") do not matter."""
    key = str(name).strip().lower().replace("_", "-").replace(" ", "-")
    return key.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class GpuSpec:
    name: str
    memory_gb: float
    memory_bandwidth_gbps: float
    bf16_tflops: float
    interconnect_gbps: float
    gpus_per_node: int
    price_per_hour: float | None = None
    spot_price_per_hour: float | None = None
    interconnect: str = ""
    price_source: str = ""
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelShape:
    """The fields of a Hugging Face config.json that size memory and compute."""

    name: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool = False
    num_experts: int = 1  # MoE: experts per layer (1 = dense)
    experts_per_token: int = 1
    source: str = ""

    @property
    def attn_params_per_layer(self) -> int:
        q_o = 2 * self.hidden_size * self.num_heads * self.head_dim
        kv = 2 * self.hidden_size * self.num_kv_heads * self.head_dim
        return q_o + kv

    @property
    def expert_params(self) -> int:
        return 3 * self.hidden_size * self.intermediate_size  # gate, up, down (SwiGLU)

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    @property
    def params(self) -> int:
        router = self.hidden_size * self.num_experts if self.num_experts > 1 else 0
        per_layer = self.attn_params_per_layer + self.num_experts * self.expert_params + router
        return self.num_layers * (per_layer + 2 * self.hidden_size) + self.embedding_params

    @property
    def active_params(self) -> int:
        """Parameters one token touches (MoE: top-k experts)."""
        per_layer = self.attn_params_per_layer + self.experts_per_token * self.expert_params
        return self.num_layers * per_layer + self.vocab_size * self.hidden_size

    def kv_bytes_per_token(self, tp: int, dtype_bytes: int = 2) -> int:
        """KV cache per token on one GPU of a TP group; KV heads are replicated when tp > kv heads."""
        heads_per_gpu = math.ceil(self.num_kv_heads / tp)
        return 2 * self.num_layers * heads_per_gpu * self.head_dim * dtype_bytes


def shape_from_config(cfg: dict, name: str, source: str = "") -> ModelShape:
    """Build a ModelShape from a parsed config.json; raises KeyError/ValueError on bad fields."""
    text = cfg.get("text_config")
    if isinstance(text, dict):  # multimodal wrappers keep the decoder under text_config
        cfg = {**cfg, **text}
    hidden = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or 1)
    shape = ModelShape(
        name=name,
        hidden_size=hidden,
        intermediate_size=int(cfg.get("moe_intermediate_size") or cfg["intermediate_size"])
        if experts > 1
        else int(cfg["intermediate_size"]),
        num_layers=int(cfg["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=int(cfg["vocab_size"]),
        # transformers' default differs by family: Gemma ties embeddings, Llama/Qwen2/Mistral do not
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings",
                                         str(cfg.get("model_type", "")).startswith("gemma"))),
        num_experts=experts,
        experts_per_token=int(cfg.get("num_experts_per_tok") or 1) if experts > 1 else 1,
        source=source,
    )
    for f in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
              "head_dim", "vocab_size"):
        if getattr(shape, f) <= 0:
            raise ValueError(f"{f} must be positive")
    return shape


def load_config_file(path: Path, name: str, field_path: str, referrer: str) -> ModelShape:
    """Read a local config.json; errors name the workload file and field that pointed at it."""
    try:
        cfg = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(referrer, field_path, f"config file not found: {path}") from None
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(referrer, field_path, f"cannot read config {path}: {e}") from None
    if not isinstance(cfg, dict):
        raise InputError(str(path), "", "config.json must be a JSON object")
    try:
        return shape_from_config(cfg, name, source=str(path))
    except KeyError as e:
        raise InputError(str(path), e.args[0], "missing key in config.json") from None
    except (TypeError, ValueError) as e:
        raise InputError(str(path), "", f"bad config.json: {e}") from None


@dataclass(frozen=True)
class Catalog:
    gpus: dict[str, GpuSpec]  # canonical name -> spec
    models: dict[str, ModelShape]  # canonical name -> shape
    efficiency: dict = field(default_factory=dict)
    _gpu_keys: dict[str, str] = field(default_factory=dict)
    _model_keys: dict[str, str] = field(default_factory=dict)

    def gpu(self, name: str) -> GpuSpec | None:
        key = self._gpu_keys.get(norm_name(name))
        return self.gpus[key] if key else None

    def model(self, name: str) -> ModelShape | None:
        key = self._model_keys.get(norm_name(name))
        return self.models[key] if key else None

    def gpu_efficiency(self, gpu: str) -> dict:
        """Efficiency factors for a GPU type: defaults overlaid with that type's entries."""
        eff = dict(self.efficiency.get("defaults", {}))
        spec = self.gpu(gpu)
        eff.update(self.efficiency.get("gpus", {}).get(spec.name if spec else gpu, {}))
        return eff

    def with_factors(self, efficiency: dict) -> "Catalog":
        """This catalog with another efficiency document (planner/efficiency.py merges them)."""
        return replace(self, efficiency=efficiency)

    def with_gpus(self, specs: dict[str, GpuSpec]) -> "Catalog":
        """This catalog with GPU types it lacked (measured specs from an efficiency file)."""
        keys = {**self._gpu_keys, **{norm_name(n): n for n in specs}}
        return replace(self, gpus={**self.gpus, **specs}, _gpu_keys=keys)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(str(path), "", f"cannot read bundled catalog: {e}") from None


@lru_cache(maxsize=4)
def load_catalog(data_dir: Path = DATA_DIR) -> Catalog:
    gpus: dict[str, GpuSpec] = {}
    gpu_keys: dict[str, str] = {}
    path = data_dir / "gpus.json"
    for i, g in enumerate(_read_json(path)["gpus"]):
        try:
            spec = GpuSpec(
                name=g["name"],
                memory_gb=float(g["memory_gb"]),
                memory_bandwidth_gbps=float(g["memory_bandwidth_gbps"]),
                bf16_tflops=float(g["bf16_tflops"]),
                interconnect_gbps=float(g["interconnect_gbps"]),
                gpus_per_node=int(g["gpus_per_node"]),
                price_per_hour=g.get("price_per_hour"),
                spot_price_per_hour=g.get("spot_price_per_hour"),
                interconnect=g.get("interconnect", ""),
                price_source=g.get("price_source", ""),
                aliases=tuple(g.get("aliases", ())),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(str(path), f"gpus[{i}]", f"bad entry: {e}") from None
        gpus[spec.name] = spec
        for alias in (spec.name, *spec.aliases):
            gpu_keys[norm_name(alias)] = spec.name

    models: dict[str, ModelShape] = {}
    model_keys: dict[str, str] = {}
    index_path = data_dir / "models" / "index.json"
    for i, m in enumerate(_read_json(index_path)["models"]):
        cfg_path = data_dir / "models" / m["config"]
        models[m["name"]] = load_config_file(cfg_path, m["name"], f"models[{i}].config",
                                             str(index_path))
        for alias in (m["name"], m.get("hf_id", ""), *m.get("aliases", ())):
            if alias:
                model_keys[norm_name(alias)] = m["name"]

    eff_path = data_dir / "efficiency.json"
    efficiency = _read_json(eff_path) if eff_path.exists() else {}
    return Catalog(gpus, models, efficiency, gpu_keys, model_keys)
