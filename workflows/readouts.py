"""Small read-side answers the web pages need beside the engine's: names for ids, who a
step may be delegated to, and how full each quota pool is.

Nothing here writes or decides. The quota figures are the ones the `quota` rule counts
when an approval is fired (`rules._quota` through `engine._SqlFacts.quota_pool`): the pool's
cases over every version of the flow, and those in the rule's counted states carrying the
value — so a meter built on them refuses exactly what the engine will refuse.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy import case as sql_case

from . import notify, rules
from .db import Database
from .ledger import Quota
from .models import Case, Person
from .spec import FlowSpec, TransitionSpec

CASES = Case.__table__


def person_names(db: Database, ids: Iterable[int | None]) -> dict[int, str]:
    """Person id → name, for the ids given (None and unknown ids left out)."""
    wanted = sorted({i for i in ids if i is not None})
    if not wanted:
        return {}
    with db.unit_of_work(write=False) as s:
        return dict(s.execute(select(Person.id, Person.name).where(Person.id.in_(wanted))).all())


def delegates(db: Database, case_row: Any, spec: FlowSpec, steps: Iterable[TransitionSpec],
              exclude: Iterable[int]) -> list[tuple[int, str]]:
    """The people who hold a role of the current step's transitions on the case (转办 to
    them is possible), nearest holders first, without `exclude` and without the subject.
    The engine still checks the one chosen."""
    roles = [name for t in steps for name in t.by if name not in ("subject", "system")]
    with db.unit_of_work(write=False) as s:
        ids = notify.recipients(s, case_row, spec, dict.fromkeys(roles))
        skip = {*exclude, case_row.subject_id}
        ids = [i for i in ids if i not in skip]
        names = dict(s.execute(select(Person.id, Person.name).where(Person.id.in_(ids))).all()) \
            if ids else {}
    return [(i, names[i]) for i in ids if i in names]


@dataclass(frozen=True)
class PoolUsage:
    """One quota pool: its cases, those already counted with the value, and the limit."""

    key: tuple[tuple[str, Any], ...]  # (("period", "2026-11"), ("tier", "staff"), ("unit", 3))
    size: int
    used: int
    limit: int

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)


def pool_key(case: rules.CaseFacts, quota: Quota) -> tuple[tuple[str, Any], ...]:
    """The pool of a case, keyed exactly as the quota rule keys it (`rules.pool_of`)."""
    return tuple(sorted(rules.pool_of(case, list(quota.pool)).items()))


def pool_usage(db: Database, flow: str, quota: Quota,
               keys: Iterable[tuple[tuple[str, Any], ...]]) -> dict[tuple, PoolUsage]:
    """Size, used and limit of each pool asked for, in one grouped query.

    Grouped on the plain columns unit, tier and period (the same SQL on SQLite and
    PostgreSQL); a pool key without a value (no period) matches NULL, as in the engine."""
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}
    columns = {"unit": CASES.c.unit_id, "tier": CASES.c.tier, "period": CASES.c.period_key}
    hit = and_(CASES.c.state.in_(list(quota.counted_states)),
               CASES.c.data[quota.field].as_string() == str(quota.value))
    conds = [CASES.c.flow_id == flow]
    for name in quota.pool:  # narrow to the values asked for (NULL kept by the grouping)
        values = {dict(k)[name] for k in keys}
        if None not in values:
            conds.append(columns[name].in_(sorted(values, key=str)))
    group = [columns[name] for name in quota.pool]
    q = (select(*group, func.count(), func.coalesce(func.sum(sql_case((hit, 1), else_=0)), 0))
         .where(*conds).group_by(*group))
    found: dict[tuple, tuple[int, int]] = {}
    with db.unit_of_work(write=False) as s:
        for row in s.execute(q).all():
            key = tuple(sorted(zip(quota.pool, row[: len(group)], strict=True)))
            found[key] = (int(row[-2]), int(row[-1]))
    out = {}
    for key in keys:
        size, used = found.get(key, (0, 0))
        out[key] = PoolUsage(key, size, used, quota.limit(size))
    return out
