"""Instance shapes: what clouds rent (8 x H100 as one p5.48xlarge, 1 or 4 A10G as g5 sizes).

A workload opts in with `instances: catalog` (the bundled data/instances.json), or a list whose
items are a catalog instance name (every region of it), a mapping naming a catalog instance with
fields to override (`{name: p5.48xlarge, available: 2}`), or a full shape
`{name, gpu, gpus, price_per_hour, region, available, spot_price_per_hour}`.

Stage 1 then sees each GPU type at the cheapest on-demand $/GPU-hour of its instances and at the
sum of their GPUs as availability; both make stage 1 a relaxation of the node problem, so its
bound stays a lower bound on any instance plan's cost.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from functools import lru_cache

from gpumix.data import DATA_DIR
from gpumix.planner.catalog import Catalog, norm_name
from gpumix.planner.errors import InputError
from gpumix.planner.reading import bounds_text, in_bounds, name_problem, quote

CATALOG_FILE = DATA_DIR / "instances.json"


@dataclass(frozen=True)
class InstanceType:
    name: str
    gpu: str
    gpus: int
    price_per_hour: float
    region: str = ""
    available: int | None = None  # nodes of this type in this region (on-demand and spot together)
    spot_price_per_hour: float | None = None
    source: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.region)

    def price(self, spot: bool) -> float:
        return self.spot_price_per_hour if spot else self.price_per_hour


@lru_cache(maxsize=1)
def load_instance_catalog() -> tuple[InstanceType, ...]:
    doc = json.loads(CATALOG_FILE.read_text())
    return tuple(_read(_Fail(str(CATALOG_FILE)), d, f"instances[{i}]", None)
                 for i, d in enumerate(doc["instances"]))


class _Fail:
    def __init__(self, path: str):
        self.path = path

    def __call__(self, field: str, message: str):
        raise InputError(self.path, field, message)


def read_instances(raw, path: str, catalog: Catalog | None, need_shapes: bool = True,
                   bundled: tuple[InstanceType, ...] | None = None) -> tuple[InstanceType, ...]:
    """The workload's `instances` value, validated (InputError names file and field).
    `bundled` replaces data/instances.json as the catalog names resolve against (--catalog)."""
    fail = _Fail(path)
    bundled = load_instance_catalog() if bundled is None else bundled
    if raw == "catalog":
        out = bundled
    else:
        if not isinstance(raw, list) or not raw:
            fail("instances", "must be \"catalog\" or a non-empty list of instance shapes")
        out = []
        for i, item in enumerate(raw):
            where = f"instances[{i}]"
            if isinstance(item, str):
                hits = [t for t in bundled if t.name == item.strip()]
                if not hits:
                    fail(where, f"unknown instance {quote(item)} (not in data/instances.json; give gpu, gpus and "
                                "price_per_hour)")
                out += hits
                continue
            if not isinstance(item, dict):
                fail(where, "must be an instance name or a mapping")
            base = None
            if isinstance(item.get("name"), str) and "gpu" not in item:
                hits = [t for t in bundled if t.name == item["name"].strip()
                        and ("region" not in item or t.region == item["region"])]
                if not hits:
                    fail(f"{where}.name", f"unknown instance {quote(item['name'])} (give gpu, gpus and price_per_hour)")
                base = hits[0]
            out.append(_read(fail, item, where, base))
    canon = []
    for i, t in enumerate(out):
        spec = catalog.gpu(t.gpu) if catalog is not None else None
        if spec is None and catalog is not None and need_shapes:
            fail(f"instances[{i}].gpu", f"unknown GPU {quote(t.gpu)} (catalog: {', '.join(sorted(catalog.gpus))})")
        canon.append(replace(t, gpu=spec.name) if spec else t)
    seen = set()
    for i, t in enumerate(canon):
        if t.key in seen:
            fail(f"instances[{i}]", f"duplicate instance {quote(t.name)} in region {quote(t.region)}")
        seen.add(t.key)
    return tuple(canon)


def _read(fail, d: dict, where: str, base: InstanceType | None) -> InstanceType:
    known = {"name", "gpu", "gpus", "price_per_hour", "region", "available", "spot_price_per_hour", "source"}
    extra = set(d) - known
    if extra:
        fail(f"{where}.{sorted(extra)[0]}", f"unknown key (expected {', '.join(sorted(known))})")

    def get(key, default=None):
        if key in d:
            return d[key]
        return getattr(base, key) if base is not None else default

    name, gpu, region = get("name"), get("gpu"), get("region", "")
    for key, v in (("name", name), ("gpu", gpu)):
        if name_problem(v):
            fail(f"{where}.{key}", f"{name_problem(v)}, got {quote(v)}")
    if not isinstance(region, str) or (region.strip() and name_problem(region)):
        fail(f"{where}.region", f"must be a string without control characters, got {quote(region)}")
    gpus = get("gpus")
    if isinstance(gpus, bool) or not isinstance(gpus, int) or not in_bounds(gpus, "gpus"):
        fail(f"{where}.gpus", f"must be an integer in {bounds_text('gpus')}, got {quote(gpus)}")
    price = get("price_per_hour")
    if not _positive(price):
        fail(f"{where}.price_per_hour", f"must be a number in {bounds_text('price_per_hour')}, got {quote(price)}")
    spot = get("spot_price_per_hour")
    if spot is not None and not _positive(spot):
        fail(f"{where}.spot_price_per_hour", f"must be a number in {bounds_text('price_per_hour')} or null, "
                                             f"got {quote(spot)}")
    avail = get("available")
    if avail is not None and (isinstance(avail, bool) or not isinstance(avail, int) or not in_bounds(avail, "available")):
        fail(f"{where}.available", f"must be an integer in {bounds_text('available')} or null, got {quote(avail)}")
    return InstanceType(name.strip(), gpu.strip(), gpus, float(price), region.strip(), avail,
                        None if spot is None else float(spot), str(get("source", "") or ""))


def _positive(v) -> bool:
    """A price: finite and inside reading.BOUNDS["price_per_hour"]."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and in_bounds(v, "price_per_hour")


def gpu_basis(instances: tuple[InstanceType, ...]) -> dict[str, tuple[float, int | None]]:
    """Per GPU type: (cheapest on-demand $/GPU-hour, GPUs available in all its instances or None)."""
    out: dict[str, tuple[float, int | None]] = {}
    for t in instances:
        if t.available == 0:
            continue
        per_gpu = t.price_per_hour / t.gpus
        avail = None if t.available is None else t.available * t.gpus
        if t.gpu in out:
            p, a = out[t.gpu]
            out[t.gpu] = (min(p, per_gpu), None if a is None or avail is None else a + avail)
        else:
            out[t.gpu] = (per_gpu, avail)
    return out


def apply_instances(workload, catalog: Catalog):
    """The workload with its `gpus` replaced by the instance basis (see the module docstring).
    A `gpus` list in the workload still narrows the GPU types and can only lower availability."""
    from gpumix.planner.workload import GpuOffer

    if not workload.instances:
        return workload
    listed = None if workload.gpus is None else {norm_name(g.name): g for g in workload.gpus}
    offers = []
    for gpu, (price, avail) in sorted(gpu_basis(workload.instances).items()):
        if listed is not None:
            g = listed.get(norm_name(gpu))
            if g is None:
                continue
            if g.available is not None:
                avail = g.available if avail is None else min(avail, g.available)
        offers.append(GpuOffer(gpu, price, avail, catalog.gpu(gpu),
                               f"instances: the cheapest $/GPU-hour of the workload's {gpu} instance shapes"))
    if not offers:
        raise InputError(workload.path, "instances", "no instance offers a GPU type the workload allows")
    return replace(workload, gpus=tuple(offers))
