"""Stage 2, placement (OR-Tools CP-SAT): pack stage 1's replicas onto concrete instances.

Items are TP groups, each inside one node: a model's replica (a Config) or one set of a shared group
(planner.sharing.SetItem, --share-gpus); either comes with its variant (on spot or not).
Per GPU type g (types share no node and no availability, so they pack independently):
Sets        slots s: current nodes (re-planning) and fresh node slots of each offer o = (instance
            type, on-demand|spot) on g; replica kinds q: (item, variant), or (tp, variant) when
            which model a replica serves does not matter (no spare nodes, no current plan)
Variables   open[s] in {0,1}; r[s,q] in Z+ replicas of q on s; kept[s,q] (current nodes only)
Objective   min sum_s P[s] open[s] + h * (sum r - sum kept)      (P, h in 1e-5 $/h, see SCALE)
C1_fill     sum_q tp[q] r[s,q] <= G[s] open[s]                    (TP groups inside one node)
C2_count    sum_s r[s,q] = need[q]; with N spare nodes instead
            n[q] = sum_s r[s,q] and n[q] - (largest N of r[., q]) >= need[q]   (N theta + sum pi <= n - need,
            pi[s] >= r[s,q] - theta: the LP dual of "sum of the N largest")
C3_avail    sum of open slots of one instance type and region <= available
C3_gpus     sum_s G[s] open[s] <= A[g] when the workload caps GPU type g (`gpus: [{name, available}]`)
C4_keep     kept[s,q] <= r[s,q], kept[s,q] <= replicas of q on current node s
C5_order    open[s] >= open[s+1] among fresh slots of one offer (symmetry)

Prices are scaled to integers: P = round(price * SCALE) with SCALE = 1e5 (every catalog price is a
multiple of 1e-5 $/h, so this is exact there; otherwise each node is off by at most 0.5e-5 $/h and the
bound is lowered by that much per slot). Reported costs are recomputed from the float prices.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from ortools.sat.python import cp_model

from gpumix.planner.instances import InstanceType
from gpumix.planner.problem import Config
from gpumix.planner.sharing import SetItem
from gpumix.solvers.cpsat import CpParams, cp_status
from gpumix.solvers.result import Deadline, Status

SCALE = 100_000
FLOOR_S = 0.05  # least CP-SAT time one GPU type gets
Unit = Config | SetItem  # what one TP group on a node runs: a model's replica or a shared set
Item = tuple[Unit, bool]  # (unit, on spot)

__all__ = ["CpParams", "CurrentNode", "Item", "Node", "Packing", "Placed", "SetItem", "Unit", "pack", "scaled",
           "unit_key"]


def unit_key(u: Unit) -> tuple:
    """A total order over replicas and sets: sets first (by group), then configs as tuples."""
    return u.sort_key() if isinstance(u, SetItem) else (1, *u)


@dataclass(frozen=True)
class Placed:
    config: Unit  # a model's replica (Config) or one set of a shared group (SetItem)
    gpu_ids: tuple[int, ...]

    @property
    def is_set(self) -> bool:
        return isinstance(self.config, SetItem)


@dataclass(frozen=True)
class Node:
    instance: InstanceType
    spot: bool
    replicas: tuple[Placed, ...]
    origin: int | None = None  # index of the current-plan node this node continues

    @property
    def price(self) -> float:
        return self.instance.price(self.spot)


@dataclass(frozen=True)
class CurrentNode:
    instance: InstanceType | None  # None: its type is no longer offered (it can only stop)
    spot: bool
    replicas: tuple[Placed, ...]


@dataclass(frozen=True)
class GpuPacking:
    """One GPU type's packing."""

    status: Status
    nodes: list[Node] = field(default_factory=list)
    bound: float = 0.0  # on the node cost of this type
    started: int = 0  # replicas not on their current node with their current GPU ids


@dataclass(frozen=True)
class Packing:
    status: Status
    cost: float
    bound: float  # lower bound on the node cost of packing these replicas (with these options)
    nodes: tuple[Node, ...] = ()
    replicas: dict[Item, int] = field(default_factory=dict)
    started: int = 0
    wall_s: float = 0.0


class Scaled(NamedTuple):
    value: int  # round(price * SCALE)
    exact: bool  # price * SCALE was an integer (to 1e-6)


def scaled(price: float) -> Scaled:
    v = price * SCALE
    return Scaled(int(round(v)), abs(v - round(v)) < 1e-6)


def pack(need: dict[Item, int], instances, *, spare_nodes: int = 0, current: tuple[CurrentNode, ...] = (),
         churn_cost: float = 0.0, params: CpParams = CpParams(), gpu_caps: dict | None = None) -> Packing:
    """gpu_caps: GPU type -> GPUs available (None = unlimited), the problem's `available` (C3_gpus)."""
    t0 = time.perf_counter()
    deadline = Deadline.start(params.time_limit)
    need = {it: k for it, k in need.items() if k > 0}
    gpus = sorted({it[0].gpu for it in need} | {c.instance.gpu for c in current if c.instance})
    nodes, total_bound, statuses, started = [], 0.0, [], 0
    weight = {g: 1 + sum(k for it, k in need.items() if it[0].gpu == g) for g in gpus}
    for j, g in enumerate(gpus):
        share = weight[g] / sum(weight[h] for h in gpus[j:])  # by replicas, of the time still left
        limit = deadline.left(share, floor=FLOOR_S)
        res = _pack_gpu(g, {it: k for it, k in need.items() if it[0].gpu == g},
                        [i for i in instances if i.gpu == g],
                        [(ci, c) for ci, c in enumerate(current) if c.instance and c.instance.gpu == g],
                        spare_nodes, churn_cost, CpParams(limit, params.workers, params.seed, params.interleave),
                        (gpu_caps or {}).get(g))
        statuses.append(res.status)
        if not res.status.has_plan:
            return Packing(res.status, math.inf, res.bound, wall_s=time.perf_counter() - t0)
        nodes += res.nodes
        total_bound += res.bound
        started += res.started
    counts: dict[Item, int] = {}
    for nd in nodes:
        for p in nd.replicas:
            key = (p.config, nd.spot)
            counts[key] = counts.get(key, 0) + 1
    cost = sum(nd.price for nd in nodes)
    status = Status.OPTIMAL if all(s == Status.OPTIMAL for s in statuses) else Status.FEASIBLE
    nodes.sort(key=_node_key)
    counts = dict(sorted(counts.items(), key=lambda kv: (unit_key(kv[0][0]), kv[0][1])))
    return Packing(status, cost, min(total_bound, cost), tuple(nodes), counts, started,
                   time.perf_counter() - t0)


def _node_key(nd: Node):
    return (nd.instance.gpu, nd.instance.name, nd.instance.region, nd.spot,
            -1 if nd.origin is None else nd.origin, [(unit_key(p.config), p.gpu_ids) for p in nd.replicas])


class _Slot(NamedTuple):
    """A node that may be open: a current node (origin set) or a fresh one of an offer."""

    instance: InstanceType
    spot: bool
    origin: int | None  # index of the current node, None for a fresh slot
    current: dict  # kind -> replicas of it on the current node now


@dataclass(frozen=True)
class _Kinds:
    """Replica kinds q to pack and how many of each: (item, variant), or (tp, variant) when which
    unit a TP group runs does not matter for packing."""

    need: dict  # kind -> replicas
    kind_of: dict  # item -> its kind
    by_item: bool  # kinds are items (spare nodes or a current plan) rather than (tp, variant)

    def tp(self, q) -> int:
        return q[0].tp if self.by_item else q[0]


@dataclass
class _Model:
    cp: cp_model.CpModel
    opened: list  # open[s]
    r: dict  # (s, q) -> r[s, q]
    exact: bool  # every price scales to an integer exactly


def _kinds(need: dict[Item, int], by_item: bool) -> _Kinds:
    if by_item:
        return _Kinds(dict(need), {it: it for it in need}, True)
    kinds, kind_of = {}, {}  # replicas of equal TP and variant are interchangeable for packing
    for it, k in need.items():
        q = (it[0].tp, it[1])
        kinds[q] = kinds.get(q, 0) + k
        kind_of[it] = q
    return _Kinds(kinds, kind_of, False)


def _slots(kinds: _Kinds, instances, current, spare: int, churn_cost: float, cap: int | None = None) -> list[_Slot]:
    """Current nodes first, then fresh slots of each offer: no more than fit, than are available,
    and (plain packing) than an optimal plan opens, which leaves at most one node half empty."""
    nmax = {q: k * (spare + 1) for q, k in kinds.need.items()}
    slots, used_now = [], {}
    for ci, c in current:
        cur: dict = {}
        for p in c.replicas:
            q = (p.config, c.spot)
            cur[q] = cur.get(q, 0) + 1
        slots.append(_Slot(c.instance, c.spot, ci, cur))
        used_now[c.instance.key] = used_now.get(c.instance.key, 0) + 1
    mass = {v: sum(kinds.tp(q) * k for q, k in kinds.need.items() if q[1] == v) for v in (False, True)}
    for inst in instances:
        for v in (False, True):
            if v and inst.spot_price_per_hour is None:
                continue
            fit = sum(nmax[q] for q in kinds.need if q[1] == v and kinds.tp(q) <= inst.gpus)
            if not fit:
                continue
            ub = fit
            if not kinds.by_item and churn_cost == 0:
                ub = min(ub, 2 * math.ceil(mass[v] / inst.gpus) + 1)  # optimal: at most one node half-empty
            if inst.available is not None:
                ub = min(ub, inst.available - used_now.get(inst.key, 0))
            if cap is not None:
                ub = min(ub, cap // inst.gpus)  # C3_gpus holds no more of them open
            slots += [_Slot(inst, v, None, {})] * max(ub, 0)
    return slots


def _model(kinds: _Kinds, slots: list[_Slot], spare: int, churn_cost: float, cap: int | None = None) -> _Model | None:
    """The CP-SAT model of the module docstring; None when some kind fits no slot."""
    nmax = {q: k * (spare + 1) for q, k in kinds.need.items()}
    m = cp_model.CpModel()
    # open[s] = 1 if slot s is a node of the plan; r[s, q] replicas of kind q on it;
    # kept[s, q] of them already there (current nodes)
    opened, r, kept = [], {}, []
    objective, exact = [], True
    for s, (inst, v, ci, cur) in enumerate(slots):
        o = m.new_bool_var(f"open_{s}")
        opened.append(o)
        price, ok = scaled(inst.price(v))
        exact &= ok
        objective.append(price * o)
        fill = []
        for q in kinds.need:
            tp = kinds.tp(q)
            if q[1] != v or tp > inst.gpus:
                continue
            r[s, q] = m.new_int_var(0, min(inst.gpus // tp, nmax[q]), f"r_{s}_{len(r)}")
            fill.append(tp * r[s, q])
            if cur.get(q):
                k = m.new_int_var(0, cur[q], f"kept_{s}_{len(kept)}")
                m.add(k <= r[s, q])  # C4_keep
                kept.append(k)
        m.add(sum(fill) <= inst.gpus * o)  # C1_fill
    for q, k in kinds.need.items():
        on = [r[s, q] for s in range(len(slots)) if (s, q) in r]
        if not on:
            return None
        if spare == 0:
            m.add(sum(on) == k)  # C2_count
        else:  # C2_count with spares: what is left after losing the `spare` fullest slots
            theta = m.new_int_var(0, nmax[q], f"theta_{len(objective)}")
            pis = []
            for x in on:
                pi = m.new_int_var(0, nmax[q], "pi")
                m.add(pi >= x - theta)
                pis.append(pi)
            m.add(sum(on) - spare * theta - sum(pis) >= k)
            m.add(sum(on) <= nmax[q])
    by_key: dict = {}
    for s, slot in enumerate(slots):
        by_key.setdefault(slot.instance.key, []).append(s)
    for key, ss in by_key.items():
        a = slots[ss[0]].instance.available
        if a is not None:
            m.add(sum(opened[s] for s in ss) <= a)  # C3_avail
    if cap is not None:
        m.add(sum(slot.instance.gpus * opened[s] for s, slot in enumerate(slots)) <= cap)  # C3_gpus
    for s in range(1, len(slots)):
        if slots[s].origin is None and slots[s - 1].origin is None and slots[s][:2] == slots[s - 1][:2]:
            m.add(opened[s - 1] >= opened[s])  # C5_order
    h, _ = scaled(churn_cost)
    if h:
        objective.append(h * (sum(r.values()) - sum(kept)))
    m.minimize(sum(objective))
    return _Model(m, opened, r, exact)


def _pack_gpu(g, need: dict[Item, int], instances, current, spare: int, churn_cost: float,
              params: CpParams, cap: int | None = None) -> GpuPacking:
    """One GPU type: kinds, slots, model, solve, extract."""
    kinds = _kinds(need, spare > 0 or bool(current))
    slots = _slots(kinds, instances, current, spare, churn_cost, cap)
    mdl = _model(kinds, slots, spare, churn_cost, cap)
    if mdl is None:
        return GpuPacking(Status.INFEASIBLE, [], math.inf)
    solver = params.solver()
    st = cp_status(solver.solve(mdl.cp))
    if st == Status.INFEASIBLE:
        return GpuPacking(st, [], math.inf)
    if not st.has_plan:
        return GpuPacking(st, [], 0.0)
    slack = 0 if mdl.exact else 0.5 * len(slots)
    bound = max(solver.best_objective_bound - slack, 0) / SCALE
    counts = {(s, q): solver.value(x) for (s, q), x in mdl.r.items()}
    nodes = _extract(slots, [solver.value(o) for o in mdl.opened], counts, need, kinds.kind_of, kinds.by_item,
                     current)
    started = 0  # replicas not on their current node with their current GPU ids (as the diff counts them)
    for nd in nodes:
        old = {(p.config, p.gpu_ids) for p in current_replicas(current, nd.origin)} if nd.origin is not None else set()
        started += sum((p.config, p.gpu_ids) not in old for p in nd.replicas)
    return GpuPacking(st, nodes, bound, started)


def _extract(slots, opened, counts, need, kind_of, by_config, current) -> list[Node]:
    """Concrete replicas and GPU ids per open slot; a kept replica keeps its GPU ids."""
    pool: dict = {}  # kind -> configs still to place, in order
    if not by_config:
        for it in sorted(need, key=lambda it: (unit_key(it[0]), it[1])):
            pool.setdefault(kind_of[it], []).extend([it[0]] * need[it])
    nodes = []
    for s, (inst, v, ci, cur) in enumerate(slots):
        if not opened[s]:
            continue
        configs = []
        for (ss, q), k in sorted(counts.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
            if ss != s or k == 0:
                continue
            if by_config:
                configs += [q[0]] * k
            else:
                configs += pool[q][:k]
                del pool[q][:k]
        free = set(range(inst.gpus))
        placed = []
        if ci is not None:
            for p in sorted(current_replicas(current, ci), key=lambda p: p.gpu_ids):
                if p.config in configs and set(p.gpu_ids) <= free:
                    configs.remove(p.config)
                    free -= set(p.gpu_ids)
                    placed.append(p)
        for c in sorted(configs, key=lambda c: (-c.tp, unit_key(c))):
            ids = tuple(sorted(free)[:c.tp])
            free -= set(ids)
            placed.append(Placed(c, ids))
        placed.sort(key=lambda p: p.gpu_ids)
        nodes.append(Node(inst, v, tuple(placed), ci))
    return nodes


def current_replicas(current, ci) -> tuple[Placed, ...]:
    for i, c in current:
        if i == ci:
            return c.replicas
    return ()
