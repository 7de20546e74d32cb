"""Rules of the annual appeals (复核 / 申诉) and of the withheld grade (补定等次).

- `appealable`: who may ask for 复核 or file a 申诉 against an annual result: 《公务员法》
  第九十五条 gives the right against 定期考核定为不称职 only, so by default only a case whose
  grade is 不称职 may be appealed. The grades are a parameter of the definition.
- `investigation_status`: the grade of a year is withheld (不定等次) while the person is
  under investigation (立案审查); once it is closed the grade is set afterwards (补定等次).
  `require: open` guards keeping the case open for that; `require: closed` guards the
  补定等次 itself.

Both read the case's data and the person's facts (`workflows.facts.person_facts`).
"""

from __future__ import annotations

from typing import Any

from marshmallow import fields as mf
from marshmallow import validate

from ..errors import RuleViolation
from ..facts import person_facts
from ..messages import msg
from ..rules import Batch, Rule, _Params, field_value_problems, register
from ..spec import FlowSpec, TransitionSpec

# --------------------------------------------------------------------------- appealable


class AppealableParams(_Params):
    field = mf.String(load_default="grade")
    in_ = mf.List(mf.String(), data_key="in", required=True, validate=validate.Length(min=1))
    basis = mf.String(load_default="《公务员法》第九十五条")  # named in the refusal


def _appealable_definition(p: dict[str, Any], t: TransitionSpec, spec: FlowSpec):
    yield from field_value_problems(spec, p["field"], p["in_"], "in")


def _appealable(p: dict[str, Any], batch: Batch) -> None:
    t = batch.transition
    for case in batch.cases:
        grade = case.data.get(p["field"])
        if grade in p["in_"]:
            continue
        label = batch.spec.fields[p["field"]].label.zh
        raise RuleViolation(
            "appealable",
            msg("appeals.open_only_against", case_id=case.id, t_label=t.label, t_trigger=t.trigger,
                label=label, in_=' / '.join(p['in_']), basis=p['basis'], label2=label, grade=grade),
            {"case_id": case.id, "field": p["field"], "value": grade,
             "appealable": list(p["in_"]), "basis": p["basis"]},
        )


register(Rule(
    name="appealable",
    label="可申请复核、申诉的等次 / appealable grades",
    params=AppealableParams(),
    check_definition=_appealable_definition,
    evaluate=_appealable,
))


# --------------------------------------------------------------------------- investigation


class InvestigationStatusParams(_Params):
    require = mf.String(required=True, validate=validate.OneOf(["open", "closed"]))


def _investigation_definition(p: dict[str, Any], t: TransitionSpec, spec: FlowSpec):
    return iter(())


def _investigation_status(p: dict[str, Any], batch: Batch) -> None:
    t = batch.transition
    for case in batch.cases:
        facts = batch.facts.query(person_facts, case.subject_id)
        open_ = [i for i in facts.investigations if i.closed_on is None]
        if p["require"] == "open" and not open_:
            raise RuleViolation(
                "investigation_status",
                msg("appeals.needs_open_investigation_person", case_id=case.id, t_label=t.label,
                    t_trigger=t.trigger, case_subject_id=case.subject_id),
                {"case_id": case.id, "require": "open"})
        if p["require"] == "closed" and open_:
            i = open_[0]
            raise RuleViolation(
                "investigation_status",
                msg("appeals.waits_investigation_opened_closed", case_id=case.id, t_label=t.label,
                    t_trigger=t.trigger, i_opened_on=i.opened_on.isoformat()),
                {"case_id": case.id, "require": "closed", "investigation_id": i.id,
                 "opened_on": i.opened_on.isoformat()})


register(Rule(
    name="investigation_status",
    label="立案审查状态 / investigation open or closed",
    params=InvestigationStatusParams(),
    check_definition=_investigation_definition,
    evaluate=_investigation_status,
))
