"""A flow definition's keys in words (用语), for the flow version page: who acts
(`subject` → 本人), a deadline (`working_days: 5, from: period_end` → 期满后 5 个工作日) and
the timers of a step. Every phrase is a catalogue string (zh and en); the page keeps the
definition's own key beside it in a `title` tooltip for whoever edits the YAML.
"""

from __future__ import annotations

import re
from typing import Any

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from workflows.spec import SYSTEM, DeadlineSpec, FlowSpec, TimerSpec

from .i18n import label

# The organisation's role and group codes the shipped flows name (docs/definitions.md).
ROLE_NAMES = {"committee": _l("committee members (党组)"), "leader": _l("leaders"),
              "hr-office": _l("the HR office (干部科)"),
              "complaints-office": _l("the complaints authority"),
              "dispatch-receiving": _l("the receiving side (乡镇、村、社区)")}
WEEKDAY_NAMES = {"mon": _l("Mondays"), "tue": _l("Tuesdays"), "wed": _l("Wednesdays"),
                 "thu": _l("Thursdays"), "fri": _l("Fridays"), "sat": _l("Saturdays"),
                 "sun": _l("Sundays")}
DURATION = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?"
                      r"(?:T(?:(\d+)H)?(?:(\d+)M)?)?$")


def duration_words(value: str) -> str:
    """An ISO 8601 duration in words (P5D → 5 天); one it cannot say is left as it is."""
    found = DURATION.match(value or "")
    if not found or not any(found.groups()):
        return value
    units = (lambda n: _("%(n)s year(s)", n=n), lambda n: _("%(n)s month(s)", n=n),
             lambda n: _("%(n)s week(s)", n=n), lambda n: _("%(n)s day(s)", n=n),
             lambda n: _("%(n)s hour(s)", n=n), lambda n: _("%(n)s minute(s)", n=n))
    return " ".join(say(int(n)) for say, n in zip(units, found.groups(), strict=True) if n)


def _span(working_days: int | None, duration: str | None) -> str:
    if working_days is not None:
        return _("%(n)s working day(s)", n=working_days)
    return duration_words(duration or "")


def _action(spec: FlowSpec, trigger: str | None) -> str:
    t = next((t for t in spec.transitions if t.trigger == trigger), None)
    return label(t.label, trigger) if t else (trigger or "")


def deadline_words(spec: FlowSpec, d: DeadlineSpec) -> str:
    """期满后 5 个工作日; then what the system does when it passes, if anything."""
    span = _span(d.working_days, d.duration)
    start = {"entered": _("%(span)s after the step begins", span=span),
             "period_start": _("%(span)s after the period starts", span=span),
             "period_end": _("%(span)s after the period ends", span=span),
             "quarter_end": _("%(span)s after the quarter ends", span=span)
             }.get(d.start, f"{d.start} + {span}")
    if d.escalate:
        start += _("; then by itself: %(action)s", action=_action(spec, d.escalate))
    return start


def timer_words(spec: FlowSpec, t: TimerSpec) -> str:
    """A reminder, an automatic step or a repeating reminder, in words."""
    if t.kind == "reminder":
        text = _("reminder %(span)s before the deadline", span=duration_words(t.before or ""))
    elif t.kind == "auto":
        action = _action(spec, t.fire)
        if t.at_field:
            field = spec.fields.get(t.at_field)
            text = _("on the date in %(field)s, by itself: %(action)s",
                     field=label(field.label, t.at_field) if field else t.at_field,
                     action=action)
        elif t.at in ("period_start", "period_end"):
            text = (_("when the period starts, by itself: %(action)s", action=action)
                    if t.at == "period_start" else
                    _("when the period ends, by itself: %(action)s", action=action))
        else:
            text = _("after %(span)s of silence, by itself: %(action)s",
                     span=_span(t.working_days, t.after), action=action)
    elif t.kind == "repeat":
        when = (str(WEEKDAY_NAMES.get(t.weekday, t.weekday)) if t.weekday
                else duration_words(t.every or ""))
        text = _("a reminder every %(when)s", when=f"{when} {t.time}" if t.time else when)
    else:
        return t.kind
    if t.time and t.kind != "repeat":
        text += f" ({t.time})"
    if t.notify:
        text += _(" (to %(roles)s)", roles=", ".join(role_words(spec, r) for r in t.notify))
    return text


def role_words(spec: FlowSpec, name: str) -> str:
    """Who a flow role is: 本人, the unit's leader, committee members, a group, …"""
    if name == SYSTEM:
        return _("System")
    role = spec.roles.get(name)
    if role is None:
        return name
    if role.resolve == "subject":
        return _("the person assessed")
    if role.resolve == "leader":
        return _("the unit's leader")
    if role.resolve == "evaluator":
        return _("the evaluator (by the hierarchy)")
    if role.resolve == "unit_role":
        found = ROLE_NAMES.get(role.role or "")
        return str(found) if found else _("holders of role %(role)s", role=role.role)
    if role.resolve == "group":
        found = ROLE_NAMES.get(role.group or "")
        return str(found) if found else _("group %(group)s", group=role.group)
    return name


def role_key(spec: FlowSpec, name: str) -> str:
    """The definition's own words for a role, for the tooltip: `committee: unit_role
    committee`."""
    role = spec.roles.get(name)
    if role is None:
        return name
    what = role.role or role.group or ""
    return f"{name}: {role.resolve}{' ' + what if what else ''}"


def who(spec: FlowSpec, names: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
    """Roles as the page shows them: words, with the key for the tooltip."""
    return [{"text": role_words(spec, n), "key": role_key(spec, n)} for n in names]
