"""Small read-side answers the web pages need beside the engine's: names for ids, who a
step may be delegated to, and how full each quota pool is.

Nothing here writes or decides. The quota figures are the ones the quota rules count when
an approval is fired (`quotas.figures`, through `kernel.SqlFacts.quota_figures`): the
pool's cases over every version of the flow, and those in the rule's counted states
carrying the value — so a meter built on them refuses exactly what the engine will refuse.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from . import notify, quotas
from .db import Database
from .models import Person
from .spec import FlowSpec, TransitionSpec


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


def pool_usage(db: Database, flow: str, quota: quotas.Quota, cases: Iterable[Any]
               ) -> tuple[dict[int, quotas.PoolKey], dict[quotas.PoolKey, quotas.PoolFigures]]:
    """The pool of each case (id, unit_id, tier, period_key), and each pool's figures —
    `quotas.figures`, the count the rule makes when the approval is fired (the pool's
    units, its ratio per tier, a contact-point raise)."""
    cases = list(cases)
    with db.unit_of_work(write=False) as s:
        units = quotas.pool_units(s, quota, {c.unit_id for c in cases})
        keys = {c.id: quotas.pool_key(quota, units.get(c.unit_id, c.unit_id), c.tier,
                                      c.period_key) for c in cases}
        return keys, quotas.figures(s, flow, quota, keys.values(), units)
