"""Many clients acting on one case at once (issue 7, item 2: 20 threads on one case).

1. N threads (20; 60 with CIVFLOW_HEAVY) send the same action with the same If-Match over
   HTTP (the Flask app, on PostgreSQL) released by one `threading.Barrier`: exactly one gets
   200, every other one 409 with the current version in the body, the history holds one
   record of it, and `civflow verify-history` is clean. Two ways of racing:
   `arrival` — the requests are only released together; `in-transaction` — a barrier in
   the engine's clock (called after the checks, just before the versioned UPDATE) tries to
   hold every request until all have read the case at the same version. None but the first
   gets there: the case is read FOR UPDATE, so the others wait on its row lock at the read,
   then find version 2 and are refused (409) before any write — exactly one UPDATE reaches
   the database, and the barrier times out.
2. N threads each fire a *different* step on one case with no If-Match — the engine's
   own path (`Engine.fire` without an expected version, as the scheduler fires) and the
   bulk endpoint (which takes none) — each retrying until its step went through once or
   the attempts run out. Whatever interleaving happens: no 500 and no exception other
   than the engine's refusals; every accepted step is in the history exactly once; the
   history is one unbroken chain whose states follow each other; nothing appended by a
   step is lost (the weekly records of the case are exactly those of its history).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import event

from service.app import create_app
from workflows.db import Database
from workflows.engine import Actor, Engine, utcnow
from workflows.errors import CivflowError

from .conftest import assert_history_intact, heavy

pytestmark = pytest.mark.reliability
THREADS = heavy(20, 60)
P = Actor.person


def _app(api, clock=None):
    """The API on its own engine, with a pool big enough for every thread at once."""
    db = Database(api.db.url, pool_size=THREADS + 2, max_overflow=THREADS)
    engine = Engine(db, clock=clock) if clock else Engine(db)
    app = create_app(db.url, config={"TESTING": True, "SECRET_KEY": "test"}, engine=engine)
    return app, db


def _count_case_updates(db: Database) -> Counter:
    """Counts the versioned UPDATEs of `cases` sent to the database (`updates["n"]`)."""
    updates: Counter = Counter()

    @event.listens_for(db.engine, "before_cursor_execute")
    def _seen(_conn, _cursor, statement, *_args):
        # (On PostgreSQL the case's UPDATE is the head of one statement with its history
        # INSERT: `WITH moved AS (UPDATE cases …`.)
        if "UPDATE CASES" in statement.upper():
            updates["n"] += 1

    return updates


def _once_per_thread_barrier(n: int):
    """An engine clock that holds each thread, on its first call, until n threads wait."""
    barrier, seen = threading.Barrier(n), threading.local()

    def clock():
        if not getattr(seen, "waited", False):
            seen.waited = True
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=3)
        return utcnow()

    return clock


@pytest.mark.parametrize("race", ["arrival", "in-transaction"])
def test_same_action_same_version_one_wins(api, engine, org, db_url, race):
    case = engine.start_case("regular-assessment", org.s1, period_key="2026-11")
    clock = _once_per_thread_barrier(THREADS) if race == "in-transaction" else None
    app, db = _app(api, clock)
    updates = _count_case_updates(db)
    headers = api.headers("s1", **{"If-Match": '"1"'})
    start = threading.Barrier(THREADS)

    def submit(i: int):
        client = app.test_client()
        start.wait(timeout=30)
        return client.post(f"/api/v1/cases/{case.id}/actions/submit", headers=headers,
                           json={"data": {"summary": f"第 {i} 份小结"}})

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            responses = list(pool.map(submit, range(THREADS)))
    finally:
        db.dispose()
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 1, 409: THREADS - 1}, statuses
    if race == "in-transaction":
        # The row lock taken at the read decided: the losers never reached the UPDATE.
        assert updates["n"] == 1, updates
    winner = next(i for i, r in enumerate(responses) if r.status_code == 200)
    assert responses[winner].get_json()["version"] == 2
    assert responses[winner].headers["ETag"] == '"2"'
    for r in responses:
        if r.status_code == 409:
            body = r.get_json()
            assert (body["code"], body["current_version"]) == ("conflict", 2), body
    history = engine.history(case.id)
    assert [h["trigger"] for h in history] == ["start", "submit"]
    assert history[1]["data"] == {"summary": f"第 {winner} 份小结"}
    final = engine.get_case(case.id)
    assert (final.state, final.version, final.data["summary"]) == \
        ("evaluation", 2, f"第 {winner} 份小结")
    assert_history_intact(db_url, cases=1)


# --------------------------------------------------------------------------- different steps

# (who, how, trigger, data, comment): `engine` = Engine.fire without expected version,
# `bulk` = POST /api/v1/queue/bulk with this one case (the API's step without If-Match),
# `claim` / `release` = Engine.claim / release without expected version.
GRADE = {"grade": "较好"}
STEPS = [
    ("s1", "engine", "record_week", {"weekly_records": [{"week": "W1", "content": "甲"}]}, None),
    ("s1", "bulk", "record_week", {"weekly_records": [{"week": "W2", "content": "乙"}]}, None),
    ("s1", "engine", "record_week", {"weekly_records": [{"week": "W3", "content": "丙"}]}, None),
    ("s1", "bulk", "record_week", {"weekly_records": [{"week": "W4", "content": "丁"}]}, None),
    ("s1", "engine", "submit", {"summary": "小结甲"}, None),
    ("s1", "bulk", "submit", {"summary": "小结乙"}, None),
    ("l1", "claim", "claim", None, None),
    ("l1", "release", "release", None, None),
    ("l1", "engine", "evaluate", GRADE, None),
    ("l1", "bulk", "evaluate", {"grade": "一般", "evaluation_comment": "需改进"}, None),
    ("l1", "engine", "return_summary", {}, "请补充本月工作"),
    ("s1", "engine", "object", {"objection_reason": "评价不符"}, None),
    ("s1", "engine", "accept", {}, None),
    ("s1", "bulk", "accept", {}, None),
    ("c2", "claim", "claim", None, None),
    ("c2", "release", "release", None, None),
    ("c1", "engine", "approve", {}, None),
    ("c1", "bulk", "approve", {}, None),
    ("c2", "engine", "send_back", {}, "请复核等次"),
    ("s1", "bulk", "record_week", {"weekly_records": [{"week": "W5", "content": "戊"}]}, None),
]


def test_different_steps_without_if_match_keep_one_chain(api, engine, org, db, db_url, capsys):
    case = engine.start_case("regular-assessment", org.s1, period_key="2026-11")
    steps = [STEPS[i % len(STEPS)] for i in range(THREADS)]
    app, rdb = _app(api)
    racer = Engine(rdb)
    headers = {who: api.headers(who) for who in {s[0] for s in steps}}
    start = threading.Barrier(THREADS)
    attempts = heavy(25, 60)

    def run(i: int):
        who, how, trigger, data, comment = steps[i]
        client, rng = app.test_client(), random.Random(i)
        accepted, refusals = 0, Counter()
        start.wait(timeout=30)
        for _ in range(attempts):
            if how == "bulk":
                r = client.post("/api/v1/queue/bulk", headers=headers[who], json={
                    "trigger": trigger, "case_ids": [case.id], "data": data or {},
                    **({"comment": comment} if comment else {})})
                assert r.status_code in (200, 409, 422), (r.status_code, r.get_data(True))
                body = r.get_json()
                if r.status_code == 200 and body["counts"]["done"] == 1:
                    accepted += 1
                    break
                refusals[body["refused"][0]["code"] if r.status_code == 200
                         else body["code"]] += 1
            else:
                try:
                    if how == "engine":
                        racer.fire(case.id, trigger, P(org.ids[who]), data=data,
                                   comment=comment)
                    else:
                        getattr(racer, how)(case.id, P(org.ids[who]))
                except CivflowError as exc:  # a refusal: wrong state, claimed, conflict …
                    refusals[exc.code] += 1
                else:
                    accepted += 1
                    break
            time.sleep(rng.uniform(0, 0.02))
        return accepted, refusals

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            outcomes = list(pool.map(run, range(THREADS)))
    finally:
        rdb.dispose()
    accepted = sum(a for a, _r in outcomes)
    refusals = sum((r for _a, r in outcomes), Counter())
    with capsys.disabled():
        print(f"\n  {THREADS} threads: {accepted} steps accepted, refusals {dict(refusals)}")
    assert set(refusals) <= {"action_not_allowed", "conflict", "forbidden", "retry"}, refusals

    history = engine.history(case.id)
    final = engine.get_case(case.id)
    # Each accepted step once, after the start record; the chain of seqs and states unbroken.
    assert len(history) == accepted + 1, (accepted, [h["trigger"] for h in history])
    assert [h["seq"] for h in history] == list(range(1, len(history) + 1))
    for before, after in zip(history, history[1:], strict=False):
        assert after["from"] == before["to"], (before, after)
    assert (final.version, final.state) == (len(history), history[-1]["to"])
    # Which steps went through, as the threads saw it, is what the history says.
    by_trigger = Counter(h["trigger"] for h in history[1:])
    seen = Counter()
    for (_who, _how, trigger, _d, _c), (a, _r) in zip(steps, outcomes, strict=True):
        seen[trigger] += a
    assert by_trigger == seen
    # Appends are never lost: the case holds exactly the weekly records of its history.
    recorded = [w for h in history if h["trigger"] == "record_week"
                for w in h["data"]["weekly_records"]]
    assert final.data.get("weekly_records", []) == recorded
    assert accepted >= 2, "the race let almost nothing through: it tested little"
    assert_history_intact(db_url, cases=1)
