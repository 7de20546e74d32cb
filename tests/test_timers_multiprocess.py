"""Several `civflow worker` processes against one PostgreSQL database: each due timer fires
exactly once, and the timers of a worker killed with SIGKILL are fired by the others once
its lease runs out (issue 4, item 8).

Each test seeds N_CASES regular-assessment cases sitting in `feedback` (straight SQL, with the
history hash chain the engine would have written: start → submit → evaluate), each with
its pending auto-accept timer (5 working days, normally). Three real worker processes
(`python -m service.cli worker`, a 0.2 s tick) are started and have logged that they run;
only then are all the timers made due at once, so that every worker competes for them.
Then the database must show, per case, exactly one `accept` record, the case in
`approval` at version 4, its timer `done` after one attempt, the hash chains intact, and
each worker's log its share of the fires (the shares adding up to N_CASES when none died).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, insert, select, text, update

from workflows.db import Database
from workflows.engine import Engine
from workflows.history import GENESIS, record_hash, verify
from workflows.models import Case, HistoryRecord, Person, RoleAssignment, Timer, Unit

from .conftest import REGULAR, ROOT

N_CASES = 3000
WORKERS = 3
TICK = "0.2"
FLOW = "regular-assessment"
CASES, HISTORY, TIMERS = Case.__table__, HistoryRecord.__table__, Timer.__table__
STARTED = re.compile(r"worker (\S+) started:")
FIRED = re.compile(r"tick: claimed=\d+ fired=(\d+)")
pytestmark = pytest.mark.postgres_only


# --------------------------------------------------------------------------- seeding


def seed_feedback_cases(url: str, n: int) -> list[int]:
    """n cases in `feedback`, each with a pending auto-accept timer due in a year."""
    db = Database(url)
    engine = Engine(db)
    # Without its cycle: the workers' monthly cycle check would open this month's cases
    # for the seeded people, and this test is about the timers alone.
    source = "\n".join(line for line in REGULAR.read_text(encoding="utf-8").splitlines()
                       if not line.startswith("cycle:"))
    version_id = engine.publish(source, str(REGULAR)).version_id
    # The current month: `approval` is armed with a deadline 10 working days after its end,
    # so no other timer comes due while the test runs.
    period = dt.datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")
    t0 = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    steps = [  # (trigger, from, to, actor role, data) as the engine records them
        ("start", None, "summary", "system", {}),
        ("submit", "summary", "evaluation", "subject", {"summary": "本月小结"}),
        ("evaluate", "evaluation", "feedback", "leader", {"grade": "较好"}),
    ]
    with db.unit_of_work() as s:
        conn = s.connection()
        root = conn.execute(insert(Unit.__table__).values(code="ORG", name="部机关", path="/")
                            .returning(Unit.id)).scalar_one()
        conn.execute(update(Unit.__table__).where(Unit.id == root).values(path=f"/{root}/"))
        leader = conn.execute(insert(Person.__table__).values(
            code="LEADER", name="领导", unit_id=root, tier="chief", active=True)
            .returning(Person.id)).scalar_one()
        conn.execute(insert(RoleAssignment.__table__).values(
            person_id=leader, unit_id=root, role="leader"))
        # Someone must hold committee: the auto-accept moves the cases into 审定, and the
        # engine refuses a move into a step nobody could act at (workflows/actors.py).
        conn.execute(insert(RoleAssignment.__table__).values(
            person_id=leader, unit_id=root, role="committee"))
        people = conn.execute(
            insert(Person.__table__).returning(Person.id, sort_by_parameter_order=True),
            [{"code": f"S{i:05d}", "name": f"干部{i}", "unit_id": root, "tier": "staff",
              "active": True} for i in range(n)]).scalars().all()
        ids = conn.execute(text("SELECT nextval(pg_get_serial_sequence('cases', 'id')) "
                                "FROM generate_series(1, :n)"), {"n": n}).scalars().all()
        cases, history, timers = [], [], []
        for case_id, subject in zip(ids, people, strict=True):
            prev, data = GENESIS, {}
            for seq, (trigger, src, dest, role, values) in enumerate(steps, start=1):
                at = t0 + dt.timedelta(seconds=seq)
                actor = leader if role == "leader" else subject if role == "subject" else None
                h = record_hash(case_id=case_id, seq=seq, at=at, actor_id=actor,
                                actor_role=role, trigger=trigger, from_state=src,
                                to_state=dest, data=values, comment=None, prev_hash=prev)
                history.append({"case_id": case_id, "seq": seq, "at": at, "actor_id": actor,
                                "actor_role": role, "trigger": trigger, "from_state": src,
                                "to_state": dest, "data": values, "comment": None,
                                "idempotency_key": None, "prev_hash": prev, "hash": h})
                prev, data = h, {**data, **values}
            entered = t0 + dt.timedelta(seconds=3)
            cases.append({"id": case_id, "flow_id": FLOW, "version_id": version_id,
                          "subject_id": subject, "unit_id": root, "tier": "staff",
                          "period_key": period, "state": "feedback", "data": data,
                          "version": 3, "history_seq": 3, "state_visit": 3,
                          "history_hash": prev, "created_at": t0, "updated_at": entered,
                          "state_entered_at": entered})
            timers.append({"case_id": case_id, "state_visit": 3, "kind": "auto",
                           "action": "accept", "due_at": t0 + dt.timedelta(days=365),
                           "status": "pending", "attempts": 0,
                           "dedupe_key": f"case:{case_id}:3:t0", "payload": {},
                           "created_at": entered})
        conn.execute(insert(CASES), cases)
        conn.execute(insert(HISTORY), history)
        conn.execute(insert(TIMERS), timers)
    db.dispose()
    return ids


def make_due(url: str) -> None:
    db = Database(url)
    with db.unit_of_work() as s:
        s.execute(text("UPDATE timers SET due_at = now() - interval '1 second' "
                       "WHERE kind = 'auto' AND status = 'pending'"))
    db.dispose()


# --------------------------------------------------------------------------- workers


class Worker:
    def __init__(self, url: str, log: Path, lease: float):
        self.log = log
        env = {**os.environ, "CIVFLOW_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
        self.out = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker", "--db", url, "--tick", TICK,
             "--lease", str(lease)],
            cwd=ROOT, env=env, stdout=self.out, stderr=subprocess.STDOUT)
        self.node: str | None = None

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def fired(self) -> int:
        return sum(int(m) for m in FIRED.findall(self.text()))

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.out.close()


def start_workers(url: str, tmp_path: Path, lease: float) -> list[Worker]:
    workers = [Worker(url, tmp_path / f"worker{i}.log", lease) for i in range(WORKERS)]
    deadline = time.monotonic() + 30
    for w in workers:
        while w.node is None:
            m = STARTED.search(w.text())
            if m:
                w.node = m.group(1)
            elif w.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker did not start:\n{w.text()}")
            else:
                time.sleep(0.05)
    return workers


def wait_until(predicate, timeout: float, what: str, workers: list[Worker]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {w.log.name}\n{w.text()[-3000:]}" for w in workers)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.1)


def pending_auto(url: str) -> int:
    db = Database(url)
    with db.unit_of_work(write=False) as s:
        n = s.execute(select(func.count()).select_from(TIMERS).where(
            TIMERS.c.kind == "auto", TIMERS.c.status != "done")).scalar()
    db.dispose()
    return n


# --------------------------------------------------------------------------- checks


def assert_each_accepted_once(url: str, case_ids: list[int]) -> None:
    db = Database(url)
    with db.unit_of_work(write=False) as s:
        accepts = dict(s.execute(
            select(HISTORY.c.case_id, func.count()).where(HISTORY.c.trigger == "accept")
            .group_by(HISTORY.c.case_id)).all())
        assert len(accepts) == len(case_ids), "some case was never accepted"
        twice = {c: k for c, k in accepts.items() if k != 1}
        assert not twice, f"accepted more than once: {dict(list(twice.items())[:10])}"
        rows = s.execute(select(CASES.c.state, CASES.c.version, CASES.c.history_seq,
                                func.count()).group_by(CASES.c.state, CASES.c.version,
                                                       CASES.c.history_seq)).all()
        assert [tuple(r) for r in rows] == [("approval", 4, 4, len(case_ids))]
        auto = s.execute(select(TIMERS.c.status, TIMERS.c.attempts, TIMERS.c.last_error,
                                func.count()).where(TIMERS.c.kind == "auto")
                         .group_by(TIMERS.c.status, TIMERS.c.attempts, TIMERS.c.last_error)
                         ).all()
        assert [tuple(r) for r in auto] == [("done", 0, None, len(case_ids))]
        # Each accept armed `approval` once: its deadline and reminder, still pending.
        armed = s.execute(select(TIMERS.c.kind, TIMERS.c.status, func.count())
                          .where(TIMERS.c.kind != "auto")
                          .group_by(TIMERS.c.kind, TIMERS.c.status)
                          .order_by(TIMERS.c.kind)).all()
        assert [tuple(r) for r in armed] == [("deadline", "pending", len(case_ids)),
                                             ("reminder", "pending", len(case_ids))]
        checked, records, breaks = verify(s)
        assert not breaks, [str(b) for b in breaks[:5]]
        assert (checked, records) == (len(case_ids), 4 * len(case_ids))
    db.dispose()


# --------------------------------------------------------------------------- tests


def test_three_workers_fire_each_timer_exactly_once(pg_only_url, tmp_path):
    case_ids = seed_feedback_cases(pg_only_url, N_CASES)
    workers = start_workers(pg_only_url, tmp_path, lease=30)
    try:
        make_due(pg_only_url)
        wait_until(lambda: pending_auto(pg_only_url) == 0, 300, "every timer done", workers)
        codes = [w.stop() for w in workers]
    finally:
        for w in workers:
            w.kill()
    assert codes == [0] * WORKERS, [w.text()[-2000:] for w in workers]
    assert_each_accepted_once(pg_only_url, case_ids)
    shares = [w.fired() for w in workers]
    assert sum(shares) == N_CASES, shares
    assert all(shares), f"a worker fired nothing: {shares}"
    for w in workers:
        assert "stopped" in w.text() and "Traceback" not in w.text(), w.text()[-2000:]


def test_killed_worker_timers_fired_by_the_others_after_its_lease(pg_only_url, tmp_path):
    lease = 3.0
    case_ids = seed_feedback_cases(pg_only_url, N_CASES)
    workers = start_workers(pg_only_url, tmp_path, lease=lease)
    victim, survivors = workers[0], workers[1:]
    db = Database(pg_only_url)
    held_by_victim = (select(TIMERS.c.id, TIMERS.c.claim_until)
                      .where(TIMERS.c.status == "claimed", TIMERS.c.claimed_by == victim.node))

    def victim_busy() -> bool:
        with db.unit_of_work(write=False) as s:
            done = s.execute(select(func.count()).select_from(TIMERS).where(
                TIMERS.c.kind == "auto", TIMERS.c.status == "done")).scalar()
            return done >= N_CASES // 10 and s.execute(held_by_victim.limit(1)).first()

    try:
        make_due(pg_only_url)
        wait_until(victim_busy, 120, "the victim to hold claims mid-run", workers)
        victim.kill()  # SIGKILL: no chance to release anything
        killed_at = dt.datetime.now(dt.UTC)
        time.sleep(0.5)  # let PostgreSQL finish with the dead connection
        with db.unit_of_work(write=False) as s:
            held = s.execute(held_by_victim).all()
        assert held, "the victim held no claims when it died"
        wait_until(lambda: pending_auto(pg_only_url) == 0, 300, "every timer done", workers)
        codes = [w.stop() for w in survivors]
    finally:
        for w in workers:
            w.kill()
    assert victim.proc.returncode == -signal.SIGKILL
    assert codes == [0] * len(survivors), [w.text()[-2000:] for w in survivors]
    assert_each_accepted_once(pg_only_url, case_ids)
    with db.unit_of_work(write=False) as s:
        fired = dict(s.execute(select(TIMERS.c.id, TIMERS.c.fired_at).where(
            TIMERS.c.id.in_([h.id for h in held]))).all())
    db.dispose()
    # Taken over only once the lease had run out, and fired then.
    early = [h.id for h in held if fired[h.id] < h.claim_until]
    assert not early, f"fired before the victim's lease ran out: {early[:10]}"
    assert min(fired.values()) > killed_at
    assert all(w.fired() for w in survivors), [w.fired() for w in survivors]
    assert sum(w.fired() for w in survivors) >= len(held)
