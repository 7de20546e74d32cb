"""Effects that write a flow's result back into person facts (结果运用).

A closed flow's result is what the other flows' rules read: the approved annual grade is
the `annual_results` row that promotion eligibility counts; a filed promotion is the new
row of the rank history that the next promotion's years start from. Without these, an
admin would type each result in again.

- `record_annual_result` (年度考核结果记入): the grade of the case's year, source `flow`.
  On the approval (审定) and again when a review (复核) or complaint (申诉) changes it.
- `record_rank` (职级晋升备案): the target rank, held from a date field of the case (the
  filing date) or else the engine's day; the rank held before ends that day.

Both run in the action's transaction (`rules.run_effects`), so the fact and the move
commit together, and both leave a `fact_audit` record (action `flow`) naming the case.
"""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from marshmallow import fields as mf

from ..facts import record_annual_result, record_rank
from ..messages import msg
from ..models import FACT_GRADES
from ..rules import Batch, Rule, _Params, register_effect
from ..spec import FlowSpec, TransitionSpec

LOCAL = ZoneInfo("Asia/Shanghai")


def _note(batch: Batch, case_id: int) -> str:
    return f"{batch.spec.flow} case {case_id} ({batch.transition.trigger})"


def _local_day(batch: Batch) -> dt.date:
    now = batch.now or dt.datetime.now(dt.UTC)
    return now.astimezone(LOCAL).date()


def _field_problems(spec: FlowSpec, t: TransitionSpec, name: str, types: tuple[str, ...],
                    key: str):
    f = spec.fields.get(name)
    if f is None:
        yield f".{key}", msg("writeback.unknown_field_declare_under", name=name)
    elif f.type not in types:
        yield f".{key}", msg("writeback.field_effect_needs", name=name, f_type=f.type,
                             types=' or '.join(types))


# --------------------------------------------------------------------------- annual result


class AnnualResultParams(_Params):
    field = mf.String(load_default="grade")


def _annual_definition(p: dict[str, Any], t: TransitionSpec, spec: FlowSpec):
    if spec.period != "year":
        yield "", (msg("writeback.record_annual_result_needs", spec_period=spec.period))
    yield from _field_problems(spec, t, p["field"], ("enum", "text"), "field")
    f = spec.fields.get(p["field"])
    if f is not None and f.type == "enum":
        unknown = [v for v in f.values if v not in FACT_GRADES]
        if unknown:
            yield ".field", (msg("writeback.values_field_are_not", unknown=list(unknown),
                                 field=p['field'], FACT_GRADES=list(FACT_GRADES)))


def _record_annual(p: dict[str, Any], batch: Batch) -> None:
    for case in batch.cases:
        grade = case.data.get(p["field"])
        if not grade or not case.period_key:
            continue  # nothing decided yet: nothing to record
        batch.facts.query(partial(record_annual_result, note=_note(batch, case.id),
                                  by=batch.actor_id),
                          case.subject_id, int(case.period_key[:4]), grade)


register_effect(Rule(
    name="record_annual_result",
    label="年度考核结果记入 / record the annual grade",
    params=AnnualResultParams(),
    check_definition=_annual_definition,
    evaluate=_record_annual,
))


# --------------------------------------------------------------------------- rank


class RankParams(_Params):
    field = mf.String(load_default="target_rank")
    date_field = mf.String(load_default=None)


def _rank_definition(p: dict[str, Any], t: TransitionSpec, spec: FlowSpec):
    yield from _field_problems(spec, t, p["field"], ("enum", "text"), "field")
    if p["date_field"] is not None:
        yield from _field_problems(spec, t, p["date_field"], ("date",), "date_field")


def _record_rank(p: dict[str, Any], batch: Batch) -> None:
    for case in batch.cases:
        rank = case.data.get(p["field"])
        if not rank:
            continue
        since = case.data.get(p["date_field"]) if p["date_field"] else None
        if isinstance(since, str):
            since = dt.date.fromisoformat(since)
        batch.facts.query(partial(record_rank, note=_note(batch, case.id), by=batch.actor_id),
                          case.subject_id, rank, since or _local_day(batch))


register_effect(Rule(
    name="record_rank",
    label="职级晋升备案记入 / record the new rank",
    params=RankParams(),
    check_definition=_rank_definition,
    evaluate=_record_rank,
))
