"""The hash-chained audit history and `civflow verify-history`."""

from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import delete, select, update

from service.cli import main
from workflows.engine import Actor
from workflows.history import verify
from workflows.models import Case, HistoryRecord

P = Actor.person


def _cases(engine, org, n=3):
    ids = []
    for i in range(1, n + 1):
        case = engine.start_case("regular-assessment", org.ids[f"s{i}"], period_key="2026-11")
        engine.fire(case.id, "submit", P(org.ids[f"s{i}"]), data={"summary": f"小结 {i}"})
        engine.fire(case.id, "evaluate", P(org.l1), data={"grade": "较好"})
        ids.append(case.id)
    return ids


def _verify(db):
    with db.unit_of_work(write=False) as s:
        return verify(s)


def test_intact_history_verifies(engine, org, regular, db, db_url):
    _cases(engine, org)
    cases, records, breaks = _verify(db)
    assert (cases, records, breaks) == (3, 9, [])
    result = CliRunner().invoke(main, ["verify-history", "--db", db_url])
    assert result.exit_code == 0, result.output
    assert "history intact: 3 cases, 9 records" in result.output


def test_altered_record_is_found(engine, org, regular, db, db_url):
    ids = _cases(engine, org)
    with db.unit_of_work() as s:  # someone edits a grade behind the engine's back
        rec = s.execute(select(HistoryRecord).where(HistoryRecord.case_id == ids[1],
                                                    HistoryRecord.seq == 3)).scalar_one()
        s.execute(update(HistoryRecord).where(HistoryRecord.id == rec.id)
                  .values(data={"grade": "好"}))
    _c, _r, breaks = _verify(db)
    assert len(breaks) == 1
    assert (breaks[0].case_id, breaks[0].seq, breaks[0].record_id) == (ids[1], 3, rec.id)
    assert "altered" in breaks[0].reason
    result = CliRunner().invoke(main, ["verify-history", "--db", db_url])
    assert result.exit_code == 1
    assert f"case {ids[1]}: record {rec.id} (seq 3)" in result.output


def test_rewritten_chain_and_removed_records_are_found(engine, org, regular, db):
    ids = _cases(engine, org)
    with db.unit_of_work() as s:
        # Remove the last record of one case: the case's head no longer matches.
        s.execute(delete(HistoryRecord).where(HistoryRecord.case_id == ids[0],
                                              HistoryRecord.seq == 3))
        # Remove a middle record of another: the sequence has a gap.
        s.execute(delete(HistoryRecord).where(HistoryRecord.case_id == ids[2],
                                              HistoryRecord.seq == 2))
    _c, _r, breaks = _verify(db)
    by_case = {b.case_id: b for b in breaks}
    assert set(by_case) == {ids[0], ids[2]}
    assert "removed or added" in by_case[ids[0]].reason
    assert by_case[ids[2]].seq == 3 and "missing" in by_case[ids[2]].reason


def test_a_recomputed_hash_still_breaks_the_chain(engine, org, regular, db):
    """Re-hashing an altered record does not help: the next record's prev_hash differs."""
    from workflows.history import hash_of

    ids = _cases(engine, org, n=1)
    with db.unit_of_work() as s:
        rec = s.execute(select(HistoryRecord).where(HistoryRecord.case_id == ids[0],
                                                    HistoryRecord.seq == 2)).scalar_one()
        rec.data = {"summary": "改过的小结"}
        rec.hash = hash_of(rec)
    _c, _r, breaks = _verify(db)
    assert [(b.case_id, b.seq) for b in breaks] == [(ids[0], 3)]
    assert "prev_hash" in breaks[0].reason
    with db.unit_of_work(write=False) as s:
        assert s.get(Case, ids[0]).history_seq == 3


def test_a_case_altered_behind_the_engines_back_is_found(engine, org, regular, db):
    ids = _cases(engine, org, n=2)
    with db.unit_of_work() as s:  # someone raises a grade in the cases table directly
        s.execute(update(Case).where(Case.id == ids[0]).values(data={"summary": "小结 1",
                                                                     "grade": "好"}))
        s.execute(update(Case).where(Case.id == ids[1]).values(state="approved"))
    _c, _r, breaks = engine.verify_history()
    by_case = {b.case_id: b.reason for b in breaks}
    assert "data differ from what its history records (grade)" in by_case[ids[0]]
    assert "in state 'approved' but its history ends in 'feedback'" in by_case[ids[1]]
