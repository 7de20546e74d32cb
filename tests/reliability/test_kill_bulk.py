"""`kill -9` during a bulk approval (批量审定): all of it or none of it (issue 7, item 2).

N cases (1,000; 10,000 with CIVFLOW_HEAVY) wait in `approval`, each with the pending timers
of that state visit (deadline, reminder). A separate process (`bulk_victim.py`) approves all
of them with one `Engine.fire_bulk`, in one transaction, and is SIGKILLed at one of several
moments:

- `locked`: the cases are locked FOR UPDATE, nothing written yet;
- `first row`: the first case updated and its history record written;
- `half`: about half of the cases written;
- `before commit`: everything written, COMMIT not sent (the victim waits there).

Before each kill the test sees, from outside, the victim's transaction open in
pg_stat_activity with a transaction id (it has locked or written rows) and no case approved
yet. After each kill: either every case moved or none did — and none did unless the victim
had got as far as sending COMMIT; the case rows and the history agree (the check
`civflow verify-history` makes, run in-process after each kill, and the command itself at
the end); the state's timers are untouched and none is orphaned; the same cases are then
approved by the next victim. A last run is not killed: every case approved exactly once,
their approval timers dropped, `civflow verify-history` exits 0.

How far the victim had got is printed (`-s`), e.g. `killed at 'half' after 6.1 s,
503/1000 rows written: nothing moved`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from queue import Empty, Queue

import pytest
from sqlalchemy import func, select, text

from workflows.db import Database
from workflows.engine import Engine
from workflows.timers import SHOWN_STATUS, TIMERS

from ..conftest import ROOT
from .bulk_victim import APPLICATION_NAME
from .conftest import assert_history_intact, heavy, orphan_timers, seed_regular_cases

pytestmark = pytest.mark.reliability
N_CASES = heavy(1000, 10000)
# (name, the victim's line to kill at, its PAUSE argument)
KILL_POINTS = [
    ("locked", lambda line: line == "locked", ""),
    ("first row", lambda line: line == "rows 1", ""),
    ("half", lambda line: line == f"rows {N_CASES // 2}", ""),
    ("before commit", lambda line: line == "commit", "commit"),
]
if N_CASES >= 10000:
    KILL_POINTS[3:3] = [(f"rows {k}", lambda line, k=k: line == f"rows {k}", "")
                        for k in (N_CASES // 10, N_CASES - N_CASES // 10, N_CASES - 1)]


class Victim:
    """The bulk-approval process and the lines it printed so far."""

    def __init__(self, url: str, committee: int, pause: str):
        env = {**os.environ, "CIVFLOW_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.bulk_victim", url, str(committee),
             pause], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        self.lines: list[str] = []
        self.queue: Queue[str | None] = Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.queue.put(line.strip())
        self.queue.put(None)

    def wait_for(self, predicate, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except Empty:
                raise AssertionError(f"the victim never printed what we wait for; last "
                                     f"lines: {self.lines[-5:]}") from None
            if line is None:
                raise AssertionError(f"the victim ended first (exit {self.proc.wait()}):\n"
                                     f"{self.lines[-5:]}\n{self.proc.stderr.read()[-3000:]}")
            self.lines.append(line)
            if predicate(line):
                return line

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(30) == -signal.SIGKILL
        self.reader.join(10)
        while not self.queue.empty():  # what it printed between our decision and its death
            line = self.queue.get()
            if line is not None:
                self.lines.append(line)


def _victim_backends(db: Database) -> list:
    with db.unit_of_work(write=False) as s:
        return list(s.execute(text(
            "SELECT pid, state, xact_start, backend_xid::text AS xid FROM pg_stat_activity "
            "WHERE application_name = :app AND datname = current_database()"),
            {"app": APPLICATION_NAME}).all())


def _states(db: Database) -> dict[str, int]:
    with db.unit_of_work(write=False) as s:
        return dict(s.execute(text("SELECT state, count(*) FROM cases GROUP BY state")).all())


def _approval_timers(db: Database) -> dict[str, int]:
    """The approval visit's timers by the status reads show (`timers.SHOWN_STATUS`)."""
    with db.unit_of_work(write=False) as s:
        return dict(s.execute(
            select(SHOWN_STATUS, func.count()).where(TIMERS.c.state_visit == 4)
            .group_by(SHOWN_STATUS)).all())


def _wait_until_gone(db: Database, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _victim_backends(db):
        assert time.monotonic() < deadline, "PostgreSQL kept the killed victim's backend"
        time.sleep(0.05)


def test_kill_9_during_bulk_approval_is_all_or_nothing(pg_only_url, capsys):
    seeded = seed_regular_cases(pg_only_url, N_CASES, "approval")
    db = Database(pg_only_url)
    checked, _records, breaks = Engine(db).verify_history()  # the seeded chains are sound
    assert (checked, breaks) == (N_CASES, [])
    timers_before = _approval_timers(db)
    assert timers_before == {"pending": 2 * N_CASES}  # a deadline and a reminder each
    victim: Victim | None = None
    try:
        for name, at, pause in KILL_POINTS:
            victim = Victim(pg_only_url, seeded.committee, pause)
            began = time.monotonic()
            victim.wait_for(at)
            # From outside: the victim's transaction is open and has locked or written rows,
            # and nobody else can see any of it yet.
            backends = [b for b in _victim_backends(db) if b.xid is not None]
            assert len(backends) == 1, (name, backends)
            assert backends[0].state in ("active", "idle in transaction"), (name, backends)
            assert backends[0].xact_start is not None, (name, backends)
            assert _states(db) == {"approval": N_CASES}, name
            victim.kill()
            _wait_until_gone(db)
            took = time.monotonic() - began

            states = _states(db)
            assert states in ({"approval": N_CASES}, {"approved": N_CASES}), (name, states)
            # Nothing committed unless the victim got as far as sending COMMIT; at every
            # kill point here it did not (at `before commit` it waits just before it).
            assert states == {"approval": N_CASES}, (name, states, victim.lines[-3:])
            assert _approval_timers(db) == timers_before, name
            assert orphan_timers(db) == [], name
            checked, _records, breaks = Engine(db).verify_history()  # as the CLI does
            assert (checked, breaks) == (N_CASES, []), (name, breaks[:3])
            written = max([int(x.split()[1]) for x in victim.lines if x.startswith("rows ")],
                          default=0)
            with capsys.disabled():
                print(f"\n  killed at {name!r} after {took:.1f} s, {written}/{N_CASES} rows "
                      "written: nothing moved, history intact, no orphan timers", end="")

        victim = Victim(pg_only_url, seeded.committee, "")
        began = time.monotonic()
        done = victim.wait_for(lambda line: line.startswith("done"))
        with capsys.disabled():
            print(f"\n  not killed: {done} in {time.monotonic() - began:.1f} s")
        assert victim.proc.wait(60) == 0, victim.proc.stderr.read()[-3000:]
        assert done == f"done {N_CASES} refused 0"
        assert _states(db) == {"approved": N_CASES}
        assert _approval_timers(db) == {"dropped": 2 * N_CASES}
        assert orphan_timers(db) == []
        with db.unit_of_work(write=False) as s:
            approvals = s.execute(text(
                "SELECT count(*), count(DISTINCT case_id), min(seq), max(seq) FROM case_history "
                "WHERE trigger = 'approve'")).one()
        assert tuple(approvals) == (N_CASES, N_CASES, 5, 5)
        assert_history_intact(pg_only_url, cases=N_CASES)
    finally:
        # A failed assertion must not leave a victim holding its transaction open (it
        # waits 10 minutes at `commit`) for the tests that follow.
        if victim is not None and victim.proc.poll() is None:
            victim.proc.kill()
            victim.proc.wait(30)
        db.dispose()
