"""GPU and model catalogs: the bundled data/ files, Hugging Face config.json shapes, name lookup."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from gpumix.data import DATA_DIR
from gpumix.planner.errors import InputError
# The shape code lives in planner.shapes; re-exported here for the modules that import catalog.
from gpumix.planner.shapes import ModelShape, load_config_file, shape_from_config  # noqa: F401


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
    price_date: str = ""
    aliases: tuple[str, ...] = ()
    arch: str = ""  # planner/precision.ARCHS: which quantization kernels run (vLLM's table)
    fp8_tflops: float | None = None  # dense FP8 tensor rate; None: no FP8 units
    int8_tops: float | None = None  # dense INT8 tensor rate; None: no INT8 tensor cores


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
                price_date=str(g.get("price_date") or ""),
                aliases=tuple(g.get("aliases", ())),
                arch=str(g.get("arch") or ""),
                fp8_tflops=None if g.get("fp8_tflops") is None else float(g["fp8_tflops"]),
                int8_tops=None if g.get("int8_tops") is None else float(g["int8_tops"]),
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
