"""The quota count (名额): what a pool is, how many cases it holds, how many already carry
the value, and its limit — once, for everyone who reads it.

The `quota` rule (好 of 平时考核) and the `excellent_quota` rule (优秀 of 年度考核) judge an
approval with it (`rules.Facts.quota_figures`, under an advisory lock per pool on
PostgreSQL); the bulk approval page's meter (`readouts.pool_usage`) and the ledger
(`ledger.grade_distribution`) show the same figures. A definition says:

- `pool: [unit, tier, period]` — what a pool is keyed on (同级人员同台竞技: tier);
- `unit_depth: N` — the unit of a pool is the case unit's ancestor at depth N (1 = the
  root), so that a pool spans a 机关's subtree; units above that depth keep their own pool;
- `merge_units: [[A, B, C]]` — units (each with its sub-units) that form one pool, named by
  the first listed unit; the nearest listed unit of a case's unit wins over `unit_depth`;
- `max_ratio: 0.4` or `{chief: 0.3, deputy: 0.35, staff: 0.4}` (好等次差异化分配);
- `rounding: floor | round | ceil` and `min` (0: no minimum of one).

Nothing here is a number of the domain: every figure comes from the definition.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select
from sqlalchemy import case as sql_case
from sqlalchemy.orm import Session

from .messages import msg
from .models import TIERS, Case, Unit, unit_path_ids

CASES = Case.__table__
UNITS = Unit.__table__
POOL_KEYS = ("unit", "tier", "period")  # case attributes a quota pool may be keyed on
QUOTA_RULES = ("quota", "excellent_quota")  # the rules whose pools are counted here

PoolKey = tuple[tuple[str, Any], ...]  # (("period", "2026-11"), ("tier", "staff"), ("unit", 3))

ROUNDINGS: dict[str, Callable[[Decimal], int]] = {
    "floor": lambda x: int(x.to_integral_value(rounding=ROUND_FLOOR)),
    "ceil": lambda x: int(x.to_integral_value(rounding=ROUND_CEILING)),
    "round": lambda x: int(x.to_integral_value(rounding=ROUND_HALF_UP)),
}


def quota_limit(size: int, max_ratio: float, rounding: str, minimum: int) -> int:
    """The most cases of the pool that may have the value: max(round(n × ratio), minimum).

    Decimal arithmetic on the ratio as written: 5 × 0.4 is exactly 2, never 1.999…"""
    return max(ROUNDINGS[rounding](Decimal(str(max_ratio)) * size), minimum)


@dataclass(frozen=True)
class Quota:
    """A quota rule of a flow (`quota` or `excellent_quota`), with its defaults filled in."""

    rule: str
    trigger: str
    field: str
    value: Any
    max_ratio: float | dict[str, float]  # one ratio, or one per tier
    rounding: str
    min: int
    pool: tuple[str, ...]
    counted_states: tuple[str, ...]
    unit_depth: int | None = None
    merge_units: tuple[tuple[str, ...], ...] = ()
    # excellent_quota only: the contact-point raise (考核联系点), never above the ceiling
    raised_ratio: float | None = None
    ceiling: float | None = None
    raise_units: tuple[str, ...] = ()
    raise_top: int | None = None

    @property
    def spans_units(self) -> bool:
        """Whether a pool may hold more than one unit (and the units table must be read)."""
        return self.unit_depth is not None or bool(self.merge_units)

    def ratio(self, tier: str | None = None, raised: bool = False) -> float:
        """The ratio of a pool: per tier when the definition gives one per tier (a case
        without a known tier gets the smallest), raised for a flagged unit, capped by the
        ceiling."""
        r = self.max_ratio
        if isinstance(r, dict):
            r = r.get(tier) if tier in r else min(r.values())
        if raised and self.raised_ratio is not None:
            r = max(r, self.raised_ratio)
        if self.ceiling is not None:
            r = min(r, self.ceiling)
        return float(r)

    def limit(self, size: int, tier: str | None = None, raised: bool = False) -> int:
        return quota_limit(size, self.ratio(tier, raised), self.rounding, self.min)


def from_params(rule: str, trigger: str, dest: str, p: dict[str, Any]) -> Quota:
    """The `Quota` of one use of a quota rule, from its loaded parameters."""
    return Quota(
        rule=rule, trigger=trigger, field=p["field"], value=p["value"],
        max_ratio=dict(p["max_ratio"]) if isinstance(p["max_ratio"], dict) else p["max_ratio"],
        rounding=p["rounding"], min=p["min"], pool=tuple(p["pool"]),
        counted_states=tuple(p.get("counted_states") or [dest]),
        unit_depth=p.get("unit_depth"),
        merge_units=tuple(tuple(g) for g in p.get("merge_units") or ()),
        raised_ratio=p.get("raised_ratio"), ceiling=p.get("ceiling"),
        raise_units=tuple(p.get("raise_units") or ()), raise_top=p.get("raise_top"))


def quota_of(spec: Any) -> Quota | None:
    """The first quota rule (`quota` or `excellent_quota`) on the flow's transitions: the
    one approvals are held to, which the meter and the ledger show."""
    from . import rules  # rules imports this module

    for t in spec.transitions:
        for r in t.rules:
            if r.name in QUOTA_RULES:
                return from_params(r.name, t.trigger, t.dest,
                                   rules.REGISTRY[r.name].params.load(r.params))
    return None


# --------------------------------------------------------------------------- pools


def pool_units(s: Session, quota: Quota, unit_ids: Iterable[int] = ()) -> dict[int, int]:
    """Unit id → the unit that stands for its pool, for the units given.

    Without `unit_depth` and `merge_units` every unit is its own pool (no query). With
    `unit_depth` alone, a unit's pool is its ancestor at that depth, read from the paths of
    the units given; a unit above that depth is its own pool. With `merge_units` every unit
    is mapped, from one read of the units table: the nearest unit listed in a group gives
    the group's first unit, else the ancestor at `unit_depth`. Unknown codes in
    `merge_units` are passed over (the other units of the group still merge)."""
    ids = set(unit_ids)
    if not quota.spans_units:
        return {u: u for u in ids}
    if not quota.merge_units:
        if not ids:
            return {}
        return {uid: depth_pool(quota, uid, unit_path_ids(path)) for uid, path in s.execute(
            select(Unit.id, Unit.path).where(Unit.id.in_(ids)))}
    rows = s.execute(select(Unit.id, Unit.code, Unit.path)).all()
    by_code = {code: uid for uid, code, _path in rows}
    head: dict[int, int] = {}
    for group in quota.merge_units:
        found = [by_code[c] for c in group if c in by_code]
        for uid in found:
            head[uid] = found[0]
    out: dict[int, int] = {}
    for uid, _code, path in rows:
        chain = unit_path_ids(path) or [uid]
        target = next((head[a] for a in reversed(chain) if a in head), None)
        out[uid] = depth_pool(quota, uid, chain) if target is None else target
    return out


def depth_pool(quota: Quota, unit_id: int, chain: list[int]) -> int:
    """The unit standing for `unit_id`'s pool by `unit_depth` alone, from its ancestors
    (root … unit): the one at that depth, or itself when it sits above it (or no depth is
    set)."""
    chain = chain or [unit_id]
    depth = quota.unit_depth
    return chain[depth - 1] if depth is not None and len(chain) >= depth else unit_id


def pool_key(quota: Quota, unit_pool: int, tier: str | None, period: str | None) -> PoolKey:
    """The key of a pool, from a case's pool unit (`pool_units`), tier and period key."""
    attrs = {"unit": unit_pool, "tier": tier, "period": period}
    return tuple(sorted((k, attrs[k]) for k in quota.pool))


@functools.lru_cache(maxsize=256)
def _count_statement(field: str, by_unit: bool, by_tier: bool, by_period: bool,
                     subtree: bool = False):
    """(unit, tier, period, cases, counted with field = value[, the unit's path]) grouped
    on the plain columns, narrowed to the units, tiers and periods asked for; built once
    per shape. With `subtree` (pools by `unit_depth` alone) the units are those of the
    pools' heads: a head at the depth, with every unit under it, or a head above it alone
    — matched on the units' paths, so the units table is not read whole nor every unit of
    a 机关 sent as a parameter."""
    conds = [CASES.c.flow_id == bindparam("flow")]
    group = [CASES.c.unit_id, CASES.c.tier, CASES.c.period_key]
    extra: list[Any] = []
    if subtree:
        # The pools' units found once (not a subquery per case: at 300 cases in one pool
        # that was 250 µs on SQLite against 145), each group's unit path read once.
        units, heads = UNITS.alias("u"), UNITS.alias("h")
        depth = func.length(heads.c.path) - func.length(func.replace(heads.c.path, "/", "")) - 1
        conds.append(CASES.c.unit_id.in_(select(units.c.id).where(
            heads.c.id.in_(bindparam("heads", expanding=True)),
            or_(units.c.id == heads.c.id,
                and_(depth == bindparam("depth"), units.c.path.startswith(heads.c.path))))))
        extra.append(select(UNITS.c.path).where(UNITS.c.id == CASES.c.unit_id)
                     .scalar_subquery())
    elif by_unit:
        conds.append(CASES.c.unit_id.in_(bindparam("units", expanding=True)))
    if by_tier:
        conds.append(CASES.c.tier.in_(bindparam("tiers", expanding=True)))
    if by_period:
        conds.append(CASES.c.period_key.in_(bindparam("periods", expanding=True)))
    hit = and_(CASES.c.state.in_(bindparam("states", expanding=True)),
               CASES.c.data[field].as_string() == bindparam("value"))
    return (select(*group, func.count(),
                   func.coalesce(func.sum(sql_case((hit, 1), else_=0)), 0), *extra)
            .where(*conds).group_by(*group))


# Runs the count statement with its parameters and returns its rows; by default on the
# session. The action path passes one that sends it together with the pool's lock.
Runner = Callable[[Any, dict[str, Any]], Iterable[Any]]


def usage(s: Session, flow: str, quota: Quota, keys: Iterable[PoolKey],
          units: dict[int, int] | None = None, run: Runner | None = None
          ) -> dict[PoolKey, tuple[int, int]]:
    """(cases in the pool, cases in the counted states carrying the value) of each pool
    asked for, over every version of the flow and every approver — one grouped query.

    A pool key without a value (no period in a flow without periods) matches NULL."""
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}
    wanted = {name: {dict(k)[name] for k in keys} for name in quota.pool}
    # Pools by unit_depth alone are matched on the units' paths (`_count_statement`).
    subtree = "unit" in quota.pool and quota.unit_depth is not None and not quota.merge_units
    if units is None and not subtree:
        units = pool_units(s, quota, wanted.get("unit", ()))
    params: dict[str, Any] = {"flow": flow, "value": str(quota.value),
                              "states": list(quota.counted_states)}
    by = {}
    if subtree:
        params.update(heads=sorted(wanted["unit"]), depth=quota.unit_depth)
    elif "unit" in quota.pool:
        params["units"] = sorted(u for u, head in units.items() if head in wanted["unit"])
        by["unit"] = True
    for name, param in (("tier", "tiers"), ("period", "periods")):
        values = wanted.get(name)
        by[name] = values is not None and None not in values  # NULL: narrowed when folding
        if by[name]:
            params[param] = sorted(values)
    stmt = _count_statement(quota.field, by.get("unit", False), by["tier"], by["period"],
                            subtree)
    found: dict[PoolKey, list[int]] = {}
    rows = run(stmt, params) if run is not None else s.execute(stmt, params).all()
    for unit_id, tier, period, n, used, *path in rows:
        head = depth_pool(quota, unit_id, unit_path_ids(path[0])) if subtree \
            else units.get(unit_id, unit_id)
        key = pool_key(quota, head, tier, period)
        acc = found.setdefault(key, [0, 0])
        acc[0] += int(n)
        acc[1] += int(used)
    return {k: (found[k][0], found[k][1]) if k in found else (0, 0) for k in keys}


@dataclass(frozen=True)
class PoolFigures:
    """One pool: its cases, those already counted with the value, its ratio and limit, and
    why the ratio is raised (a `contact_points.Raise`), if it is."""

    key: PoolKey
    size: int
    used: int
    limit: int
    ratio: float
    raised: Any = None

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)


def _year(period: Any) -> int | None:
    key = str(period or "")
    return int(key[:4]) if key[:4].isdigit() else None


def figures(s: Session, flow: str, quota: Quota, keys: Iterable[PoolKey],
            units: dict[int, int] | None = None, run: Runner | None = None
            ) -> dict[PoolKey, PoolFigures]:
    """Size, used, ratio and limit of each pool asked for: the one count the rules, the
    meter and the ledger share. For `excellent_quota` the pool's unit (or a unit above it)
    raised by the contact-point evaluation of the pool's year gets the raised ratio."""
    counts = usage(s, flow, quota, keys, units, run)
    raised: dict[tuple[int, int | None], Any] = {}
    if quota.raised_ratio is not None and "unit" in quota.pool and counts:
        from . import contact_points  # contact_points reads the rules, which read us

        pairs = {(dict(k)["unit"], _year(dict(k).get("period"))) for k in counts}
        raised = contact_points.raised_units(s, {u for u, _y in pairs}, {y for _u, y in pairs},
                                             quota.raise_units, quota.raise_top)
    out = {}
    for key, (size, used) in counts.items():
        attrs = dict(key)
        flag = raised.get((attrs.get("unit"), _year(attrs.get("period"))))
        ratio = quota.ratio(attrs.get("tier"), flag is not None)
        out[key] = PoolFigures(key, size, used, quota_limit(size, ratio, quota.rounding,
                                                            quota.min), ratio, flag)
    return out


def tiers_problems(ratio: Any) -> Iterable[tuple[str, str]]:
    """Definition-time problems of a per-tier `max_ratio`."""
    if not isinstance(ratio, dict):
        return
    for tier in ratio:
        if tier not in TIERS:
            yield f".max_ratio.{tier}", msg("rules.unknown_tier", tier=tier,
                                            tiers=list(TIERS))
    for tier in TIERS:
        if tier not in ratio:
            yield ".max_ratio", msg("rules.ratio_missing_tier", tier=tier)
