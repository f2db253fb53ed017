"""SkyPilot catalog CSVs (skypilot-org/skypilot-catalog `vms.csv`) as instance shapes and prices.

Columns read: InstanceType, AcceleratorName, AcceleratorCount, Price, SpotPrice, Region (others,
AvailabilityZone included, are ignored). One InstanceType per (InstanceType, Region):

- AWS-style rows repeat an instance per availability zone: the on-demand price is the lowest zone
  price, the spot price the median of the zones that give one (data/instances.json does the same).
- GCP rows put the GPU charge on a row with a blank InstanceType; the host VM is its own row. Such a
  row becomes an instance `HOST+Nx GPU` priced GPU + host, with the host GCP sells that GPU on (A100
  on a2-highgpu, A100-80GB on a2-ultragpu, H100 on a3-highgpu, L4 on g2-standard, others on
  n1-standard with 8 vCPUs per GPU) when the CSV has that host's row in the region; otherwise the
  row is skipped with a note rather than priced without its VM.
- Rows without a price, with a fractional accelerator count, or without an accelerator (CPU VMs)
  are skipped; every skip is counted in a note. Accelerators missing from data/gpus.json are named
  in a note and dropped (kept under their own name when a throughput table sizes them).

GPU specs come from the bundled catalog, matched by name or alias (plus SKY_NAMES below).
"""
from __future__ import annotations

import csv
import io
import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from gpumix.planner.catalog import Catalog
from gpumix.planner.errors import InputError
from gpumix.planner.instances import InstanceType
from gpumix.planner.reading import BOUNDS, bounds_text, in_bounds, name_problem, quote, read_text

REQUIRED = ("InstanceType", "AcceleratorName", "AcceleratorCount", "Price", "SpotPrice", "Region")

# SkyPilot accelerator names that differ from data/gpus.json names and aliases
SKY_NAMES = {"A100": "A100-40GB", "H100-MEGA": "H100", "H100-80GB": "H100", "A100-40GB": "A100-40GB"}

# GCP: accelerator -> host VM for a count (None: n1-standard with 8 vCPUs per GPU)
GCP_HOSTS = {
    "A100": {1: "a2-highgpu-1g", 2: "a2-highgpu-2g", 4: "a2-highgpu-4g", 8: "a2-highgpu-8g",
             16: "a2-megagpu-16g"},
    "A100-80GB": {1: "a2-ultragpu-1g", 2: "a2-ultragpu-2g", 4: "a2-ultragpu-4g", 8: "a2-ultragpu-8g"},
    "H100": {8: "a3-highgpu-8g"},
    "H100-MEGA": {8: "a3-megagpu-8g"},
    "L4": {1: "g2-standard-4", 2: "g2-standard-24", 4: "g2-standard-48", 8: "g2-standard-96"},
}


@dataclass(frozen=True)
class SkyCatalog:
    instances: tuple[InstanceType, ...]
    notes: tuple[str, ...]


def _price(path: Path, line: int, column: str, text: str | None) -> float | None:
    """A price cell: None when blank, zero or negative (the row is skipped); InputError when it is
    not finite or above reading.BOUNDS["price_per_hour"] (a corrupt catalog, not a missing price)."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        v = float(text)
    except ValueError:
        return None
    if v <= 0:
        return None
    if not math.isfinite(v) or not in_bounds(v, "price_per_hour"):
        raise InputError(str(path), f"line {line}: {column}",
                         f"must be a price in {bounds_text('price_per_hour')} $/h, got {quote(text)}")
    return v


def _host_for(acc: str, count: int) -> str:
    hosts = GCP_HOSTS.get(acc)
    if hosts is not None:
        return hosts.get(count, "")
    return f"n1-standard-{min(8 * count, 96)}"


@dataclass
class _Scan:
    """What the rows of one CSV add up to."""

    skipped: Counter = field(default_factory=Counter)  # why -> rows skipped
    unknown: Counter = field(default_factory=Counter)  # accelerator not in data/gpus.json -> rows
    vm_price: dict = field(default_factory=dict)  # GCP hosts: (VM, region) -> (price, spot)
    offers: dict = field(default_factory=lambda: defaultdict(lambda: {"price": [], "spot": []}))
    gpu_rows: list = field(default_factory=list)  # GCP GPU charges: (acc, gpu, count, price, spot, region)


def load_skypilot_csv(path: Path | str, catalog: Catalog, need_shapes: bool = True) -> SkyCatalog:
    """Read a SkyPilot vms.csv; InputError (file, field) when it is not one."""
    path = Path(path)
    scan = _Scan()
    for line, row in enumerate(_read_rows(path), start=2):
        _scan_row(path, line, row, catalog, need_shapes, scan)
    _add_gcp_offers(scan)
    instances = tuple(
        InstanceType(name, o["gpu"], o["gpus"], round(min(o["price"]), 6), region, None,
                     round(statistics.median(o["spot"]), 6) if o["spot"] else None,
                     f"SkyPilot catalog {path.name}")
        for (name, region), o in sorted(scan.offers.items()))
    notes = _notes(path, instances, scan, need_shapes)
    if not instances:
        raise InputError(str(path), "--catalog", "no usable GPU instance rows"
                         + (f" ({'; '.join(notes)})" if notes else ""))
    return SkyCatalog(instances, tuple(notes))


def _read_rows(path: Path) -> list[dict]:
    text = read_text(path, "catalog", "--catalog")
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = list(reader)
        header = reader.fieldnames or ()
    except csv.Error as e:
        raise InputError(str(path), "--catalog", f"cannot read CSV: {quote(str(e))}") from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(str(path), missing[0], "missing column (a SkyPilot catalog CSV has "
                         + ", ".join(REQUIRED) + ")")
    return rows


def _scan_row(path: Path, line: int, row: dict, catalog: Catalog, need_shapes: bool, scan: _Scan) -> None:
    for column in ("InstanceType", "AcceleratorName", "Region"):
        value = row[column]
        if not isinstance(value, (str, type(None))):  # a short row leaves None, a long one a list
            raise InputError(str(path), f"line {line}: {column}", "malformed row")
        if value and value.strip() and name_problem(value):
            raise InputError(str(path), f"line {line}: {column}", f"{name_problem(value)}, got {quote(value)}")
    name = (row["InstanceType"] or "").strip()
    acc = (row["AcceleratorName"] or "").strip()
    region = (row["Region"] or "").strip()
    price, spot = _price(path, line, "Price", row["Price"]), _price(path, line, "SpotPrice", row["SpotPrice"])
    if not acc:
        if name and price is not None and ((name, region) not in scan.vm_price
                                           or price < scan.vm_price[(name, region)][0]):
            scan.vm_price[(name, region)] = (price, spot)
        scan.skipped["no accelerator"] += 1
        return
    try:
        count_f = float(row["AcceleratorCount"])
    except (TypeError, ValueError):
        raise InputError(str(path), f"line {line}: AcceleratorCount",
                         f"must be a number, got {quote(row['AcceleratorCount'])}") from None
    if not math.isfinite(count_f) or count_f > BOUNDS["gpus"][1]:
        raise InputError(str(path), f"line {line}: AcceleratorCount",
                         f"must be at most {BOUNDS['gpus'][1]:g}, got {quote(row['AcceleratorCount'])}")
    if count_f < 1 or not count_f.is_integer():
        scan.skipped["fractional accelerator count"] += 1
        return
    count = int(count_f)
    if price is None:
        scan.skipped["blank on-demand price"] += 1
        return
    spec = catalog.gpu(SKY_NAMES.get(acc, acc))
    if spec is None:
        scan.unknown[acc] += 1
        if need_shapes:
            return
    gpu = spec.name if spec else acc
    if not name:
        scan.gpu_rows.append((acc, gpu, count, price, spot, region))
        return
    o = scan.offers[(name, region)]
    o.update(gpu=gpu, gpus=count)
    o["price"].append(price)
    if spot is not None:
        o["spot"].append(spot)


def _add_gcp_offers(scan: _Scan) -> None:
    """GCP: each GPU charge plus its host VM becomes an instance `HOST+Nx GPU`."""
    for acc, gpu, count, price, spot, region in scan.gpu_rows:
        host = _host_for(acc, count)
        if (host, region) not in scan.vm_price:
            scan.skipped["GCP accelerator without its host VM row in the CSV"] += 1
            continue
        host_price, host_spot = scan.vm_price[(host, region)]
        o = scan.offers[(f"{host}+{count}x{acc}", region)]
        o.update(gpu=gpu, gpus=count)
        o["price"].append(price + host_price)
        if spot is not None:
            o["spot"].append(spot + (host_spot if host_spot is not None else host_price))


def _notes(path: Path, instances: tuple[InstanceType, ...], scan: _Scan, need_shapes: bool) -> list[str]:
    notes = []
    if instances:
        notes.append(f"catalog {path.name}: {len(instances)} instance types in "
                     f"{len({t.region for t in instances})} regions")
    for why, n in sorted(scan.skipped.items()):
        if why != "no accelerator":  # CPU VMs: expected in every cloud's catalog
            notes.append(f"catalog {path.name}: skipped {n} row{'s' if n != 1 else ''}: {why}")
    if scan.unknown:
        what = ", ".join(f"{a} ({n} row{'s' if n != 1 else ''})" for a, n in sorted(scan.unknown.items()))
        verdict = "skipped" if need_shapes else "kept for the throughput table"
        notes.append(f"catalog {path.name}: accelerators not in data/gpus.json, {verdict}: {what}")
    return notes
