"""Results of finished assessment cases that other rules read (e.g. the annual 优秀 reads the
year's regular results, docs/domain.md §2).

`regular_results(s, person_id, year)` is the list of grades of the person's approved
regular-assessment (平时考核) cases of that year, in period order. A case counts when its
period key starts with the year (`2026-03`, `2026-Q1`, `2026-W05`), it is in one of the
approved states and it carries a grade in `data["grade"]`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import Case

REGULAR_FLOW = "regular-assessment"
APPROVED_STATES = ("approved",)  # the final state of definitions/regular-assessment.yaml


def regular_results(s: Session, person_id: int, year: int | str, flow: str = REGULAR_FLOW,
                    states: Iterable[str] = APPROVED_STATES, field_name: str = "grade"
                    ) -> list[str]:
    """The grades of the person's approved cases of `flow` in `year`, in period order."""
    rows = s.execute(
        select(Case.period_key, Case.data)
        .where(Case.flow_id == flow, Case.subject_id == person_id,
               Case.state.in_(list(states)), Case.period_key.like(f"{int(year)}-%"))
    ).all()
    out = [(key, data.get(field_name)) for key, data in rows if (data or {}).get(field_name)]
    return [grade for _key, grade in sorted(out, key=lambda kv: kv[0])]


@dataclass(frozen=True)
class ResultSummary:
    """A year's regular results: the grades in period order and the count per grade."""

    grades: tuple[str, ...]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.grades)

    def count(self, grade: str) -> int:
        return self.counts.get(grade, 0)

    @classmethod
    def of(cls, grades: Iterable[str]) -> ResultSummary:
        grades = tuple(grades)
        return cls(grades, dict(Counter(grades)))


def regular_summary(s: Session, person_id: int, year: int | str,
                    flow: str = REGULAR_FLOW) -> ResultSummary:
    return ResultSummary.of(regular_results(s, person_id, year, flow))
