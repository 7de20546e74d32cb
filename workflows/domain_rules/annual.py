"""Rules of the annual assessment (年度考核, docs/domain.md §2).

- `sanction_block`: sanctions (处分, 诫勉) and investigations limit the grade of a year;
  which kind blocks what, and for how many years, is a parameter table.
- `regular_linkage`: 优秀 needs the year's regular results (平时考核): a minimum count or
  share of 好, none below a grade, optionally a weighted score.
- `excellent_quota`: the 优秀 quota per pool (default 20 % of those assessed, 《公务员考核规定》
  2020), raised (default 25 %) for units flagged by the contact-point evaluation
  (考核联系点): a pool whose unit (or a unit above it) has a score sheet (成绩单,
  `workflows.contact_points`) of the assessment year marked `raised`, or within
  `raise_top`, or is listed in `raise_units`; never above the ceiling (default 25 %).
  Pools are formed as for `quota` (`unit_depth`, `merge_units`: workflows/quotas.py).

The assessment year is the case's period key (`2026`). Every number is a parameter with
docs/domain.md's value as the default; nothing here is a constant of the domain.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, validate, validates_schema
from marshmallow import fields as mf

from ..errors import RuleViolation
from ..facts import person_facts
from ..messages import msg
from ..models import SANCTION_KINDS
from ..quotas import from_params
from ..results import regular_results
from ..rules import (
    POOL_KEYS,
    Batch,
    CaseFacts,
    PoolParams,
    RatioField,
    Rule,
    field_value_problems,
    judge_quota,
    pool_problems,
    register,
)
from ..spec import FlowSpec, TransitionSpec

GRADE_FIELD = "grade"
EXCELLENT = "优秀"
NO_GRADE = "不定等次"
REGULAR_SCALE = ["好", "较好", "一般", "较差"]  # best first: the regular flow's grades


class _Params(Schema):
    class Meta:
        unknown = RAISE


def _year_of(case: CaseFacts) -> int | None:
    key = case.period_key or ""
    return int(key[:4]) if key[:4].isdigit() else None


def _enum_problems(spec: FlowSpec, field: str, values: list[Any], path: str):
    """Definition-time: the field exists and (for an enum) the values are its values."""
    if field not in spec.fields:
        yield ".field", msg("annual.unknown_field_declare_under", field=field)
        return
    yield from field_value_problems(spec, field, values, path)


# --------------------------------------------------------------------------- sanction_block


class BlockParams(_Params):
    """What one kind of sanction does to the grade of an assessment year."""

    blocks = mf.List(mf.String(), validate=validate.Length(min=1))  # grades it forbids
    only = mf.List(mf.String(), validate=validate.Length(min=1))  # or: the grades left
    # decided: the year of the decision and the `years - 1` following years;
    # effect: every year its effect period (影响期) overlaps.
    basis = mf.String(load_default="decided", validate=validate.OneOf(["decided", "effect"]))
    years = mf.Integer(load_default=1, validate=validate.Range(min=1, max=10))

    @validates_schema
    def _one_of(self, data, **kwargs):
        if ("blocks" in data) == ("only" in data):
            raise ValidationError(msg("annual.give_exactly_one_blocks"))


class InvestigationParams(_Params):
    only = mf.List(mf.String(), validate=validate.Length(min=1))  # grades left while open
    refuse = mf.Boolean(load_default=False)  # or: no grade may be decided while open

    @validates_schema
    def _one_of(self, data, **kwargs):
        if bool(data.get("only")) == bool(data.get("refuse")):
            raise ValidationError(msg("annual.give_exactly_one_only"))


BELOW_COMPETENT = ["基本称职", "不称职", NO_GRADE]  # 不得确定为称职以上等次
# The annual flow's sanction_block table when a definition gives none (the shipped
# annual-assessment.yaml gives the same table, with its sources).
DEFAULT_KINDS = {
    "警告": {"blocks": [EXCELLENT], "basis": "effect", "years": 1},
    "诫勉": {"blocks": [EXCELLENT], "basis": "effect", "years": 1},
    "记过": {"only": [NO_GRADE], "basis": "decided", "years": 1},
    "记大过": {"only": [NO_GRADE], "basis": "decided", "years": 2},
    "降级": {"only": [NO_GRADE], "basis": "decided", "years": 2},
    "撤职": {"only": [NO_GRADE], "basis": "decided", "years": 2},
    "开除": {"only": [NO_GRADE], "basis": "decided", "years": 1},
    "党内警告": {"blocks": [EXCELLENT], "basis": "decided", "years": 1},
    "党内严重警告": {"blocks": [EXCELLENT], "basis": "decided", "years": 1},
    "撤销党内职务": {"only": BELOW_COMPETENT, "basis": "decided", "years": 1},
    "留党察看": {"only": BELOW_COMPETENT, "basis": "decided", "years": 1},
    "开除党籍": {"only": [NO_GRADE], "basis": "decided", "years": 1},
    **{k: {"blocks": [EXCELLENT], "basis": "decided", "years": 1}
       for k in ("停职检查", "调离岗位", "调整职务", "责令辞职", "免职", "降职")},
}
DEFAULT_INVESTIGATION = {"only": [NO_GRADE], "refuse": False}


class SanctionBlockParams(_Params):
    field = mf.String(load_default=GRADE_FIELD)
    kinds = mf.Dict(keys=mf.String(), values=mf.Nested(BlockParams),
                    load_default=lambda: {k: dict(v) for k, v in DEFAULT_KINDS.items()})
    investigation = mf.Nested(InvestigationParams, allow_none=True,
                              load_default=lambda: dict(DEFAULT_INVESTIGATION))


def _sanction_block_definition(p: dict[str, Any], t: TransitionSpec, spec: FlowSpec):
    if p["field"] not in spec.fields:
        yield ".field", msg("annual.unknown_field_declare_under", field=p['field'])
        return
    for kind, block in p["kinds"].items():
        if kind not in SANCTION_KINDS:  # a misspelt kind would never block anything
            yield f".kinds.{kind}", (msg("annual.not_kind_sanction_kinds", kind=kind,
                                         SANCTION_KINDS=list(SANCTION_KINDS)))
        key = "only" if "only" in block else "blocks"
        yield from field_value_problems(spec, p["field"], block[key], f"kinds.{kind}.{key}")
    inv = p.get("investigation")
    if inv and inv.get("only"):
        yield from field_value_problems(spec, p["field"], inv["only"], "investigation.only")
    if spec.period != "year":
        yield "", msg("annual.sanction_block_reads_assessment", spec_period=spec.period)


def _applies(block: dict[str, Any], sanction: Any, year: int) -> bool:
    if block["basis"] == "effect":
        return (sanction.decided_on < dt.date(year + 1, 1, 1)
                and (sanction.effect_ends is None or sanction.effect_ends > dt.date(year, 1, 1)))
    return sanction.decided_on.year <= year < sanction.decided_on.year + block["years"]


def _sanction_block(p: dict[str, Any], batch: Batch) -> None:
    field = p["field"]
    label = batch.spec.fields[field].label
    for case in batch.cases:
        grade = case.data.get(field)
        year = _year_of(case)
        if grade is None or year is None:
            continue
        facts = batch.facts.query(person_facts, case.subject_id)
        for s in facts.sanctions:
            block = p["kinds"].get(s.kind)
            if block is None or not _applies(block, s, year):
                continue
            if "only" in block:
                refused = grade not in block["only"]
                what = msg("annual.allows_only", grades=" / ".join(block["only"]))
            else:
                refused = grade in block["blocks"]
                what = msg("annual.blocks", grades=" / ".join(block["blocks"]))
            if not refused:
                continue
            if block["basis"] == "effect":
                when = (msg("annual.in_effect_until", day=s.effect_ends.isoformat())
                        if s.effect_ends else msg("annual.in_effect_without_end"))
            else:
                last = s.decided_on.year + block["years"] - 1
                span = str(last) if last == s.decided_on.year else \
                    f"{s.decided_on.year}–{last}"
                when = msg("annual.applies_to", span=span)
            raise RuleViolation(
                "sanction_block",
                msg("annual.decided_not_possible", case_id=case.id, s_kind=s.kind,
                    s_decided_on=s.decided_on.isoformat(), when=when, what=what, year=year,
                    label=label, grade=grade),
                {"case_id": case.id, "sanction_id": s.id, "kind": s.kind,
                 "decided_on": s.decided_on.isoformat(),
                 "effect_ends": s.effect_ends.isoformat() if s.effect_ends else None,
                 "category": s.category, "year": year, "grade": grade,
                 "only": block.get("only"), "blocks": block.get("blocks")},
            )
        inv = p.get("investigation")
        open_ = [i for i in facts.investigations if i.closed_on is None]
        if inv and open_:
            i = open_[0]
            if inv.get("refuse"):
                raise RuleViolation(
                    "sanction_block",
                    msg("annual.under_investigation_since_grade", case_id=case.id,
                        i_opened_on=i.opened_on.isoformat(), year=year),
                    {"case_id": case.id, "investigation_id": i.id, "year": year,
                     "grade": grade, "opened_on": i.opened_on.isoformat()})
            if grade not in inv["only"]:
                raise RuleViolation(
                    "sanction_block",
                    msg("annual.under_investigation_since_grade_2", case_id=case.id,
                        i_opened_on=i.opened_on.isoformat(), year=year,
                        only=' / '.join(inv['only']), grade=grade),
                    {"case_id": case.id, "investigation_id": i.id, "year": year,
                     "grade": grade, "only": inv["only"],
                     "opened_on": i.opened_on.isoformat()})


register(Rule(
    name="sanction_block",
    label="处分影响等次 / sanctions block grades",
    params=SanctionBlockParams(),
    check_definition=_sanction_block_definition,
    evaluate=_sanction_block,
))


# --------------------------------------------------------------------------- regular_linkage


class WeightedParams(_Params):
    """Regular results as a share of an annual score (e.g. 50–60 %)."""

    weight = mf.Float(required=True, validate=validate.Range(min=0, max=1))
    scores = mf.Dict(keys=mf.String(), values=mf.Float(),  # a score per regular grade
                     load_default=lambda: {"好": 100.0, "较好": 85.0, "一般": 70.0,
                                           "较差": 50.0})
    score_field = mf.String(required=True)  # the annual case's own score, e.g. 民主测评得分
    min_score = mf.Float(required=True)


class RegularLinkageParams(_Params):
    field = mf.String(load_default=GRADE_FIELD)
    value = mf.String(load_default=EXCELLENT)  # the annual grade the linkage guards
    regular_flow = mf.String(load_default="regular-assessment")
    regular_states = mf.List(mf.String(), load_default=lambda: ["approved"])
    scale = mf.List(mf.String(), load_default=lambda: list(REGULAR_SCALE),
                    validate=validate.Length(min=2))  # regular grades, best first
    good = mf.String(load_default="好")
    min_good = mf.Integer(validate=validate.Range(min=0))  # at least this many 好
    min_good_share = mf.Float(validate=validate.Range(min=0, max=1))  # share of results
    share_strict = mf.Boolean(load_default=True)  # true: more than the share
    none_below = mf.String()  # no result worse than this grade
    min_results = mf.Integer(load_default=0, validate=validate.Range(min=0))
    weighted = mf.Nested(WeightedParams)


def _regular_linkage_definition(p: dict[str, Any], t: TransitionSpec, spec: FlowSpec):
    yield from _enum_problems(spec, p["field"], [p["value"]], "value")
    for name in ("good", "none_below"):
        if p.get(name) is not None and p[name] not in p["scale"]:
            yield f".{name}", (msg("annual.not_regular_grade_grades", value=p[name],
                                   scale=list(p['scale'])))
    if not any(p.get(k) is not None for k in ("min_good", "min_good_share", "none_below",
                                               "weighted")) and not p["min_results"]:
        yield "", msg("annual.give_at_least_one")
    w = p.get("weighted")
    if w:
        if w["score_field"] not in spec.fields:
            yield ".weighted.score_field", (msg("annual.unknown_field_declare_under_2",
                                                score_field=w['score_field']))
        elif spec.fields[w["score_field"]].type not in ("int", "decimal"):
            yield ".weighted.score_field", msg("annual.not_number_field",
                                               score_field=w['score_field'])
        for g in w["scores"]:
            if g not in p["scale"]:
                yield ".weighted.scores", msg("annual.not_regular_grade", g=g)
    if spec.period != "year":
        yield "", msg("annual.regular_linkage_reads_assessment", spec_period=spec.period)


def _needed_good(p: dict[str, Any], n: int) -> int:
    needed = p.get("min_good") or 0
    share = p.get("min_good_share")
    if share is not None:
        exact = Decimal(str(share)) * n
        by_share = math.floor(exact) + 1 if p["share_strict"] else math.ceil(exact)
        needed = max(needed, by_share)
    return needed


def _refuse(case: CaseFacts, message: str, details: dict[str, Any]) -> None:
    raise RuleViolation("regular_linkage", msg("annual.regular_linkage", case_id=case.id,
                                               message=message),
                        {"case_id": case.id, **details})


def _regular_linkage(p: dict[str, Any], batch: Batch) -> None:
    for case in batch.cases:
        if case.data.get(p["field"]) != p["value"]:
            continue
        year = _year_of(case)
        if year is None:
            continue
        grades = batch.facts.query(regular_results, case.subject_id, year, p["regular_flow"],
                                   p["regular_states"])
        n = len(grades)
        base = {"year": year, "results": n, "grades": grades}
        what = msg("annual.grade_for_year", grade=p["value"], year=year)
        if n < p["min_results"]:
            _refuse(case, msg("annual.needs_at_least_regular", what=what,
                              min_results=p['min_results'],
                              n=n), {**base, "min_results": p["min_results"]})
        good = sum(1 for g in grades if g == p["good"])
        needed = _needed_good(p, n)
        if good < needed:
            _refuse(case, msg("annual.needs_regular_results_has", what=what, needed=needed,
                              good=p['good'], n=n,
                              good2=good), {**base, "needed": needed, "good": good})
        if p.get("none_below") is not None:
            rank = {g: i for i, g in enumerate(p["scale"])}
            floor_ = rank[p["none_below"]]
            below = [g for g in grades if rank.get(g, len(rank)) > floor_]
            if below:
                _refuse(case, msg("annual.needs_no_regular_result", what=what,
                                  none_below=p['none_below'], n_below=len(below),
                                  below=list(below)),
                        {**base, "none_below": p["none_below"], "below": below})
        w = p.get("weighted")
        if w:
            own = case.data.get(w["score_field"])
            if own is None or not grades:
                _refuse(case, msg("annual.needs_weighted_score_at", what=what,
                                  min_score=w['min_score'],
                                  value=msg("annual.no_regular_results") if not grades else msg("annual.no_own_score")),
                        {**base, "min_score": w["min_score"]})
            regular = sum(w["scores"].get(g, 0.0) for g in grades) / n
            score = round(w["weight"] * regular + (1 - w["weight"]) * float(own), 2)
            if score < w["min_score"]:
                _refuse(case, msg("annual.needs_weighted_score_at_2", what=what,
                                  min_score=w['min_score'], score=score, weight=w['weight'],
                                  regular=regular, value=1 - w['weight'],
                                  score_field=w['score_field'], own=own),
                        {**base, "score": score, "min_score": w["min_score"],
                         "regular_score": regular})


register(Rule(
    name="regular_linkage",
    label="平时考核结果运用 / regular results link",
    params=RegularLinkageParams(),
    check_definition=_regular_linkage_definition,
    evaluate=_regular_linkage,
))


# --------------------------------------------------------------------------- excellent_quota


class ExcellentQuotaParams(PoolParams):
    field = mf.String(load_default=GRADE_FIELD)
    value = mf.Raw(load_default=EXCELLENT)
    # 《公务员考核规定》(2020): 优秀 within 20 % of those assessed; for a 机关 with
    # outstanding assessment work it may be raised, commonly to at most 25 %.
    max_ratio = RatioField(load_default=0.2)
    raised_ratio = mf.Float(load_default=0.25,
                            validate=validate.Range(min=0, max=1, min_inclusive=False))
    raise_units = mf.List(mf.String(validate=validate.Length(min=1, max=64)),
                          load_default=list)  # unit codes, each with its sub-units
    ceiling = mf.Float(load_default=0.25, validate=validate.Range(min=0, max=1,
                                                                  min_inclusive=False))
    pool = mf.List(mf.String(validate=validate.OneOf(POOL_KEYS)),
                   load_default=lambda: ["unit", "period"])
    # The top N contact points of the year's score sheets (成绩单) are raised even without
    # their `raised` flag; ties at the Nth place are all in.
    raise_top = mf.Integer(validate=validate.Range(min=1))


def _excellent_quota_definition(p: dict[str, Any], t: TransitionSpec, spec: FlowSpec):
    yield from _enum_problems(spec, p["field"], [p["value"]], "value")
    yield from pool_problems(p, spec)
    ratios = p["max_ratio"] if isinstance(p["max_ratio"], dict) else {"": p["max_ratio"]}
    for tier, ratio in ratios.items():
        path = f".max_ratio.{tier}" if tier else ".max_ratio"
        if ratio > p["ceiling"]:
            yield path, (msg("annual.above_ceiling_raise_ceiling_2", ratio=ratio,
                             ceiling=p['ceiling']))
        if p["raised_ratio"] < ratio:
            yield ".raised_ratio", (msg("annual.raised_ratio_below_max",
                                        raised_ratio=p['raised_ratio'], ratio=ratio))
    if p["raised_ratio"] > p["ceiling"]:
        yield ".raised_ratio", (msg("annual.above_ceiling_raise_ceiling",
                                    raised_ratio=p['raised_ratio'], ceiling=p['ceiling']))
    if (p.get("raise_top") or p["raise_units"]) and "unit" not in p["pool"]:
        yield ".pool", msg("annual.unit_ratio_raised_per")
    if p.get("raise_top") and (spec.period == "none" or "period" not in p["pool"]):
        yield ".raise_top", (msg("annual.raise_top_reads_score"))


def _excellent_quota(p: dict[str, Any], batch: Batch) -> None:
    t = batch.transition
    judge_quota(from_params("excellent_quota", t.trigger, t.dest, p), batch,
                "excellent_quota")


register(Rule(
    name="excellent_quota",
    label="优秀比例 / 优秀 quota",
    params=ExcellentQuotaParams(),
    check_definition=_excellent_quota_definition,
    evaluate=_excellent_quota,
    scope="batch",  # like `quota`: a bulk approval is judged whole, across versions
))
