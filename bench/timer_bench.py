"""Timer drain rate and firing lag with 1 and 3 `civflow worker` processes on PostgreSQL.

    .venv/bin/python bench/timer_bench.py [--kind reminder|auto] [--due N] [--pending N]
                                          [--spread S] [--workers 1,3] [--tick T]

    Defaults: 100,000 pending, 10,000 due, reminder timers, spread 40 s, tick 1 s; about
    3 minutes on 2 cores.

What is measured (issue 4, item 9)
    A scratch database ``civflow_bench_<random>`` is created through the admin URL
    ``$CIVFLOW_TEST_PG_URL`` (or the local default) and dropped at the end. Before each
    phase the cases and timers are emptied and seeded again (straight SQL, with the history
    hash chains the engine would have written), so every phase starts from the same rows:
    ``--pending`` pending timers (100,000), of which ``--due`` (10,000) are the ones that
    come due — one per "hot" case — and the rest are far in the future (30 to 365 days),
    nine each on as many "cold" cases, so that the claim query works against a realistic
    index. The workers are the real thing: ``python -m service.cli worker --tick T``
    (APScheduler in memory, TimerWorker with its default batch of 200 and 30 s lease),
    started and running before the timers come due. For each number of workers:

    drain   all due timers become due at once (a backlog, as after downtime); the rate is
            timers fired per second from that moment until the last one is done.
    lag     the due timers become due one after another, evenly over the next ``--spread``
            seconds, while the workers tick every T s; lag = fired_at − due_at per timer
            (p50, p99, max). The arrival rate (due / spread) should stay below the drain
            rate: then the lag shows the tick and claim/fire machinery, not a backlog.

    Timer kinds (``--kind``):

    reminder  (default) reminder timers on cases in ``summary``; the worker's event hook
              is the default no-op. A fire is then exactly the machinery: claim a batch
              with FOR UPDATE SKIP LOCKED, then per timer one transaction that locks the
              row, checks the claim and the case's state visit, runs the hook and marks
              it done. That is what decides the lag and the drain rate of every timer
              kind; what a timer does on top (a notification row, a transition) adds its
              own cost, which the engine benchmark measures.
    auto      the auto-accept timers of cases in ``feedback``: each fire is also a full
              engine transition (feedback → approval: versioned UPDATE, history record,
              disarm, arming the approval deadline), the heaviest timer there is.

    It asserts nothing about time. It raises when the work goes wrong: a due timer not
    done, a timer fired twice (auto: a case with other than one ``accept`` record), a
    broken hash chain, a worker that exits badly.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import apscheduler
import psycopg
import sqlalchemy
from sqlalchemy import create_engine, func, insert, select, text, update
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import benchlib  # noqa: E402

from workflows.db import Database, upgrade  # noqa: E402
from workflows.engine import Engine  # noqa: E402
from workflows.history import GENESIS, record_hash, verify  # noqa: E402
from workflows.models import Case, HistoryRecord, Person, RoleAssignment, Timer, Unit  # noqa: E402

DEFINITION = ROOT / "definitions" / "regular-assessment.yaml"
FLOW = "regular-assessment"
PG_ENV = "CIVFLOW_TEST_PG_URL"
PG_DEFAULT = "postgresql+psycopg://civflow:civflow@127.0.0.1:5432/civflow"
CASES, HISTORY, TIMERS = Case.__table__, HistoryRecord.__table__, Timer.__table__
COLD_PER_CASE = 9
STARTED = re.compile(r"worker (\S+) started:")
FIRED = re.compile(r"tick: claimed=\d+ fired=(\d+)")
SHANGHAI = ZoneInfo("Asia/Shanghai")


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- database


def pg_admin_url() -> str:
    url = os.environ.get(PG_ENV) or PG_DEFAULT
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            url = "postgresql+psycopg://" + url[len(plain):]
    return url


@contextmanager
def scratch_database() -> Iterator[str]:
    admin = create_engine(pg_admin_url(), isolation_level="AUTOCOMMIT")
    name = f"civflow_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(pg_admin_url()).set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        yield url
    finally:
        benchlib.drop_database(name)  # (its admin URL is this one's)
        admin.dispose()


# --------------------------------------------------------------------------- seeding


@dataclass
class Seeded:
    hot_cases: list[int]
    hot_lo: int  # hot timers have the ids hot_lo … hot_hi
    hot_hi: int


def seed_org(db: Database, people: int) -> tuple[int, int, list[int]]:
    """A root unit with a leader and `people` staff. Returns (unit, leader, staff ids)."""
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
        staff = conn.execute(
            insert(Person.__table__).returning(Person.id, sort_by_parameter_order=True),
            [{"code": f"S{i:06d}", "name": f"干部{i}", "unit_id": root, "tier": "staff",
              "active": True} for i in range(people)]).scalars().all()
    return root, leader, list(staff)


# (trigger, from, to, actor role, data), as the engine records them, up to each state.
STEPS = [("start", None, "summary", "system", {}),
         ("submit", "summary", "evaluation", "subject", {"summary": "本月小结"}),
         ("evaluate", "evaluation", "feedback", "leader", {"grade": "较好"})]


def seed_timers(db: Database, version_id: int, org: tuple[int, int, list[int]], kind: str,
                due: int, pending: int) -> Seeded:
    """Empty cases and timers; `due` hot cases with one timer each (due in a year until
    `make_due`), and the other pending timers nine to a cold case, 30–365 days ahead."""
    root, leader, staff = org
    cold_cases = -(-(pending - due) // COLD_PER_CASE)
    now = dt.datetime.now(dt.UTC)
    month = now.astimezone(SHANGHAI).replace(day=1)
    hot_period = month.strftime("%Y-%m")
    cold_period = (month - dt.timedelta(days=1)).strftime("%Y-%m")
    t0 = now - dt.timedelta(hours=1)
    with db.unit_of_work() as s:
        conn = s.connection()
        conn.execute(text("TRUNCATE timers, case_history, cases RESTART IDENTITY CASCADE"))
        n_cases = due + cold_cases
        ids = conn.execute(text("SELECT nextval(pg_get_serial_sequence('cases', 'id')) "
                                "FROM generate_series(1, :n)"), {"n": n_cases}).scalars().all()
        cases, history, hot, cold = [], [], [], []
        left = pending - due
        for i, case_id in enumerate(ids):
            is_hot = i < due
            subject = staff[i % len(staff)]
            steps = STEPS if is_hot and kind == "auto" else STEPS[:1]
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
            visit = len(steps)
            entered = t0 + dt.timedelta(seconds=visit)
            cases.append({"id": case_id, "flow_id": FLOW, "version_id": version_id,
                          "subject_id": subject, "unit_id": root, "tier": "staff",
                          "period_key": hot_period if is_hot else cold_period,
                          "state": steps[-1][2], "data": data, "version": visit,
                          "history_seq": visit, "state_visit": visit, "history_hash": prev,
                          "created_at": t0, "updated_at": entered,
                          "state_entered_at": entered})
            base = {"case_id": case_id, "state_visit": visit, "status": "pending",
                    "attempts": 0, "created_at": entered}
            if is_hot:
                auto = kind == "auto"
                hot.append({**base, "kind": "auto" if auto else "reminder",
                            "action": "accept" if auto else None,
                            "due_at": now + dt.timedelta(days=365),
                            "dedupe_key": f"case:{case_id}:{visit}:hot",
                            "payload": {} if auto else {"notify": ["subject"]}})
            else:
                for j in range(min(COLD_PER_CASE, left)):
                    cold.append({**base, "kind": "reminder", "action": None,
                                 "due_at": now + dt.timedelta(days=30 + (i * 7 + j * 37) % 335),
                                 "dedupe_key": f"case:{case_id}:{visit}:c{j}",
                                 "payload": {"notify": ["subject"]}})
                left -= min(COLD_PER_CASE, left)
        conn.execute(insert(CASES), cases)
        conn.execute(insert(HISTORY), history)
        conn.execute(insert(TIMERS), hot)  # first: ids 1 … due (RESTART IDENTITY)
        conn.execute(insert(TIMERS), cold)
        lo, hi, n = conn.execute(select(func.min(TIMERS.c.id), func.max(TIMERS.c.id),
                                        func.count()).where(
            TIMERS.c.dedupe_key.like("%:hot"))).one()
        assert (hi - lo + 1, n) == (due, due), "hot timers are not one id range"
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM ANALYZE timers"))
        c.execute(text("ANALYZE cases"))
    return Seeded(ids[:due], lo, hi)


def make_due(db: Database, seeded: Seeded, spread: float) -> dt.datetime:
    """Due now (spread 0) or evenly over (now + 1 s, now + 1 s + spread]. Returns the
    moment the first of them is due."""
    with db.unit_of_work() as s:
        start = s.execute(text("SELECT clock_timestamp()")).scalar()
        first = start if spread == 0 else start + dt.timedelta(seconds=1)
        n = seeded.hot_hi - seeded.hot_lo + 1
        s.execute(text(
            "UPDATE timers SET due_at = :first + (id - :lo) * :step * interval '1 second' "
            "WHERE id BETWEEN :lo AND :hi"),
            {"first": first, "lo": seeded.hot_lo, "hi": seeded.hot_hi,
             "step": spread / max(n - 1, 1) if spread else 0.0})
    return first


def remaining(db: Database, seeded: Seeded) -> int:
    with db.unit_of_work(write=False) as s:
        return s.execute(select(func.count()).select_from(TIMERS).where(
            TIMERS.c.id.between(seeded.hot_lo, seeded.hot_hi),
            TIMERS.c.status != "done")).scalar()


# --------------------------------------------------------------------------- workers


class Worker:
    def __init__(self, url: str, tick: float, log: Path):
        self.log = log
        self.cmd = [sys.executable, "-m", "service.cli", "worker", "--db", url,
                    "--tick", f"{tick:g}"]
        env = {**os.environ, "CIVFLOW_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
        self.out = log.open("wb")
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=env, stdout=self.out,
                                     stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def fired(self) -> int:
        return sum(int(m) for m in FIRED.findall(self.text()))

    def started(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.text()}")
        return bool(STARTED.search(self.text()))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"worker did not stop on SIGTERM:\n{self.text()[-2000:]}") \
                from None
        finally:
            self.out.close()
        if code != 0:
            raise RuntimeError(f"worker exited with {code}:\n{self.text()[-2000:]}")


@contextmanager
def workers(url: str, n: int, tick: float, logs: Path) -> Iterator[list[Worker]]:
    started = [Worker(url, tick, logs / f"worker{n}-{i}.log") for i in range(n)]
    try:
        deadline = time.monotonic() + 60
        while not all(w.started() for w in started):
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start within 60 s")
            time.sleep(0.1)
        yield started
    finally:
        errors = []
        for w in started:
            try:
                w.stop()
            except RuntimeError as exc:
                errors.append(str(exc))
        if errors and sys.exc_info()[0] is None:
            raise RuntimeError("\n".join(errors))


# --------------------------------------------------------------------------- phases


@dataclass
class Phase:
    workers: int
    name: str
    due: int
    seconds: float  # from the first timer due to the last one done
    lags: list[float] = field(default_factory=list)
    shares: list[int] = field(default_factory=list)
    spread: float = 0.0

    @property
    def rate(self) -> float:
        return self.due / self.seconds

    def pct(self, q: float) -> float:
        xs = sorted(self.lags)
        return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]  # nearest rank


def run_phase(db: Database, version_id: int, org, args, ws: list[Worker], name: str
              ) -> Phase:
    seeded = seed_timers(db, version_id, org, args.kind, args.due, args.pending)
    before = [w.fired() for w in ws]
    spread = 0.0 if name == "drain" else args.spread
    say(f"{len(ws)} worker(s), {name}: {args.due:,} timers due "
        + ("now" if not spread else f"over {spread:g} s") + f" among {args.pending:,} pending")
    first = make_due(db, seeded, spread)
    limit = time.monotonic() + spread + args.timeout
    while (left := remaining(db, seeded)) > 0:
        if time.monotonic() > limit:
            raise RuntimeError(f"{left} due timers still not done after {args.timeout} s")
        time.sleep(0.25)
    with db.unit_of_work(write=False) as s:
        rows = s.execute(select(TIMERS.c.due_at, TIMERS.c.fired_at, TIMERS.c.attempts)
                         .where(TIMERS.c.id.between(seeded.hot_lo, seeded.hot_hi))).all()
    if any(r.attempts for r in rows):
        raise RuntimeError("some timers failed and were retried: see the worker logs")
    last = max(r.fired_at for r in rows)
    time.sleep(args.tick + 0.5)  # the workers' tick lines are written once a tick ends
    shares = [w.fired() - b for w, b in zip(ws, before, strict=True)]
    check(db, seeded, args.kind, shares)
    return Phase(len(ws), name, args.due, (last - first).total_seconds(),
                 [(r.fired_at - r.due_at).total_seconds() for r in rows], shares, spread)


def check(db: Database, seeded: Seeded, kind: str, shares: list[int]) -> None:
    """Every due timer fired once: the workers' own counts add up; for auto timers each
    case has exactly one accept record and the hash chains verify."""
    n = len(seeded.hot_cases)
    if sum(shares) != n:
        raise RuntimeError(f"the workers report {sum(shares)} fires for {n} due timers")
    if kind != "auto":
        return
    with db.unit_of_work(write=False) as s:
        counts = s.execute(select(func.count()).select_from(HISTORY)
                           .where(HISTORY.c.trigger == "accept")
                           .group_by(HISTORY.c.case_id)).scalars().all()
        if len(counts) != n or set(counts) != {1}:
            raise RuntimeError(f"accept records: {len(counts)} cases, counts {set(counts)}")
        _cases, _records, breaks = verify(s)
        if breaks:
            raise RuntimeError(f"broken hash chains: {[str(b) for b in breaks[:5]]}")


# --------------------------------------------------------------------------- report


def machine(url: str) -> list[str]:
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with psycopg.connect(make_url(url).set(drivername="postgresql")
                         .render_as_string(hide_password=False)) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
    return [
        f"date      {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"machine   {platform.platform()}, {platform.machine()}, nproc {ncpu}"
        + (" — only 2 cores: the workers, PostgreSQL and this script share them"
           if ncpu == 2 else ""),
        f"python    {platform.python_implementation()} {platform.python_version()}; "
        f"SQLAlchemy {sqlalchemy.__version__}, psycopg {psycopg.__version__}, "
        f"APScheduler {apscheduler.__version__}",
        f"database  PostgreSQL {version} (local)",
    ]


def report(phases: list[Phase], args, lines: list[str], command: str,
           load: tuple[tuple[float, ...], tuple[float, ...]]) -> None:
    what = ("reminder timers on cases in `summary`, no-op event hook: the claim/fire "
            "machinery" if args.kind == "reminder" else
            "auto-accept timers on cases in `feedback`: each fire is a full transition")
    print(f"\ncivflow timer benchmark: {args.pending:,} pending timers, {args.due:,} of them "
          f"due per phase; {what}")
    print(f"command   {command}")
    for line in lines:
        print(line)
    print("load      1/5/15-min load average: "
          + " → ".join("/".join(f"{x:.2f}" for x in avg) for avg in load) + " (start → end)")
    print(f"workers   `civflow worker --tick {args.tick:g}` (APScheduler, in-memory job store; "
          "TimerWorker batch 200, lease 30 s), running before the timers come due")
    print(f"\n{'workers':>7}  {'phase':<6}{'due':>8}{'arrival/s':>11}{'seconds':>9}"
          f"{'fired/s':>9}{'lag p50':>9}{'lag p99':>9}{'lag max':>9}   fires per worker")
    for p in phases:
        arrival = f"{p.due / p.spread:,.0f}" if p.spread else "at once"
        lag = (f"{p.pct(0.5):>8.2f}s{p.pct(0.99):>8.2f}s{max(p.lags):>8.2f}s"
               if p.name == "lag" else f"{'':>9}{'':>9}{'':>9}")
        print(f"{p.workers:>7}  {p.name:<6}{p.due:>8,}{arrival:>11}{p.seconds:>9.1f}"
              f"{p.rate:>9,.0f}{lag}   {' + '.join(map(str, p.shares))}")
    print("\n(drain: all due at once, fired/s = due / (last fired − due); lag: due evenly over "
          f"{args.spread:g} s, fired_at − due_at per timer)")
    by = {(p.workers, p.name): p for p in phases}
    lags = [p for p in phases if p.name == "lag"]
    if lags:
        worst = max(p.pct(0.99) for p in lags)
        verdict = "reached" if worst < 2 and args.tick == 1 else "NOT reached"
        print(f"target: p99 lag under 2 s with a 1 s tick: {verdict} ("
              + ", ".join(f"{p.workers} worker(s) {p.pct(0.99):.2f} s" for p in lags) + ")")
    if (1, "drain") in by and (3, "drain") in by:
        one, three = by[(1, "drain")].rate, by[(3, "drain")].rate
        print(f"target: 3 processes drain faster than 1: "
              f"{'reached' if three > one else 'NOT reached'} ({three:,.0f}/s vs {one:,.0f}/s, "
              f"×{three / one:.2f})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--kind", choices=("reminder", "auto"), default="reminder")
    ap.add_argument("--due", type=int, default=10_000, help="timers that come due (10,000)")
    ap.add_argument("--pending", type=int, default=100_000,
                    help="pending timers in all, the due ones included (100,000)")
    ap.add_argument("--spread", type=float, default=40.0,
                    help="lag phase: seconds over which the due timers come due (40: 250 "
                         "timers/s, about half what one worker drains on a 2-core machine)")
    ap.add_argument("--workers", default="1,3", help="worker counts to run (1,3)")
    ap.add_argument("--tick", type=float, default=1.0, help="worker tick in seconds (1)")
    ap.add_argument("--timeout", type=float, default=180.0,
                    help="seconds a phase may take beyond its spread before it fails (180)")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.workers.split(",")]
    if not 0 < args.due <= args.pending or args.spread <= 0 or min(counts) < 1:
        ap.error("need 0 < --due <= --pending, --spread > 0 and worker counts >= 1")
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/timer_bench.py",
                                                *(argv if argv is not None else sys.argv[1:])])
    load = os.getloadavg()
    phases: list[Phase] = []
    with scratch_database() as url, tempfile.TemporaryDirectory(prefix="timer_bench_") as tmp:
        db = Database(url)
        say(f"database {make_url(url).database}; seeding the organisation")
        org = seed_org(db, max(args.due, -(-(args.pending - args.due) // COLD_PER_CASE)))
        version_id = Engine(db).publish(DEFINITION.read_text(encoding="utf-8"),
                                        str(DEFINITION)).version_id
        for n in counts:
            with workers(url, n, args.tick, Path(tmp)) as ws:
                for name in ("drain", "lag"):
                    phases.append(run_phase(db, version_id, org, args, ws, name))
                    p = phases[-1]
                    say(f"  {p.rate:,.0f} fired/s"
                        + (f", lag p50 {p.pct(.5):.2f} s p99 {p.pct(.99):.2f} s"
                           if name == "lag" else "") + f"; per worker {p.shares}")
        lines = machine(url)
        db.dispose()
    report(phases, args, lines, command, (load, os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
