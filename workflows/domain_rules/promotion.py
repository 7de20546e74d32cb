"""职级晋升 (rank promotion) rules: `promotion_eligible` (人选资格), `promotion_recheck`
(人选资格复核), `recommendation_threshold` (民主推荐得票) and `positions` (职数).

`promotion_eligible` judges a candidate at the 动议 (资格先行) from the person
facts (`workflows.facts.person_facts`) and, optionally, the person's approved
regular-assessment grades. The computation is the pure function `eligibility_reasons`
(facts snapshot + parameters + decision date → reasons); the rule only gathers its inputs.
Every number (the ladder of 《公务员职务与职级并行规定》第十八条, the 优秀 bonus, the exam, its
ranks and validity, the count of 好) is a parameter of the definition, never a constant
here. `promotion_recheck` runs the same judgement with the same parameters on the decision
date of 人选确定; `recommendation_threshold` asks more than a share of those who took part
in the 民主推荐.

`positions` takes a rank position (职数) on approval. The number comes from the
`rank_positions` table (`workflows.positions`): every row for the target rank and round on
the case's unit or a unit above it caps that unit's subtree; when no unit on the path has a
row, the definition's `positions[rank]` caps the case's own unit (0 for a rank it does not
list). Counted over the counted states plus the request, serialised per rank and round with
a PostgreSQL advisory lock; for the ranks of `category_ranks` (三三制 is for 较高职级), each
category (排头兵 / 实干家 / 老黄牛) holds at most ⌈positions / parts⌉ of a pool unless the action carries an override reason, which is stored
with the case and its history.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from marshmallow import RAISE, Schema, post_load, validate
from marshmallow import fields as mf
from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import positions as rank_positions
from ..errors import RuleViolation
from ..facts import PersonFacts, add_months, person_facts
from ..messages import msg
from ..models import Case
from ..rules import Batch, CaseFacts, Rule, register
from ..spec import FlowSpec, TransitionSpec

COUNTED_GRADES = ("优秀", "称职")  # annual grades that count as 称职 or better
EXCELLENT = "优秀"
LOCAL = ZoneInfo("Asia/Shanghai")
CASES = Case.__table__


# --------------------------------------------------------------------------- pure part


@dataclass(frozen=True)
class Reason:
    """One reason a candidate is not eligible: a code, a readable message, the numbers."""

    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


def months_between(start: dt.date, end: dt.date) -> int:
    """Whole calendar months from `start` to `end` (0 when end <= start)."""
    if end <= start:
        return 0
    months = (end.year - start.year) * 12 + end.month - start.month
    if end.day < start.day:
        months -= 1
    return max(months, 0)


def _years(months: Decimal | int) -> str:
    """Months as years, one decimal, rounded down: 17 months → '1.4' (never shows 2.0 for
    a requirement that is not met)."""
    value = (Decimal(months) / 12).quantize(Decimal("0.1"), rounding=ROUND_FLOOR)
    return f"{value}"


@dataclass(frozen=True)
class Tenure:
    """Time in the current rank as it counts for promotion, in months."""

    elapsed: int  # rank date → decision date
    uncounted: int  # months in years graded below 称职 (基本称职, 不称职, 不定等次)
    uncounted_years: tuple[int, ...]
    excellent_years: tuple[int, ...]
    bonus: Decimal  # months credited for 优秀 years

    @property
    def counted(self) -> Decimal:
        return Decimal(self.elapsed - self.uncounted) + self.bonus


def tenure(snap: PersonFacts, since: dt.date, on: dt.date, excellent_bonus_years: float
           ) -> Tenure:
    """Months in rank from `since` to `on`; the part of each year graded below 称职 does not
    count; each 优秀 year in rank adds `excellent_bonus_years`. A year is "in rank" when
    the rank was held during it (its year ≥ the rank date's year) and it ended before or on
    the decision date's year."""
    elapsed = months_between(since, on)
    uncounted, bad, excellent = 0, [], []
    for year, grade in sorted(snap.grades.items()):
        if year < since.year or year > on.year:
            continue
        if grade == EXCELLENT:
            excellent.append(year)
        elif grade not in COUNTED_GRADES:
            bad.append(year)
            start = max(since, dt.date(year, 1, 1))
            end = min(on, dt.date(year + 1, 1, 1))
            uncounted += months_between(start, end)
    bonus = Decimal(str(excellent_bonus_years)) * 12 * len(excellent)
    return Tenure(elapsed, uncounted, tuple(bad), tuple(excellent), bonus)


def reaches(step: dict[str, Any], held: str | None, posts: dict[str, str] | None) -> bool:
    """Whether holding `held` is a route of the ladder step: `held` is named in its
    `from`, or `held` is a post (职务, e.g. 乡镇党委书记) whose level (乡科级正职) is."""
    if held is None:
        return False
    return held in step["from"] or (posts or {}).get(held) in step["from"]


def exam_required(params: dict[str, Any], target_rank: str | None) -> bool:
    """凡提必考: an exam is named and the target rank is one it is required for (every
    rank when `exam_ranks` is not given)."""
    ranks = params.get("exam_ranks")
    return bool(params.get("exam")) and (ranks is None or target_rank in ranks)


def eligibility_reasons(snap: PersonFacts, params: dict[str, Any], target_rank: str | None,
                        on: dt.date, regular_grades: list[str] | None = None) -> list[Reason]:
    """Why the person of `snap` may not be a candidate for `target_rank` on day `on`;
    an empty list means eligible.

    `params` are the loaded parameters of `promotion_eligible` (ladder, posts,
    excellent_bonus_years, min_good, good_value, good_year, exam, exam_ranks,
    exam_valid_years, min_training_hours). `regular_grades` are the grades of the person's
    approved regular assessments of `good_year(params, on)` (needed only with `min_good`)."""
    reasons: list[Reason] = []
    ladder: dict[str, dict[str, Any]] = params["ladder"]
    posts: dict[str, str] = params.get("posts") or {}
    step = ladder.get(target_rank or "")
    if not target_rank:
        reasons.append(Reason("target", msg("promotion.no_target_rank_given")))
    elif step is None:
        reasons.append(Reason("target", msg("promotion.not_rank_ladder_known",
                                            target_rank=target_rank, ladder=list(ladder)),
                              {"target_rank": target_rank}))
    elif snap.rank is None or snap.rank_since is None:
        reasons.append(Reason("rank", msg("promotion.no_current_rank_rank"),
                              {"target_rank": target_rank}))
    elif not reaches(step, snap.rank, posts):
        reasons.append(Reason(
            "ladder", msg("promotion.reached_from_not_from", target_rank=target_rank,
                          from_=' or '.join(step['from']), snap_rank=snap.rank),
            {"target_rank": target_rank, "rank": snap.rank, "from": list(step["from"])}))
    else:
        t = tenure(snap, snap.rank_since, on, params["excellent_bonus_years"])
        needed = Decimal(str(step["years"])) * 12
        if t.counted < needed:
            n = len(t.excellent_years)
            extra = msg("promotion.excellent_counted", n=n, grade=EXCELLENT,
                        s="s" if n != 1 else "")
            if t.uncounted_years:
                extra = msg("promotion.not_counted", counted=extra, years=[
                    msg("promotion.year_grade", year=y, grade=snap.grades[y])
                    for y in t.uncounted_years])
            reasons.append(Reason(
                "years",
                msg("promotion.needs_years_has", value=Decimal(str(step['years'])),
                    snap_rank=snap.rank, value2=_years(t.counted), extra=extra),
                {"rank": snap.rank, "since": snap.rank_since.isoformat(),
                 "needed_years": float(step["years"]), "counted_months": float(t.counted),
                 "elapsed_months": t.elapsed, "uncounted_months": t.uncounted,
                 "uncounted_years": list(t.uncounted_years),
                 "excellent_years": list(t.excellent_years)}))
    for x in snap.sanctions_in_effect(on):
        until = (msg("promotion.until", day=x.effect_ends) if x.effect_ends
                 else msg("promotion.without_end"))
        reasons.append(Reason(
            "sanction", msg("promotion.sanction_decided_effect", x_kind=x.kind,
                            x_decided_on=x.decided_on, until=until),
            {"kind": x.kind, "category": x.category, "decided_on": x.decided_on.isoformat(),
             "effect_ends": x.effect_ends.isoformat() if x.effect_ends else None}))
    if snap.under_investigation_on(on):
        since = max(i.opened_on for i in snap.investigations if i.open_on(on))
        reasons.append(Reason("investigation", msg("promotion.under_investigation_since",
                                                   since=since),
                              {"opened_on": since.isoformat()}))
    graded = {y: g for y, g in snap.grades.items() if y <= on.year}
    if not graded:
        reasons.append(Reason("last_result", msg("promotion.no_annual_result_on")))
    else:
        year = max(graded)
        if graded[year] not in COUNTED_GRADES:
            reasons.append(Reason(
                "last_result", msg("promotion.last_annual_result_below", value=graded[year],
                                   year=year),
                {"year": year, "grade": graded[year]}))
    if exam_required(params, target_rank):
        valid = params.get("exam_valid_years")
        after = None if valid is None else add_months(on, -round(valid * 12))
        if not snap.passed(params["exam"], on, after=after):
            within = "" if after is None else msg("promotion.exam_within", after=after,
                                                   valid=f"{valid:g}")
            reasons.append(Reason("exam", msg("promotion.theory_exam_not_passed",
                                              exam=params['exam'], within=within),
                                  {"exam": params["exam"], "valid_from":
                                   after.isoformat() if after else None}))
    reasons.extend(training_reasons(snap, params, on))
    reasons.extend(dispatch_reasons(snap, params, on))
    if params.get("min_good"):
        good = sum(1 for g in regular_grades or () if g == params["good_value"])
        year = good_year(params, on)
        if good < params["min_good"]:
            reasons.append(Reason(
                "min_good", msg("promotion.needs_at_least_regular", min_good=params['min_good'],
                                good_value=params['good_value'], year=year, good=good),
                {"year": year, "needed": params["min_good"], "has": good}))
    return reasons


def training_reasons(snap: PersonFacts, params: dict[str, Any], on: dt.date) -> list[Reason]:
    """`min_training_hours`: the training hours (学时) of the year before `on`, derived from
    the training records plus the year's legacy total (`PersonFacts.training_totals`),
    must reach the parameter (公务员法 第六十七条: training is a basis of promotion)."""
    needed = params.get("min_training_hours")
    if not needed:
        return []
    year = on.year - 1
    total = snap.training_totals.get(year)
    has = total.hours if total else Decimal(0)
    if has >= Decimal(str(needed)):
        return []
    return [Reason("training", msg("promotion.needs_training_hours_has", value=Decimal(str(needed)),
                                   year=year, has=has, value2=total.records if total else 0),
                   {"year": year, "needed": float(needed), "has": float(has),
                    "records": total.records if total else 0,
                    "legacy_hours": float(total.legacy_hours) if total else 0.0})]


DISPATCH_SCALE = ("优秀", "称职", "基本称职", "不称职")  # best first


def dispatch_reasons(snap: PersonFacts, params: dict[str, Any], on: dt.date) -> list[Reason]:
    """`dispatch_min_grade` (off by default): a dispatch outcome (下沉一线任期考核结果, the
    person fact `dispatch_outcomes`) below this grade, decided within
    `dispatch_block_years` before `on`, defers promotion until that period has passed.
    No national regulation sets this; a unit that adopts it names its rule in the
    definition."""
    least = params.get("dispatch_min_grade")
    if not least:
        return []
    bar = DISPATCH_SCALE.index(least)
    months = round(params.get("dispatch_block_years", 1) * 12)
    out = []
    for o in snap.dispatch_outcomes:
        until = add_months(o.decided_on, months)
        if (o.grade in DISPATCH_SCALE and DISPATCH_SCALE.index(o.grade) > bar
                and o.decided_on <= on < until):
            out.append(Reason(
                "dispatch", msg("promotion.dispatch_outcome_decided_below", o_grade=o.grade,
                                value=o.post_type or '下沉一线', o_decided_on=o.decided_on, least=least,
                                until=until),
                {"grade": o.grade, "decided_on": o.decided_on.isoformat(),
                 "until": until.isoformat(), "needed": least, "fact_id": o.id}))
    return out


def good_year(params: dict[str, Any], on: dt.date) -> int:
    """The year whose regular results `min_good` counts for a decision on `on`: 当年 (the
    decision's own year, as seed document 5 words it: 当年平时考核获"好"等次少于 N 次的不得
    晋升职级) by default, or the year before with `good_year: previous`."""
    return on.year if params.get("good_year", "current") == "current" else on.year - 1


def next_ranks(ladder: dict[str, dict[str, Any]], rank: str | None,
               posts: dict[str, str] | None = None) -> list[str]:
    """The ranks one step above `rank` on the ladder (those it `reaches`), in the ladder's
    order; none for a rank at the top or off the ladder."""
    return [target for target, step in ladder.items() if reaches(step, rank, posts)]


def excellent_streak(snap: PersonFacts, on: dt.date) -> tuple[int, ...]:
    """The consecutive 优秀 years that end with the person's latest annual result up to the
    year of `on` (连续优秀): 2024 优秀, 2025 优秀 → (2024, 2025); a year graded otherwise or
    missing ends the run; a latest result other than 优秀 gives ()."""
    graded = {y: g for y, g in snap.grades.items() if y <= on.year}
    years: list[int] = []
    year = max(graded, default=None)
    while year is not None and graded.get(year) == EXCELLENT:
        years.append(year)
        year -= 1
    return tuple(reversed(years))


# --------------------------------------------------------------------------- queries


def regular_grades(s: Session, person_id: int, year: int, flow: str, states: list[str],
                   grade_field: str) -> list[str]:
    """Grades of the person's `flow` cases of `year` (period keys `YYYY-…`) in `states`."""
    rows = s.execute(select(CASES.c.data[grade_field].as_string()).where(
        CASES.c.flow_id == flow, CASES.c.subject_id == person_id,
        CASES.c.period_key.like(f"{year}%"), CASES.c.state.in_(states)))
    return [g for (g,) in rows if g is not None]


# --------------------------------------------------------------------------- promotion_eligible


class _Params(Schema):
    class Meta:
        unknown = RAISE


class _Step(_Params):
    from_ = mf.List(mf.String(validate=validate.Length(min=1)), data_key="from",
                    required=True, validate=validate.Length(min=1))
    years = mf.Float(required=True, validate=validate.Range(min=0, max=50))

    @post_load
    def _named(self, data, **kwargs):
        return {"from": data["from_"], "years": data["years"]}


class EligibleParams(_Params):
    ladder = mf.Dict(keys=mf.String(validate=validate.Length(min=1)),
                     values=mf.Nested(_Step), required=True,
                     validate=validate.Length(min=1))
    target_field = mf.String(load_default="target_rank")
    date_field = mf.String(load_default=None)  # the decision date; default: the engine's today
    excellent_bonus_years = mf.Float(load_default=0.5, validate=validate.Range(min=0, max=5))
    # 领导职务 posts held as a rank, with the level they count as on the ladder's routes
    # (乡镇党委书记 → 乡科级正职); a post may also be named in a step's `from` by itself.
    posts = mf.Dict(keys=mf.String(validate=validate.Length(min=1)),
                    values=mf.String(validate=validate.Length(min=1)), load_default=dict)
    exam = mf.String(load_default=None, validate=validate.Length(min=1))
    exam_ranks = mf.List(mf.String(validate=validate.Length(min=1)), load_default=None,
                         validate=validate.Length(min=1))  # default: every target rank
    exam_valid_years = mf.Float(load_default=None,  # default: a pass never expires
                                validate=validate.Range(min=0.1, max=50))
    min_good = mf.Integer(load_default=None, validate=validate.Range(min=1, max=12))
    # 学时: the training hours of the year before the decision (training_reasons)
    min_training_hours = mf.Float(load_default=None, validate=validate.Range(min=0, max=10000))
    good_value = mf.String(load_default="好")
    # current: the decision's year (当年, seed document 5); previous: the year before.
    good_year = mf.String(load_default="current",
                          validate=validate.OneOf(["current", "previous"]))
    good_flow = mf.String(load_default="regular-assessment")
    good_field = mf.String(load_default="grade")
    good_states = mf.List(mf.String(), load_default=lambda: ["approved"],
                          validate=validate.Length(min=1))
    # 优先情形 "连续优秀": marked in the eligibility list (workflows/eligibility.py) from this
    # many consecutive 优秀 years; not a condition of the rule.
    priority_excellent_years = mf.Integer(load_default=2, validate=validate.Range(min=1,
                                                                                  max=50))
    # 下沉一线: a dispatch outcome below this grade defers promotion for
    # dispatch_block_years after its approval (dispatch_reasons). Off (None) unless a
    # regulation of the unit says so; the national rules set no such bar.
    dispatch_min_grade = mf.String(load_default=None,
                                   validate=validate.OneOf(["优秀", "称职", "基本称职"]))
    dispatch_block_years = mf.Float(load_default=1, validate=validate.Range(min=0.1, max=10))


def _eligible_definition(p: dict[str, Any], t: TransitionSpec, spec: FlowSpec):
    for rank, step in p["ladder"].items():
        if rank in step["from"]:
            yield f".ladder.{rank}.from", msg("promotion.cannot_reached_from_itself", rank=rank)
    for i, rank in enumerate(p.get("exam_ranks") or ()):
        if rank not in p["ladder"]:
            yield f".exam_ranks[{i}]", msg("promotion.not_target_rank_ladder", rank=rank)
    if p.get("exam_ranks") and not p.get("exam"):
        yield ".exam_ranks", msg("promotion.exam_ranks_needs_exam")
    for key in ("target_field", "date_field"):
        name = p.get(key)
        if name is None:
            continue
        if name not in spec.fields:
            yield f".{key}", msg("promotion.unknown_field_declare_under", name=name)
        elif key == "date_field" and spec.fields[name].type != "date":
            yield f".{key}", msg("promotion.must_date_field_not", name=name,
                                 type=spec.fields[name].type)


def _decision_date(p: dict[str, Any], case: CaseFacts, now: dt.datetime | None) -> dt.date:
    """The case's decision date field, else today on the engine's clock (local time)."""
    value = case.data.get(p["date_field"]) if p.get("date_field") else None
    if value:
        return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
    return (now or dt.datetime.now(LOCAL)).astimezone(LOCAL).date()


def _eligible(p: dict[str, Any], batch: Batch) -> None:
    refused = []
    for case in batch.cases:
        on = _decision_date(p, case, batch.now)
        snap = batch.facts.query(person_facts, case.subject_id)
        grades = None
        if p.get("min_good"):
            grades = batch.facts.query(regular_grades, case.subject_id, good_year(p, on),
                                       p["good_flow"], p["good_states"], p["good_field"])
        target = case.data.get(p["target_field"])
        reasons = eligibility_reasons(snap, p, target, on, grades)
        if reasons:
            refused.append((case, target, on, reasons))
    if refused:
        parts = [msg("promotion.not_eligible", case_id=c.id, person_id=c.subject_id,
                     target=target, on=on, reasons=tuple(r.message for r in reasons))
                 for c, target, on, reasons in refused]
        raise RuleViolation("promotion_eligible", msg("promotion.not_eligible_cases",
                                                      cases=tuple(parts)), {"cases": [
            {"case_id": c.id, "person_id": c.subject_id, "target_rank": target,
             "decision_date": on.isoformat(),
             "reasons": [{"code": r.code, "message": r.message, "key": r.message.key,
                          **r.details} for r in reasons]}
            for c, target, on, reasons in refused]})


register(Rule(
    name="promotion_eligible",
    label="晋升人选资格 / promotion eligibility",
    params=EligibleParams(),
    check_definition=_eligible_definition,
    evaluate=_eligible,
))


class RecheckParams(_Params):
    date_field = mf.String(load_default=None)  # the decision date; default: today


def _recheck_definition(p: dict[str, Any], t: TransitionSpec, spec: FlowSpec):
    if not any(r.name == "promotion_eligible" for x in spec.transitions for r in x.rules):
        yield "", msg("promotion.promotion_recheck_judges_by")
    name = p.get("date_field")
    if name is not None and name not in spec.fields:
        yield ".date_field", msg("promotion.unknown_field_declare_under", name=name)
    elif name is not None and spec.fields[name].type != "date":
        yield ".date_field", msg("promotion.must_date_field_not", name=name,
                                 type=spec.fields[name].type)


def _recheck(p: dict[str, Any], batch: Batch) -> None:
    params = rank_positions.eligible_params(batch.spec)
    _eligible({**params, "date_field": p.get("date_field")}, batch)


# 人选确定: the same judgement once more, on the decision date: a sanction or an
# investigation may have come between the 动议 and the decision. One set of parameters.
register(Rule(
    name="promotion_recheck",
    label="人选资格复核 / eligibility rechecked",
    params=RecheckParams(),
    check_definition=_recheck_definition,
    evaluate=_recheck,
))


# --------------------------------------------------------------------------- recommendation


class RecommendationParams(_Params):
    cast_field = mf.String(load_default="votes_cast")
    for_field = mf.String(load_default="votes_for")
    against_field = mf.String(load_default=None)
    share = mf.Float(load_default=0.5, validate=validate.Range(min=0, max=1))
    strict = mf.Boolean(load_default=True)  # more than `share` (过半数); else at least


def _recommendation_definition(p: dict[str, Any], t: TransitionSpec, spec: FlowSpec):
    for key in ("cast_field", "for_field", "against_field"):
        name = p.get(key)
        if name is None:
            continue
        if name not in spec.fields:
            yield f".{key}", msg("promotion.unknown_field_declare_under", name=name)
        elif spec.fields[name].type != "int":
            yield f".{key}", msg("promotion.must_int_field_not", name=name,
                                 type=spec.fields[name].type)
        elif name not in t.requires + t.accepts:
            yield f".{key}", (msg("promotion.field_must_listed_requires", name=name,
                                  t_trigger=t.trigger))


def recommendation_problem(cast: int, votes_for: int, against: int | None, share: float,
                           strict: bool) -> tuple[str, dict[str, Any]] | None:
    """Why a 民主推荐 result does not recommend (or cannot be right); None when it does."""
    counted = votes_for + (against or 0)
    if counted > cast:
        return (msg("promotion.votes_more_than_cast", votes_for=votes_for, cast=cast,
                    counted=counted, against=msg("promotion.votes_against", against=against)
                    if against else ""), {"counted": counted})
    needed = Decimal(str(share)) * cast
    if votes_for > needed if strict else votes_for >= needed:
        return None
    return (msg("promotion.votes_short_strict" if strict else "promotion.votes_short",
                votes_for=votes_for, cast=cast, share=f"{share:.0%}",
                needed=f"{needed.normalize():f}"), {"needed": float(needed), "strict": strict})


def _recommendation(p: dict[str, Any], batch: Batch) -> None:
    for case in batch.cases:
        cast, votes_for = case.data.get(p["cast_field"]), case.data.get(p["for_field"])
        against = case.data.get(p["against_field"]) if p.get("against_field") else None
        if cast is None or votes_for is None:
            continue  # requires: says which is missing
        problem = recommendation_problem(cast, votes_for, against, p["share"], p["strict"])
        if problem:
            message, details = problem
            raise RuleViolation(
                "recommendation_threshold", msg("promotion.recommendation", case_id=case.id,
                                                message=message),
                {"case_id": case.id, "votes_cast": cast, "votes_for": votes_for,
                 "votes_against": against, "share": p["share"], **details})


register(Rule(
    name="recommendation_threshold",
    label="民主推荐得票 / recommendation threshold",
    params=RecommendationParams(),
    check_definition=_recommendation_definition,
    evaluate=_recommendation,
))


# --------------------------------------------------------------------------- positions


class PositionsParams(_Params):
    # The default positions per target rank, used where no unit on the case's path has a
    # row in rank_positions for the rank and round (workflows/positions.py).
    positions = mf.Dict(keys=mf.String(validate=validate.Length(min=1)),
                        values=mf.Integer(validate=validate.Range(min=0, max=10000)),
                        load_default=None)
    field = mf.String(load_default="target_rank")
    round_field = mf.String(load_default=None)
    counted_states = mf.List(mf.String())  # default: the transition's destination
    category_field = mf.String(load_default=None)
    category_parts = mf.Integer(load_default=3, validate=validate.Range(min=1, max=100))
    # The ranks whose positions the categories share (三三制 is for 较高职级 only); default:
    # every rank.
    category_ranks = mf.List(mf.String(validate=validate.Length(min=1)), load_default=None,
                             validate=validate.Length(min=1))
    override_field = mf.String(load_default=None)


def _positions_definition(p: dict[str, Any], t: TransitionSpec, spec: FlowSpec):
    for key in ("field", "round_field", "category_field", "override_field"):
        name = p.get(key)
        if name is not None and name not in spec.fields:
            yield f".{key}", msg("promotion.unknown_field_declare_under", name=name)
    if p.get("override_field") in spec.fields and p["override_field"] not in (
            t.requires + t.accepts):
        yield ".override_field", (msg("promotion.field_must_listed_accepts",
                                      override_field=p['override_field'], t_trigger=t.trigger))
    if p.get("override_field") and not p.get("category_field"):
        yield ".override_field", msg("promotion.override_needs_category_field")
    if p.get("category_ranks") and not p.get("category_field"):
        yield ".category_ranks", msg("promotion.category_ranks_needs_category")
    rank = spec.fields.get(p["field"])
    for i, r in enumerate(p.get("category_ranks") or ()):
        if rank is not None and rank.type == "enum" and r not in rank.values:
            yield f".category_ranks[{i}]", (msg("promotion.not_value_field_values", r=r,
                                                field=p['field'], rank_values=list(rank.values)))
    for i, s in enumerate(p.get("counted_states", ())):
        if s not in spec.states:
            yield f".counted_states[{i}]", msg("promotion.unknown_state", s=s)


def category_limit(positions: int, parts: int) -> int:
    """Each category may hold at most ⌈positions / parts⌉ (三三制: a third, rounded up)."""
    return math.ceil(positions / parts) if positions else 0


def categorised(p: dict[str, Any], rank: str) -> bool:
    """Whether the 三三制 categories share the positions of `rank` (its `category_ranks`)."""
    return p.get("category_field") is not None and (
        p.get("category_ranks") is None or rank in p["category_ranks"])


def _pool_details(pool: rank_positions.Pool) -> dict[str, Any]:
    return {"unit_id": pool.unit_id, "subtree": pool.subtree, "rank": pool.rank,
            "round": pool.round, "source": pool.source, "row_id": pool.row_id,
            "limit": pool.limit}


def _positions(p: dict[str, Any], batch: Batch) -> None:
    rf, cf, of = p.get("round_field"), p.get("category_field"), p.get("override_field")
    rule = rank_positions.PoolRule(batch.spec.flow, p["field"], rf,
                                   tuple(p.get("counted_states") or [batch.transition.dest]),
                                   cf)
    keys: dict[tuple, list[CaseFacts]] = {}
    for case in batch.cases:
        key = (case.unit_id, str(case.data.get(p["field"])),
               case.data.get(rf) if rf else None)
        keys.setdefault(key, []).append(case)
    # Lock every rank and round first, in one order for all requests (no deadlock), then
    # read the numbers and count: nothing can change them in between.
    for rank, round_value in sorted({(k[1], k[2]) for k in keys}, key=str):
        batch.facts.query(rank_positions.lock_pool, rank, round_value)
    pools: dict[rank_positions.Pool, list[CaseFacts]] = {}
    for (unit_id, rank, round_value), cases in keys.items():
        default = None if p["positions"] is None else p["positions"].get(rank, 0)
        for pool in batch.facts.query(rank_positions.pools_for, unit_id, rank, round_value,
                                      default, rf is not None):
            pools.setdefault(pool, []).extend(cases)
    for pool, cases in sorted(pools.items(), key=lambda kv: kv[0].order):
        used = batch.facts.query(rank_positions.pool_taken, rule, pool)
        where = pool.where(with_round=rf is not None)
        total, limit = sum(used.values()), pool.limit
        ids = [c.id for c in cases]
        if total + len(cases) > limit:
            raise RuleViolation(
                "positions",
                msg("promotion.positions_already_taken_asked", where=where, limit=limit,
                    value=pool.origin(), total=total, n_cases=len(cases)),
                {**_pool_details(pool), "used": total, "asked": len(cases), "case_ids": ids})
        if not cf or not categorised(p, pool.rank):
            continue
        cap = category_limit(limit, p["category_parts"])
        by_cat: dict[Any, list[CaseFacts]] = {}
        for c in cases:
            by_cat.setdefault(c.data.get(cf), []).append(c)
        for cat, asked in sorted(by_cat.items(), key=str):
            taken = used.get(cat, 0)
            if taken + len(asked) <= cap:
                continue
            plain = [c.id for c in asked if not of or rank_positions.blank_text(c.data.get(of))]
            if plain:
                hint = msg("promotion.category_hint", field=of) if of else ""
                raise RuleViolation(
                    "positions",
                    msg("promotion.category_may_hold_positions", cat=cat, where=where, cap=cap,
                        limit=limit, category_parts=p['category_parts'], taken=taken,
                        n_asked=len(asked), hint=hint),
                    {**_pool_details(pool), "category": cat, "category_limit": cap,
                     "used": taken, "asked": len(asked), "case_ids": plain})


register(Rule(
    name="positions",
    label="职数 / rank positions",
    params=PositionsParams(),
    check_definition=_positions_definition,
    evaluate=_positions,
    scope="batch",
))
