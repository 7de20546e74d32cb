"""Migrating running cases to a newer version of their flow (迁移, workflows/migrate.py):
the preview, the run in batches, the history record, timers, provenance, resuming."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select, update

from workflows import migrate
from workflows.access import load_viewer
from workflows.engine import Actor
from workflows.errors import Forbidden, NotFound, NotPublished
from workflows.models import Case, HistoryRecord, MigrationRun
from workflows.reads import TIMERS_OF
from workflows.spec import load_definition

P = Actor.person
FLOW = "mig-flow"
V1 = """\
flow: mig-flow
title: 迁移测试
fields:
  summary: {type: text, label: 小结}
  notes: {type: list, item: {type: text}, label: 记录}
  extra: {type: text, label: 补充}
  old_note: {type: text, label: 旧字段}
  verdict: {type: text, label: 结论}
states:
  - name: draft
    label: 草稿
    actor: subject
    deadline: {working_days: 5}
    timers:
      - {kind: reminder, before: P1D}
  - {name: review, label: 审核, actor: leader, deadline: {working_days: 3}}
  - {name: done, label: 完成, final: true}
transitions:
  - {trigger: note, from: draft, to: draft, by: subject, requires: [notes], appends: [notes]}
  - {trigger: submit, from: draft, to: review, by: subject, requires: [summary],
     accepts: [extra, old_note]}
  - {trigger: approve, from: review, to: done, by: leader, accepts: [verdict]}
"""
# Version 2: the draft gets 10 working days, 审核 (review) becomes 复核 (check), the field
# old_note is gone, and submit no longer takes `extra` (approve does).
V2 = (V1.replace("deadline: {working_days: 5}", "deadline: {working_days: 10}")
      .replace("{name: review, label: 审核, actor: leader, deadline: {working_days: 3}}",
               "{name: check, label: 复核, actor: leader, deadline: {working_days: 4}}")
      .replace("  old_note: {type: text, label: 旧字段}\n", "")
      .replace("accepts: [extra, old_note]}", "}")
      .replace("to: review", "to: check").replace("from: review", "from: check")
      .replace("accepts: [verdict]", "accepts: [verdict, extra]"))


def _publish(engine, source: str, name: str):
    return engine.publish(source, name)


@pytest.fixture
def flows(engine, org):
    v1 = _publish(engine, V1, "mig-v1.yaml")
    return engine, org, v1


def _v2(engine):
    return _publish(engine, V2, "mig-v2.yaml")


def _owner(engine, org):
    from workflows.models import Person, Unit
    from workflows.org import assign_role

    with engine.db.unit_of_work() as s:
        assign_role(s, s.get(Person, org.c2), "process_owner", s.get(Unit, org.units["ORG"]))
    with engine.db.unit_of_work(write=False) as s:
        return load_viewer(s, org.c2)


def _records(engine, case_id: int) -> list[HistoryRecord]:
    with engine.db.unit_of_work(write=False) as s:
        return list(s.execute(select(HistoryRecord).where(HistoryRecord.case_id == case_id)
                              .order_by(HistoryRecord.seq)).scalars())


def _timers(engine, case_id: int) -> list[Any]:
    """The case's timers, oldest first, with the status reads show (`SHOWN_STATUS`)."""
    with engine.db.unit_of_work(write=False) as s:
        return list(s.execute(TIMERS_OF, {"case_id": case_id}).all())[::-1]


def _in_review(engine, org, who: str, **data):
    c = engine.start_case(FLOW, getattr(org, who))
    engine.fire(c.id, "submit", P(getattr(org, who)), data={"summary": f"{who}的小结", **data})
    return c.id


def test_v2_is_a_valid_definition():
    spec = load_definition(V2, "mig-v2.yaml")
    assert list(spec.states) == ["draft", "check", "done"]
    assert "old_note" not in spec.fields


def test_preview_same_name_default_and_unmapped_state_refused(flows):
    engine, org, _v1 = flows
    a = engine.start_case(FLOW, org.s1).id
    b = _in_review(engine, org, "s2")
    _v2(engine)
    preview = migrate.plan(engine, FLOW, 1, 2)
    assert preview.mapping == {"draft": "draft", "review": "", "done": "done"}
    by_id = {c.case_id: c for c in preview.cases}
    pa, pb = by_id[a], by_id[b]
    assert (pa.from_state, pa.to_state, pa.refusal) == ("draft", "draft", None)
    assert pa.subject_name == "测试s1"
    # The draft's deadline was 5 working days after entering; it is now 10.
    (old_deadline,) = [t for t in pa.disarm if t.kind == "deadline"]
    (new_deadline,) = [t for t in pa.arm if t.kind == "deadline"]
    assert new_deadline.due_at > old_deadline.due_at
    assert pa.deadline_at == new_deadline.due_at
    assert pb.refusal and "'review' is not in version 2 and is not mapped" in pb.refusal
    assert (preview.moving, preview.refused) == (1, 1)
    # A preview writes nothing.
    assert engine.get_case(a).version_id == engine.get_case(b).version_id
    assert engine.get_case(a).flow_version == 1


def test_run_moves_mapped_cases_records_history_and_replans_timers(flows):
    engine, org, _v1 = flows
    a = engine.start_case(FLOW, org.s1).id
    b = _in_review(engine, org, "s2", old_note="旧", extra="补")
    v2 = _v2(engine)
    owner = _owner(engine, org)
    before_b = engine.get_case(b)
    preview = migrate.plan(engine, FLOW, 1, 2, {"review": "check"}, viewer=owner)
    pb = next(c for c in preview.cases if c.case_id == b)
    assert (pb.to_state, pb.fields_not_declared) == ("check", ("old_note",))
    assert [t.kind for t in pb.disarm] == ["deadline"]
    assert [t.kind for t in pb.arm] == ["deadline"]

    result = migrate.run(engine, FLOW, 1, 2, {"review": "check"}, viewer=owner)
    assert (result.moved, result.refused, result.skipped, result.status) == (2, 0, 0, "done")
    case_b = engine.get_case(b)
    assert (case_b.flow_version, case_b.version_id, case_b.state) == (2, v2.version_id, "check")
    assert case_b.version == before_b.version + 1
    # Data is not lost: old_note stays in the case (the preview listed it).
    assert case_b.data == {"summary": "s2的小结", "old_note": "旧", "extra": "补"}
    rec = _records(engine, b)[-1]
    assert (rec.trigger, rec.from_state, rec.to_state) == ("migrate", "review", "check")
    assert (rec.actor_id, rec.actor_role) == (org.c2, "process_owner")
    assert "v1 → v2" in rec.comment and f"run {result.run_id}" in rec.comment
    assert rec.data == {"summary": "s2的小结", "extra": "补"}  # trusted and declared
    # Timers: the old visit's dropped, the new state's armed for the migrate record's visit.
    timers = _timers(engine, b)
    assert {t.status for t in timers if t.state_visit == rec.seq - 1} == {"dropped"}
    new = [t for t in timers if t.state_visit == rec.seq]
    assert [(t.kind, t.status) for t in new] == [("deadline", "pending")]
    assert case_b.deadline_at == new[0].due_at
    with engine.db.unit_of_work(write=False) as s:
        row = s.get(Case, b)
        assert row.state_visit == rec.seq and row.history_hash == rec.hash
    # The case in draft keeps its state and when it entered it; its deadline is replanned.
    case_a = engine.get_case(a)
    assert (case_a.state, case_a.flow_version) == ("draft", 2)
    # The hash chain covers the migrate record and the cases still add up to their history.
    _cases, _records_n, breaks = engine.verify_history()
    assert breaks == []
    # The diagram's counts follow the version.
    assert engine.counts_by_state(v2.version_id) == {"draft": 1, "check": 1}
    assert engine.counts_by_state(_v1.version_id) == {}
    # The moved case goes on under version 2.
    done = engine.fire(b, "approve", P(org.l1), data={"verdict": "同意"})
    assert done.to_state == "done"
    assert engine.verify_history()[2] == []
    with engine.db.unit_of_work(write=False) as s:
        (run,) = s.execute(select(MigrationRun)).scalars()
        assert (run.moved, run.refused, run.status, run.by) == (2, 0, "done", org.c2)
        assert run.mapping == {"review": "check"}


def test_provenance_after_migration_uses_each_records_own_version(flows):
    engine, org, _v1 = flows
    b = _in_review(engine, org, "s2", extra="补", old_note="旧")
    _v2(engine)
    migrate.run(engine, FLOW, 1, 2, {"review": "check"})
    engine.fire(b, "approve", P(org.l1), data={"verdict": "同意"})
    with engine.db.unit_of_work(write=False) as s:
        row = s.execute(select(Case.__table__).where(Case.id == b)).first()
        trusted = engine.kernel._trusted(s.connection(), [row])[b]
    # `extra` was written by submit, which took it in version 1 (not in version 2): trusted.
    # `verdict` was written after the move, by a transition of version 2: trusted.
    # `old_note` is not a field of version 2: kept, but no rule reads it.
    assert trusted == {"summary": "s2的小结", "extra": "补", "verdict": "同意"}
    _checked, found = engine.audit_case_data(FLOW)
    assert [(f.case_id, f.field) for f in found] == [(b, "old_note")]
    assert "not carried by the move" in found[0].reason


def test_tampered_case_is_refused(flows):
    """A value changed behind the engine's back: the case's history no longer adds up to
    its data, so the case is not moved (and the value would not be carried anyway)."""
    engine, org, _v1 = flows
    b = _in_review(engine, org, "s2")
    with engine.db.unit_of_work() as s:
        s.execute(update(Case).where(Case.id == b).values(
            data={"summary": "改过的小结"}))
    _v2(engine)
    (p,) = migrate.plan(engine, FLOW, 1, 2, {"review": "check"}).cases
    assert p.refusal and "summary" in p.refusal and "verify-history" in p.refusal
    result = migrate.run(engine, FLOW, 1, 2, {"review": "check"})
    assert (result.moved, result.refused) == (0, 1)
    assert result.refusals[b] == p.refusal
    assert engine.get_case(b).flow_version == 1


def test_value_untrusted_under_the_old_version_stays_untrusted(flows):
    """Start data from an old installation that version 1 does not accept at start, on a
    case whose chain is intact. Version 2 accepts it at start from the system: judged
    against version 2 it would look trusted; judged against its own version it is not, so
    the move does not carry it and it stays untrusted."""
    from workflows.history import GENESIS, record_hash

    engine, org, _v1 = flows
    a = engine.start_case(FLOW, org.s1).id
    with engine.db.unit_of_work() as s:
        rec = s.execute(select(HistoryRecord).where(HistoryRecord.case_id == a)).scalar_one()
        rec.data = {"extra": "旧系统预填"}
        rec.hash = record_hash(case_id=a, seq=1, at=rec.at, actor_id=rec.actor_id,
                               actor_role=rec.actor_role, trigger=rec.trigger,
                               from_state=None, to_state=rec.to_state, data=rec.data,
                               comment=rec.comment, prev_hash=GENESIS)
        s.execute(update(Case).where(Case.id == a).values(data={"extra": "旧系统预填"},
                                                          history_hash=rec.hash))
    assert engine.verify_history()[2] == []
    assert rec.actor_role == "system"
    v2 = V2.replace("states:\n", "start: {accepts: [extra], by: [system]}\nstates:\n", 1)
    engine.publish(v2, "mig-v2.yaml")
    (p,) = migrate.plan(engine, FLOW, 1, 2).cases
    assert p.refusal is None and p.carried == {}
    migrate.run(engine, FLOW, 1, 2)
    assert engine.verify_history()[2] == []
    with engine.db.unit_of_work(write=False) as s:
        row = s.execute(select(Case.__table__).where(Case.id == a)).first()
        assert engine.kernel._trusted(s.connection(), [row])[a] == {}
    _checked, found = engine.audit_case_data(FLOW)
    assert [(f.case_id, f.field) for f in found] == [(a, "extra")]


def test_appended_list_is_carried_and_verifies(flows):
    engine, org, _v1 = flows
    a = engine.start_case(FLOW, org.s1).id
    for n in ("一", "二"):
        engine.fire(a, "note", P(org.s1), data={"notes": [n]})
    _v2(engine)
    migrate.run(engine, FLOW, 1, 2)
    engine.fire(a, "note", P(org.s1), data={"notes": ["三"]})
    assert engine.get_case(a).data == {"notes": ["一", "二", "三"]}
    assert engine.verify_history()[2] == []
    with engine.db.unit_of_work(write=False) as s:
        row = s.execute(select(Case.__table__).where(Case.id == a)).first()
        assert engine.kernel._trusted(s.connection(), [row])[a] == {"notes": ["一", "二", "三"]}


def test_claimed_case_is_refused_with_reason(flows):
    engine, org, _v1 = flows
    b = _in_review(engine, org, "s2")
    engine.claim(b, P(org.l1))
    _v2(engine)
    (p,) = migrate.plan(engine, FLOW, 1, 2, {"review": "check"}).cases
    assert p.refusal and "claimed" in p.refusal and str(org.l1) in p.refusal


def test_bad_requests_are_refused_and_change_nothing(flows):
    engine, org, _v1 = flows
    a = engine.start_case(FLOW, org.s1).id
    with pytest.raises(NotFound, match="no version 2"):
        migrate.plan(engine, FLOW, 1, 2)
    engine.upload(V2, "mig-v2.yaml")  # a draft
    with pytest.raises(NotPublished):
        migrate.run(engine, FLOW, 1, 2)
    engine.publish_version(FLOW, 2)
    with pytest.raises(migrate.MigrationInvalid) as e:
        migrate.run(engine, FLOW, 2, 1)
    assert "not newer" in str(e.value)
    with pytest.raises(migrate.MigrationInvalid) as e:
        migrate.run(engine, FLOW, 1, 1)
    with pytest.raises(migrate.MigrationInvalid) as e:
        migrate.run(engine, FLOW, 1, 2, {"nope": "draft", "review": "gone", "draft": "done"})
    problems = e.value.errors["mapping"]
    assert any("'nope' is not a state of version 1" in m for m in problems)
    assert any("'gone' is not a state of version 2" in m for m in problems)
    assert any("'done' is a final state" in m for m in problems)
    with pytest.raises(NotFound):
        migrate.plan(engine, "other-flow", 1, 2)
    with engine.db.unit_of_work(write=False) as s:
        staff = load_viewer(s, org.s1)
    with pytest.raises(Forbidden):
        migrate.run(engine, FLOW, 1, 2, viewer=staff)
    with pytest.raises(migrate.MigrationInvalid):
        migrate.parse_mapping(["review"])
    assert migrate.parse_mapping(["review=check", " "]) == {"review": "check"}
    case = engine.get_case(a)
    assert (case.flow_version, case.version) == (1, 1)
    with engine.db.unit_of_work(write=False) as s:
        assert s.execute(select(func.count()).select_from(MigrationRun)).scalar() == 0


def test_interrupted_run_resumes_without_double_records(flows, monkeypatch):
    engine, org, _v1 = flows
    ids = [engine.start_case(FLOW, getattr(org, f"s{i}")).id for i in range(1, 6)]
    _v2(engine)
    real, calls = migrate._write, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the database went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(migrate, "_write", failing)
    with pytest.raises(RuntimeError):
        migrate.run(engine, FLOW, 1, 2, batch=2)
    assert [engine.get_case(i).flow_version for i in ids] == [2, 2, 1, 1, 1]
    with engine.db.unit_of_work(write=False) as s:
        (run,) = s.execute(select(MigrationRun)).scalars()
        assert (run.status, run.moved) == ("running", 2)
    monkeypatch.setattr(migrate, "_write", real)
    result = migrate.run(engine, FLOW, 1, 2, batch=2)
    assert result.resumed and result.run_id == run.id
    assert (result.moved, result.status) == (3, "done")
    for i in ids:
        assert engine.get_case(i).flow_version == 2
        assert [r.trigger for r in _records(engine, i)] == ["start", "migrate"]
    with engine.db.unit_of_work(write=False) as s:
        (run,) = s.execute(select(MigrationRun)).scalars()
        assert (run.status, run.moved, run.refused) == ("done", 5, 0)
    assert engine.verify_history()[2] == []
    # Running it once more finds nothing to move and writes nothing.
    again = migrate.run(engine, FLOW, 1, 2)
    assert (again.moved, again.refused, again.resumed) == (0, 0, False)
    assert all(len(_records(engine, i)) == 2 for i in ids)


def test_run_stopped_after_one_batch_is_resumed(flows):
    engine, org, _v1 = flows
    ids = [engine.start_case(FLOW, getattr(org, f"s{i}")).id for i in range(1, 4)]
    _v2(engine)
    seen = []
    first = migrate.run(engine, FLOW, 1, 2, batch=2, max_batches=1,
                        progress=lambda r: seen.append(r.moved))
    assert (first.moved, first.status, seen) == (2, "running", [2])
    rest = migrate.run(engine, FLOW, 1, 2, batch=2)
    assert rest.resumed and (rest.moved, rest.status) == (1, "done")
    assert [engine.get_case(i).flow_version for i in ids] == [2, 2, 2]


def test_closed_cases_stay_on_their_version(flows):
    engine, org, _v1 = flows
    b = _in_review(engine, org, "s2")
    engine.fire(b, "approve", P(org.l1))
    _v2(engine)
    assert migrate.plan(engine, FLOW, 1, 2).cases == []
    assert migrate.run(engine, FLOW, 1, 2).moved == 0
    assert engine.get_case(b).flow_version == 1


def test_migrate_is_a_reserved_trigger():
    from workflows.errors import DefinitionInvalid

    with pytest.raises(DefinitionInvalid, match="reserved"):
        load_definition(V1.replace("trigger: note", "trigger: migrate"), "bad.yaml")


# --------------------------------------------------------------------------- the CLI


def _cli(*args):
    from click.testing import CliRunner

    from service.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_dry_run_prints_the_preview_and_changes_nothing(flows, db_url):
    engine, org, _v1 = flows
    a = engine.start_case(FLOW, org.s1).id
    b = _in_review(engine, org, "s2", old_note="旧")
    _v2(engine)
    res = _cli("migrate", FLOW, "--from", 1, "--to", 2, "--dry-run", "--db", db_url)
    assert res.exit_code == 0, res.output
    assert "mig-flow v1 → v2: 2 open case(s), 1 would move, 1 cannot" in res.output
    assert "removed and not mapped: review" in res.output
    assert f"case {a} 测试s1: draft → draft; timers -reminder" in res.output
    assert "+deadline" in res.output
    assert f"case {b} 测试s2: review — cannot move: state 'review' is not in version 2" \
        in res.output
    res = _cli("migrate", FLOW, "--from", 1, "--to", 2, "--map", "review=check",
               "--dry-run", "--db", db_url)
    assert f"case {b} 测试s2: review → check; timers -deadline" in res.output
    assert "kept, not in v2: old_note" in res.output
    assert engine.get_case(a).flow_version == engine.get_case(b).flow_version == 1


def test_cli_migrates_in_batches_as_a_person(flows, db_url):
    engine, org, _v1 = flows
    ids = [engine.start_case(FLOW, getattr(org, f"s{i}")).id for i in range(1, 4)]
    _v2(engine)
    res = _cli("migrate", FLOW, "--from", 1, "--to", 2, "--batch", 2, "--as", "S1",
               "--db", db_url)
    assert res.exit_code == 1  # s1 is neither process owner nor admin
    assert "needs_process_owner" in res.output
    _owner(engine, org)
    res = _cli("migrate", FLOW, "--from", 1, "--to", 2, "--batch", 2, "--as", "C2",
               "--db", db_url)
    assert res.exit_code == 0, res.output
    assert "… 2 moved, 0 refused, 0 skipped" in res.output
    assert "3 moved, 0 refused, 0 already moved; done" in res.output
    for i in ids:
        rec = _records(engine, i)[-1]
        assert (rec.trigger, rec.actor_id, rec.actor_role) == ("migrate", org.c2,
                                                               "process_owner")
    res = _cli("verify-history", "--db", db_url)
    assert res.exit_code == 0 and "history intact: 3 cases, 6 records" in res.output
    res = _cli("migrate", FLOW, "--from", 1, "--to", 2, "--db", db_url)  # again: nothing
    assert "0 open case(s)" in res.output and "0 moved" in res.output


def test_cli_bad_input(flows, db_url):
    engine, org, _v1 = flows
    _v2(engine)
    res = _cli("migrate", FLOW, "--from", 1, "--to", 2, "--map", "review", "--db", db_url)
    assert res.exit_code == 1 and "'review' is not old=new" in res.output
    res = _cli("migrate", FLOW, "--from", 2, "--to", 1, "--db", db_url)
    assert res.exit_code == 1 and "not newer" in res.output
    res = _cli("migrate", FLOW, "--from", 1, "--to", 9, "--db", db_url)
    assert res.exit_code == 1 and "no version 9" in res.output


def test_an_interrupted_run_run_again_with_another_mapping_is_superseded(flows):
    engine, org, _v1 = flows
    for i in range(1, 4):
        engine.start_case(FLOW, getattr(org, f"s{i}"))
    _in_review(engine, org, "s4")
    _v2(engine)
    first = migrate.run(engine, FLOW, 1, 2, batch=1, max_batches=1)
    second = migrate.run(engine, FLOW, 1, 2, {"review": "check"})
    assert not second.resumed and second.run_id != first.run_id
    assert (second.moved, second.refused, second.status) == (3, 0, "done")
    with engine.db.unit_of_work(write=False) as s:
        statuses = dict(s.execute(select(MigrationRun.id, MigrationRun.status)).all())
    assert statuses == {first.run_id: "superseded", second.run_id: "done"}
