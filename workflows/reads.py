"""The read side, per viewer: one case, its history and timers, lists, the queue (待办),
counts, and the audits of history and case data. Nothing here writes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from . import provenance, queries
from .access import Viewer
from .calendar_file import deadline_uncertain
from .core import Action, Actor, CaseView
from .db import Database
from .errors import Forbidden, NotFound
from .history import verify as verify_chains
from .kernel import Kernel, _not_found
from .machine import CompiledFlow
from .messages import msg
from .models import Case, HistoryRecord, Timer
from .timers import AUTO, PENDING, SHOWN_STATUS, STALE, TIMERS, auto_step
from .versions import Versions

CASES = Case.__table__
HISTORY = HistoryRecord.__table__
# A case's timers, newest first, with the status reads show (`timers.SHOWN_STATUS`).
TIMERS_OF = (select(*(c for c in TIMERS.c if c.name != "status"), SHOWN_STATUS)
             .where(TIMERS.c.case_id == bindparam("case_id")).order_by(TIMERS.c.id.desc()))


class Reads:
    """Reads for the API, the pages and the CLI, each in one read-only unit of work."""

    def __init__(self, db: Database, versions: Versions, kernel: Kernel,
                 clock: Callable[[], dt.datetime]):
        self.db, self.versions, self.kernel, self.clock = db, versions, kernel, clock

    def get_case(self, case_id: int) -> CaseView:
        with self.db.unit_of_work(write=False) as s:
            row, _path = self.kernel.load(s, case_id)
            return self.kernel.view(row, self.versions.compiled(s, row.version_id))

    def history(self, case_id: int) -> list[dict[str, Any]]:
        with self.db.unit_of_work(write=False) as s:
            self.kernel.load(s, case_id)
            rows = s.execute(select(HistoryRecord).where(HistoryRecord.case_id == case_id)
                             .order_by(HistoryRecord.seq)).scalars()
            return [{
                "seq": r.seq, "at": r.at, "actor_id": r.actor_id, "actor_role": r.actor_role,
                "trigger": r.trigger, "from": r.from_state, "to": r.to_state, "data": r.data,
                "comment": r.comment, "hash": r.hash,
            } for r in rows]

    def actions(self, case_id: int, actor: Actor, lang: str = "zh") -> list[Action]:
        """What `actor` may do on the case now, with the fields each action asks for."""
        with self.db.unit_of_work(write=False) as s:
            row, path = self.kernel.load(s, case_id)
            return self.kernel.actions(s, self.versions.compiled(s, row.version_id), row, path,
                                       actor, lang)

    def list_cases(self, viewer: Viewer, f: queries.CaseFilter, lang: str = "zh"
                   ) -> tuple[list[queries.CaseRow], int]:
        if f.stuck is not None and not viewer.sees_all:
            raise Forbidden(msg("engine.listing_cases_by_stuck"), rule="needs_admin")
        with self.db.unit_of_work(write=False) as s:
            rows, total = queries.list_cases(s, viewer, f, self.clock(),
                                             self.versions.all_flows(s))
            for row in rows:
                self._label(s, row, lang)
            self._auto_steps(s, rows, lang)
            return rows, total

    def count_stuck(self) -> int:
        """Open cases whose current step nobody can act on, in every unit (a gauge)."""
        with self.db.unit_of_work(write=False) as s:
            return queries.count_stuck(s, self.versions.all_flows(s))

    def queue(self, viewer: Viewer, f: queries.CaseFilter, lang: str = "zh"
              ) -> tuple[list[queries.CaseRow], int]:
        """What the viewer can act on now (待办), due first, each with its actions."""
        with self.db.unit_of_work(write=False) as s:
            flows = self.versions.all_flows(s)
            rows, total = queries.queue(s, viewer, flows, f, self.clock())
            actor = Actor.person(viewer.person_id)
            for row in rows:
                self._label(s, row, lang)
                row.actions = self.kernel.actions(s, flows[row.version_id], row, row.unit_path,
                                                  actor, lang, viewer.role_units())
            self._auto_steps(s, rows, lang)
            return rows, total

    def case_for(self, viewer: Viewer, case_id: int, lang: str = "zh") -> queries.CaseRow:
        """A case the viewer may see, with what they may do on it now (`actions`)."""
        with self.db.unit_of_work(write=False) as s:
            row = queries.get_row(s, case_id, self.clock())
            if row is None or not self.kernel.may_see(s, viewer, row, row.unit_path):
                raise NotFound(_not_found(case_id, viewer))
            cf = self._label(s, row, lang)
            row.actions = self.kernel.actions(s, cf, row, row.unit_path,
                                              Actor.person(viewer.person_id), lang,
                                              viewer.role_units())
            return row

    def _label(self, s: Session, row: queries.CaseRow, lang: str) -> CompiledFlow:
        cf = self.versions.compiled(s, row.version_id)
        row.state_label = cf.spec.states[row.state].label.text(lang)
        row.deadline_uncertain = not row.closed and deadline_uncertain(self.kernel.calendar,
                                                                       row.deadline_at)
        return cf

    def _auto_steps(self, s: Session, rows: list[queries.CaseRow], lang: str) -> None:
        """`auto_at` / `auto_action` of the open rows without a deadline: their first
        pending auto timer, in one query for the page."""
        open_ = {r.id: r for r in rows if not r.closed and r.deadline_at is None}
        if not open_:
            return
        timers: dict[int, list[Any]] = {}
        for t in s.execute(select(Timer.case_id, Timer.kind, Timer.status, Timer.action,
                                  Timer.due_at)
                           .where(Timer.case_id.in_(open_), Timer.kind == AUTO,
                                  Timer.status == PENDING, ~STALE)):
            timers.setdefault(t.case_id, []).append(t)
        for case_id, waiting in timers.items():
            row = open_[case_id]
            step = auto_step(self.versions.compiled(s, row.version_id).spec, row.state,
                             waiting, lang)
            if step:
                row.auto_at, row.auto_action = step.due_at, step.action

    def history_for(self, viewer: Viewer, case_id: int) -> list[dict[str, Any]]:
        self.case_for(viewer, case_id)
        return self.history(case_id)

    def timers_for(self, viewer: Viewer, case_id: int) -> list[Any]:
        """The case's timers, newest first: what is due, what fired, what failed and why;
        those of a visit the case has left show as dropped (`timers.SHOWN_STATUS`)."""
        self.case_for(viewer, case_id)
        with self.db.unit_of_work(write=False) as s:
            return list(s.execute(TIMERS_OF, {"case_id": case_id}).all())

    def counts_by_state(self, version_id: int, viewer: Viewer | None = None
                        ) -> dict[str, int]:
        with self.db.unit_of_work(write=False) as s:
            return queries.counts_by_state(s, version_id, viewer)

    def verify_history(self) -> tuple[int, int, list[Any]]:
        """`history.verify` with each version's appended fields (see its docstring)."""
        with self.db.unit_of_work(write=False) as s:
            flows = self.versions.all_flows(s)

            def appends(version_id: int, trigger: str, source: str | None) -> tuple[str, ...]:
                cf = flows.get(version_id)
                t = cf.spec.transition(trigger, source) if cf and source else None
                return t.appends if t else ()

            return verify_chains(s, appends=appends)

    def audit_case_data(self, flow: str | None = None, batch: int = 2000
                        ) -> tuple[int, list[provenance.Finding]]:
        """(cases checked, every stored value no entitled writer wrote): start data the
        case's definition does not accept at start (or from that starter), values written
        by a transition that does not take them or by a role it does not name, values in
        no history record. Rules already ignore them (`Kernel._trusted`); this finds them."""
        with self.db.unit_of_work(write=False) as s:
            flows = self.versions.all_flows(s)
            q = select(CASES.c.id, CASES.c.flow_id, CASES.c.version_id, CASES.c.data)
            h = select(HISTORY.c.case_id, HISTORY.c.seq, HISTORY.c.trigger,
                       HISTORY.c.from_state, HISTORY.c.actor_role, HISTORY.c.data)
            if flow is not None:
                q = q.where(CASES.c.flow_id == flow)
                h = h.join(CASES, CASES.c.id == HISTORY.c.case_id).where(
                    CASES.c.flow_id == flow)
            heads = {r.id: r for r in s.execute(q)}
            found: list[provenance.Finding] = []
            records: list[Any] = []

            def close() -> None:
                head = heads.pop(records[0].case_id, None) if records else None
                if head is not None:
                    found.extend(provenance.audit(head.id, head.flow_id,
                                                  flows[head.version_id].spec,
                                                  dict(head.data), records))

            checked = len(heads)
            rows = s.execute(h.order_by(HISTORY.c.case_id, HISTORY.c.seq)
                             .execution_options(yield_per=batch))
            for rec in rows:
                if records and rec.case_id != records[0].case_id:
                    close()
                    records = []
                records.append(rec)
            close()
            for head in heads.values():  # a case without history: nothing vouches for it
                found.extend(provenance.audit(head.id, head.flow_id,
                                              flows[head.version_id].spec, dict(head.data), []))
            found.sort(key=lambda f: (f.case_id, f.field))
            return checked, found
