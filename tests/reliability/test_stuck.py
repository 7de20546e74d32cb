"""A case nobody can act on (issue 11, item 10): the next-actor check, attacked.

1. Moves racing a role removal: the subjects of SEC1 submit their summaries (into 领导评鉴,
   which only their section leader can act at, in a version of the regular flow without
   the fallback) while an admin removes that leader's role, all released by one barrier.
   The check is a read, not a lock: a submission may pass it just before the removal
   commits. Whatever the interleaving: no 500 and no exception but the engine's refusals
   (409 `no_actor` for a move that came after the removal); each case is either still in
   个人小结, or in 领导评鉴 — and then, with nobody to act, listed by
   `GET /api/v1/cases?stuck=true` and counted by `civflow_cases_stuck`: nothing sits stuck
   unseen.
2. Random organisation changes between random moves (seeded): after every round the stuck
   listing is exactly the open cases on which no person of the organisation has an action
   (the engine's `actions`, asked person by person) — the listing's SQL and the engine's
   role resolution are one source of truth.
"""

from __future__ import annotations

import random
import re
import threading

import pytest
from sqlalchemy import delete, select

from service.app import create_app
from workflows.access import load_viewer
from workflows.db import Database
from workflows.engine import Actor, Engine
from workflows.errors import CivflowError
from workflows.models import Person, RoleAssignment
from workflows.queries import CaseFilter

from ..conftest import REGULAR
from .conftest import heavy

pytestmark = pytest.mark.reliability
P = Actor.person
FLOW = "regular-assessment"
# The regular flow without its fallback: the section leader is the staff's only evaluator.
NO_FALLBACK = REGULAR.read_text(encoding="utf-8").replace(
    "    fallback: {escalate: unit_above}\n", "")
ROUNDS = heavy(30, 120)


def _stuck_ids(engine: Engine, admin_id: int) -> set[int]:
    with engine.db.unit_of_work(write=False) as s:
        admin = load_viewer(s, admin_id)
    rows, total = engine.list_cases(admin, CaseFilter(stuck=True, per_page=200))
    assert total == len(rows)
    return {r.id for r in rows}


def _nobody_acts(engine: Engine, case_ids: list[int], people: list[int]) -> set[int]:
    """Ground truth: the open cases on which no person has an action."""
    out = set()
    for cid in case_ids:
        if engine.get_case(cid).final:
            continue
        if not any(engine.actions(cid, P(p)) for p in people):
            out.add(cid)
    return out


def test_moves_racing_a_role_removal_leave_nothing_stuck_unseen(api):
    assert REGULAR.read_text(encoding="utf-8") != NO_FALLBACK
    org = api.org
    engine = Engine(Database(api.db.url, pool_size=12, max_overflow=4))
    engine.publish(NO_FALLBACK, "regular-assessment.yaml")
    names = {org.ids[f"s{i}"]: f"s{i}" for i in range(1, 6)}
    staff = list(names)
    cases = {p: engine.start_case(FLOW, p, period_key="2026-11").id for p in staff}
    app = create_app(engine.db.url, config={"TESTING": True, "SECRET_KEY": "test"},
                     engine=engine)
    barrier = threading.Barrier(len(staff) + 1)
    outcomes: dict[int, tuple[int, dict]] = {}
    errors: list[BaseException] = []

    def submit(person: int) -> None:
        client = app.test_client()
        headers = api.headers(names[person], **{"If-Match": '"1"'})
        try:
            barrier.wait()
            r = client.post(f"/api/v1/cases/{cases[person]}/actions/submit",
                            headers=headers, json={"data": {"summary": "小结"}})
            outcomes[person] = (r.status_code, r.json)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def remove_the_leader() -> None:
        try:
            barrier.wait()
            with engine.db.unit_of_work() as s:
                s.execute(delete(RoleAssignment).where(
                    RoleAssignment.person_id == org.l1, RoleAssignment.role == "leader"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(p,)) for p in staff]
    threads.append(threading.Thread(target=remove_the_leader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for person, (status, body) in outcomes.items():
        assert status in (200, 409), (person, status, body)
        if status == 409:
            assert body["code"] == "no_actor" and body["state"] == "evaluation", body
    moved = {cases[p] for p, (status, _b) in outcomes.items() if status == 200}
    for p in staff:
        assert engine.get_case(cases[p]).state == ("evaluation" if cases[p] in moved
                                                   else "summary")
    # Every case that got through is now stuck — and seen: listed and counted.
    assert _stuck_ids(engine, org.ids["admin"]) == moved
    assert engine.count_stuck() == len(moved)
    r = app.test_client().get("/metrics", headers=api.headers("admin"))
    (value,) = re.findall(r"^civflow_cases_stuck (\S+)$", r.get_data(as_text=True), re.M)
    assert float(value) == len(moved)
    engine.db.dispose()


def test_the_stuck_listing_is_the_engine_s_truth_under_random_changes(api, engine):
    org = api.org
    engine.publish(NO_FALLBACK, "regular-assessment.yaml")
    rng = random.Random(20261204)
    with engine.db.unit_of_work(write=False) as s:
        people = list(s.execute(select(Person.id).order_by(Person.id)).scalars())
        units = [org.units[u] for u in ("ORG", "SEC1", "SEC2")]
    subjects = [org.ids[c] for c in ("s1", "s2", "s3", "t1", "t2", "d1", "c1", "c2")]
    case_ids = [engine.start_case(FLOW, p, period_key="2026-11").id for p in subjects]
    refused = 0
    ever_stuck: set[int] = set()
    for _round in range(ROUNDS):
        # The organisation changes: a leader or committee assignment goes, or one comes.
        with engine.db.unit_of_work() as s:
            held = s.execute(select(RoleAssignment).where(
                RoleAssignment.role.in_(["leader", "committee"]))
                .order_by(RoleAssignment.id)).scalars().all()
            if held and rng.random() < 0.7:
                s.delete(rng.choice(held))
            else:
                role, person, unit = (rng.choice(["leader", "committee"]),
                                      rng.choice(people), rng.choice(units))
                if not any((h.person_id, h.role, h.unit_id) == (person, role, unit)
                           for h in held):
                    s.add(RoleAssignment(person_id=person, role=role, unit_id=unit))
        # People act: whoever may, on whatever they may (refusals are fine, 500s are not).
        for cid in rng.sample(case_ids, k=4):
            for p in rng.sample(people, k=len(people)):
                actions = engine.actions(cid, P(p))
                if not actions:
                    continue
                a = rng.choice(actions)
                data = {"summary": "小结"} if a.trigger == "submit" else (
                    {"grade": "较好"} if a.trigger == "evaluate" else (
                        {"weekly_records": [{"week": "W1", "content": "x"}]}
                        if a.trigger == "record_week" else (
                            {"objection_reason": "有异议"} if a.trigger == "object" else {})))
                try:
                    engine.fire(cid, a.trigger, P(p), data=data, comment="理由")
                except CivflowError as exc:
                    refused += exc.code == "no_actor"
                break
        truth = _nobody_acts(engine, case_ids, people)
        assert _stuck_ids(engine, org.ids["admin"]) == truth
        assert engine.count_stuck() == len(truth)
        ever_stuck |= truth
    # The rounds did make stuck cases (the comparison was not between two empty sets).
    assert ever_stuck, "no round left a case stuck: change the seed"
