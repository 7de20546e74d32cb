"""HTTP throughput of case actions under gunicorn, against the engine's own rate.

    .venv/bin/python bench/http_bench.py [--cases N] [--workers 2] [--duration S]
                                         [--connections C] [--threads T]
                                         [--engine-cases E] [--staff P] [--units U]

What is measured
    One scratch PostgreSQL database ``civflow_bench_<random>`` is created through the admin
    URL (``$CIVFLOW_TEST_PG_URL`` or the local default), migrated, given
    ``definitions/regular-assessment.yaml`` and an organisation: a root unit with a
    committee member, U sub-units each led by a person holding the role ``leader`` there,
    and P staff spread over the sub-units. Everyone has a user account (one Argon2 hash
    shared by all, as tests/conftest.py does); every staff member gets a bearer token,
    issued directly with ``workflows.accounts.issue_token``. N cases are started (one per
    staff member and month, over as many months as needed) plus 2 × E + a few for the
    engine, all with ``Engine.start_case``. Setup writes with ``synchronous_commit=off``
    (for speed only); everything measured runs with the server's own setting.

    HTTP: gunicorn serves ``service.app:create_app()`` with W sync workers (default 2) on
    the scratch database (CIVFLOW_LOG_LEVEL=WARNING, a fixed CIVFLOW_SECRET_KEY). After a
    short warm-up, wrk (``bench/http_actions.lua``) sends, for every case once,

        POST /api/v1/cases/<id>/actions/submit   If-Match: "1"
        Authorization: Bearer <the subject's token>   {"data": {"summary": "..."}}

    — the case's first action, by its subject: each request is distinct and valid, so each
    must answer 200. Each wrk thread takes its own slice of the list; the run ends after S
    seconds or when the list is used up (as soon as one thread has used up its slice).
    Reported: actions/s (200 answers per second of the run), wrk's latency p50 and p99,
    every non-200 answer and socket error, and whether the database agrees on how many
    cases moved.

    Engine: in this process, on the same database and with the server's durability,
    ``Engine.fire(case, "submit", Actor.person(subject), data={"summary": ...},
    expected_version=1, viewer=Viewer(subject))`` — the very call the view makes — on E
    fresh cases in one thread, then on E other fresh cases split over W threads.

    For both, the table also gives the CPU time per action of the Python side (the gunicorn
    workers; this process) and of the PostgreSQL backends serving it (from /proc), and the
    database transactions per action (pg_stat_database, read once the backends are gone).

Why the engine rate is the right ceiling
    Every HTTP action ends in one ``Engine.fire_signed`` call: the ``Engine.fire``
    transaction with one statement more at its start, the bearer token lookup with the
    viewer's role assignments (only the token's SHA-256 is looked up, no password is hashed;
    ``accounts.sign_in``). Everything else the service does per request is added on top:
    the TCP connection and HTTP parsing (gunicorn), Flask routing, that sign-in statement,
    the marshmallow schemas, the JSON answer, the metrics. So one worker cannot fire faster than one engine
    thread, nor W workers faster than W engine threads; HTTP/engine is the share of the
    engine's rate the service keeps. The W-thread rate is measured in one process, so it is
    only an approximation of W engine processes: its threads share one GIL where gunicorn's
    workers do not. The 1-thread rate is the cleaner reference.

Caveats printed with the table
    The machine's cores are shared by wrk, the gunicorn workers, PostgreSQL and anything
    else running (the load average is printed, and during the HTTP run how much CPU each of
    them used). Latency is wrk's, with its correction for coordinated omission; with more
    connections than workers it includes the time a request waits for a free worker.

This is a benchmark, not a test: it asserts nothing about time. It fails only when the
work itself fails; non-200 answers are counted and printed and the run is then reported
as a run with errors.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import importlib.metadata
import itertools
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import benchlib
import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from workflows.access import Viewer
from workflows.accounts import BEARER, hash_password, issue_token
from workflows.db import Database, upgrade
from workflows.engine import Actor, Engine, utcnow
from workflows.models import User
from workflows.org import add_person, add_unit, assign_role

ROOT = Path(__file__).resolve().parent.parent
DEFINITION = ROOT / "definitions" / "regular-assessment.yaml"
LUA = Path(__file__).resolve().with_name("http_actions.lua")
FLOW = "regular-assessment"
TRIGGER = "submit"
PG_ENV = "CIVFLOW_TEST_PG_URL"
PG_DEFAULT = "postgresql+psycopg://civflow:civflow@127.0.0.1:5432/civflow"
PASSWORD = "civflow-bench-pw"
SECRET_KEY = "civflow-bench-fixed-secret-key"
SUMMARY = ("本月完成干部档案专项审核 230 卷，参与年度考核方案起草，按时报送人员统计报表；"
           "下月重点推进档案数字化和任前审核流程规范。")
WARMUP = 60  # requests sent one by one before wrk starts (not timed)
ENGINE_WARMUP = 50  # Engine.fire calls before the engine is timed

Say = Callable[[str], None]


# --------------------------------------------------------------------------- database


def pg_admin_url() -> str:
    url = os.environ.get(PG_ENV) or PG_DEFAULT
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            url = "postgresql+psycopg://" + url[len(plain):]
    return url


def libpq_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def scratch_database(say: Say) -> Iterator[tuple[str, str]]:
    """A new migrated database (name, SQLAlchemy URL), dropped afterwards whatever happens."""
    admin = create_engine(pg_admin_url(), isolation_level="AUTOCOMMIT")
    name = f"civflow_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    say(f"created database {name}")
    try:
        url = make_url(pg_admin_url()).set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        yield name, url
    finally:
        benchlib.drop_database(name)  # (its admin URL is this one's)
        admin.dispose()
        say(f"dropped database {name}")


def pg_settings(url: str) -> str:
    with psycopg.connect(libpq_url(url)) as conn:
        version, sync, fsync = (conn.execute(f"SHOW {name}").fetchone()[0] for name in
                                ("server_version", "synchronous_commit", "fsync"))
    return f"PostgreSQL {version} (synchronous_commit={sync}, fsync={fsync})"


def transactions(name: str) -> int:
    """Committed plus rolled-back transactions of database `name` so far (pg_stat_database).

    Backends report their counts at the latest when they exit, so read this only when
    nobody but this process's idle pool is connected.
    """
    with psycopg.connect(libpq_url(pg_admin_url()), autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                           "WHERE datname = %s", (name,)).fetchone()
    return int(row[0])


def backends(name: str) -> set[int]:
    """Process ids of the PostgreSQL backends connected to database `name`."""
    with psycopg.connect(libpq_url(pg_admin_url()), autocommit=True) as conn:
        return {pid for (pid,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,))}


def wait_disconnected(name: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while backends(name) and time.monotonic() < deadline:
        time.sleep(0.05)


# --------------------------------------------------------------------------- org and cases


@dataclass
class Org:
    staff: list[int]  # person ids, units interleaved
    users: dict[int, int]  # person id -> user id
    tokens: dict[int, str] = field(default_factory=dict)  # staff person id -> bearer token


def build_org(db: Database, staff: int, units: int) -> Org:
    """Root unit (committee), `units` sub-units with a leader each, `staff` staff members.

    Every person gets an account; all share one Argon2 hash, computed once.
    """
    hashed = hash_password(PASSWORD)
    with db.unit_of_work() as s:
        root = add_unit(s, "ORG", "部机关")
        committee = add_person(s, "COMMITTEE", "审定委员", root, "staff")
        assign_role(s, committee, "committee", root)
        people = [committee]
        subunits = []
        for u in range(units):
            unit = add_unit(s, f"SEC{u + 1:03d}", f"干部{u + 1}科", root)
            leader = add_person(s, f"L{u + 1:03d}", f"科长{u + 1}", unit, "chief")
            assign_role(s, leader, "leader", unit)
            subunits.append(unit)
            people.append(leader)
        members = [add_person(s, f"S{i:06d}", f"干部{i}", subunits[i % units], "staff")
                   for i in range(staff)]
        people += members
        accounts = [User(username=p.code.lower(), person_id=p.id, password_hash=hashed)
                    for p in people]
        s.add_all(accounts)
        s.flush()
        return Org([p.id for p in members], {u.person_id: u.id for u in accounts})


def issue_tokens(db: Database, org: Org) -> None:
    now = utcnow()
    for pid in org.staff:
        org.tokens[pid], _ = issue_token(db, org.users[pid], BEARER, dt.timedelta(hours=6), now)


def month(i: int) -> str:
    return f"{2001 + i // 12}-{i % 12 + 1:02d}"


def start_cases(engine: Engine, org: Org, n: int, first_month: int, say: Say,
                threads: int = 4) -> tuple[list[tuple[int, int]], int]:
    """Start `n` cases: every staff member's case of a month, month after month.

    A few threads overlap the round trips (setup only). Returns the (case id, subject id)
    pairs, in that order, and the next unused month.
    """
    jobs = [(pid, month(first_month + i // len(org.staff)))
            for i, pid in zip(range(n), itertools.cycle(org.staff))]

    def start(job: tuple[int, str]) -> tuple[int, int]:
        pid, period = job
        return engine.start_case(FLOW, pid, period_key=period).id, pid

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        cases = list(pool.map(start, jobs))
    say(f"  {n} cases started ({n / (time.perf_counter() - t0):,.0f}/s)")
    return cases, first_month + -(-n // len(org.staff))


def vacuum_analyze(url: str) -> None:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def count_moved(url: str, case_ids: list[int]) -> int:
    """How many of `case_ids` have left their first state (version > 1)."""
    with psycopg.connect(libpq_url(url)) as conn:
        return conn.execute("SELECT count(*) FROM cases WHERE id = ANY(%s) AND version > 1",
                            (case_ids,)).fetchone()[0]


# --------------------------------------------------------------------------- CPU accounting


@dataclass
class CpuSnapshot:
    """CPU time of the whole machine and of every process, from /proc (seconds)."""

    busy: float  # all CPUs, all but idle and iowait
    procs: dict[int, tuple[str, int, float]]  # pid -> (comm, ppid, user + system)

    @classmethod
    def take(cls) -> CpuSnapshot:
        hz = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
        busy = (sum(ticks) - ticks[3] - ticks[4]) / hz
        procs = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    raw = f.read()
            except OSError:  # gone meanwhile
                continue
            comm = raw[raw.index("(") + 1:raw.rindex(")")]
            rest = raw[raw.rindex(")") + 2:].split()
            procs[int(entry)] = (comm, int(rest[1]), (int(rest[11]) + int(rest[12])) / hz)
        return cls(busy, procs)

    def used_since(self, before: CpuSnapshot,
                   group: Callable[[int, str, int], str | None]) -> dict[str, float]:
        """CPU seconds per group since `before`, for the processes alive now (`group` maps
        pid, comm, ppid to a group name or None), plus the machine's total as "total"."""
        out = {"total": self.busy - before.busy}
        for pid, (comm, ppid, seconds) in self.procs.items():
            name = group(pid, comm, ppid)
            if name:
                out[name] = out.get(name, 0.0) + seconds - before.procs.get(pid, ("", 0, 0.0))[2]
        return out


# --------------------------------------------------------------------------- gunicorn and wrk


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def gunicorn(url: str, workers: int, port: int, log: Path, say: Say) -> Iterator[int]:
    """gunicorn serving the app on 127.0.0.1:`port`; yields its pid; stopped afterwards."""
    env = {**os.environ, "CIVFLOW_DATABASE_URL": url, "CIVFLOW_LOG_LEVEL": "WARNING",
           "CIVFLOW_SECRET_KEY": SECRET_KEY}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    cmd = [str(Path(sys.executable).with_name("gunicorn")), "-w", str(workers),
           "-b", f"127.0.0.1:{port}", "service.app:create_app()"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # Ctrl-C reaches us, not gunicorn
    try:
        wait_healthy(proc, port, log)
        say(f"gunicorn pid {proc.pid}: {workers} workers on 127.0.0.1:{port}")
        yield proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        say("gunicorn stopped")


def wait_healthy(proc: subprocess.Popen, port: int, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n"
                               + log.read_text(errors="replace")[-3000:])
        with suppress(OSError):
            status, _body = http_request(port, "GET", "/healthz")
            if status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer /healthz in time:\n"
                       + log.read_text(errors="replace")[-3000:])


def http_request(port: int, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def request_body() -> bytes:
    return json.dumps({"data": {"summary": SUMMARY}}, ensure_ascii=False).encode()


def action_path(case_id: int) -> str:
    return f"/api/v1/cases/{case_id}/actions/{TRIGGER}"


def warm_up(port: int, plan: list[tuple[int, str]]) -> list[str]:
    """Send the first actions one by one (not timed); the non-200 answers."""
    errors = []
    for case_id, token in plan:
        status, body = http_request(
            port, "POST", action_path(case_id), request_body(),
            {"Authorization": f"Bearer {token}", "If-Match": '"1"',
             "Content-Type": "application/json"})
        if status != 200:
            errors.append(f"{status} {body[:300].decode(errors='replace')}")
    return errors


@dataclass
class WrkResult:
    values: dict[str, int]
    samples: list[str]
    output: str
    cpu_seconds: float
    interrupted: bool

    def __getitem__(self, key: str) -> int:
        return self.values.get(key, 0)

    @property
    def seconds(self) -> float:
        return self["duration_us"] / 1e6

    @property
    def statuses(self) -> dict[int, int]:
        return {int(k.removeprefix("status_")): v for k, v in self.values.items()
                if k.startswith("status_")}

    @property
    def socket_errors(self) -> int:
        return sum(self[k] for k in ("connect_errors", "read_errors", "write_errors",
                                     "timeouts"))


def run_wrk(port: int, plan: list[tuple[int, str]], args: argparse.Namespace, tmp: Path,
            say: Say) -> WrkResult:
    """wrk over `plan` for args.duration seconds or until a thread's slice is used up."""
    plan_file, marker = tmp / "plan.txt", tmp / "exhausted"
    with open(plan_file, "w", encoding="utf-8") as f:
        f.write(request_body().decode() + "\n")
        f.writelines(f"{case_id} {token}\n" for case_id, token in plan)
    cmd = [args.wrk, "-t", str(args.threads), "-c", str(args.connections),
           "-d", f"{args.duration}s", "--timeout", "10s", "--latency", "-s", str(LUA),
           f"http://127.0.0.1:{port}", str(plan_file), str(marker), str(args.threads)]
    say(f"wrk: {len(plan)} distinct actions, {args.threads} threads, "
        f"{args.connections} connections, at most {args.duration}s")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    # A thread whose slice is used up stops, leaving its connections open but silent: a
    # sync worker that accepts one would wait on it. So the run ends with the first such
    # thread (the slices are equal: the others have at most a few cases left).
    markers = [marker.parent / f"{marker.name}.{k}" for k in range(args.threads)]
    interrupted = False
    try:
        while proc.poll() is None:
            time.sleep(0.01)
            if not interrupted and any(m.exists() for m in markers):
                proc.send_signal(signal.SIGINT)  # wrk then stops and reports as usual
                interrupted = True
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0 or "BENCH ok" not in out:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{out}\n{err}")
    values, samples, lines = {}, [], []
    for line in out.splitlines():
        if line.startswith("BENCH sample "):
            samples.append(line.removeprefix("BENCH sample "))
        elif line.startswith("BENCH "):
            _tag, key, value = line.split(" ", 2)
            values[key] = int(value)
        else:
            lines.append(line)
    cpu = (used.ru_utime - children.ru_utime) + (used.ru_stime - children.ru_stime)
    return WrkResult(values, samples, "\n".join(lines), cpu, interrupted)


# --------------------------------------------------------------------------- the engine


def fire_all(engine: Engine, cases: list[tuple[int, int]], latencies: list[float]) -> None:
    """What the view does per request, minus HTTP: one Engine.fire by the case's subject."""
    data = {"summary": SUMMARY}
    for case_id, pid in cases:
        t0 = time.perf_counter()
        engine.fire(case_id, TRIGGER, Actor.person(pid), data=data, expected_version=1,
                    viewer=Viewer(pid))
        latencies.append(time.perf_counter() - t0)


def fire_in_threads(engine: Engine, cases: list[tuple[int, int]], threads: int
                    ) -> tuple[float, list[float]]:
    """Fire on every case, split over `threads` threads started together: (seconds, latencies)."""
    slices = [cases[k::threads] for k in range(threads)]
    latencies: list[list[float]] = [[] for _ in range(threads)]
    failures: list[BaseException] = []
    gate = threading.Barrier(threads + 1)

    def work(k: int) -> None:
        gate.wait()
        try:
            fire_all(engine, slices[k], latencies[k])
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            failures.append(exc)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    gate.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - t0
    if failures:
        raise failures[0]
    return seconds, [x for part in latencies for x in part]


# --------------------------------------------------------------------------- results


@dataclass
class Measured:
    """One row of the table."""

    label: str
    actions: int  # answered 200 (HTTP) or fired (engine)
    seconds: float
    p50: float  # seconds
    p99: float
    python_cpu: float  # seconds: the gunicorn workers, or this process
    pg_cpu: float  # seconds: the PostgreSQL backends serving them
    xacts: float  # database transactions per action

    @property
    def rate(self) -> float:
        return self.actions / self.seconds


@dataclass
class HttpRun:
    row: Measured
    wrk: WrkResult
    warm_errors: list[str]
    moved: int  # HTTP cases that left their first state, by the database
    machine_cpu: dict[str, float]  # seconds per group during the wrk run
    server_log: str  # the end of gunicorn's output (errors are logged there)


def percentile(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[round(p * 10) - 1]


# --------------------------------------------------------------------------- the phases


def setup(url: str, args: argparse.Namespace, say: Say
          ) -> tuple[list[tuple[int, str]], list[tuple[int, int]]]:
    """Flow, org, accounts, tokens, cases. Returns the HTTP plan (case id, token) and the
    engine's cases (case id, subject id)."""
    setup_db = Database(url, connect_args={"options": "-c synchronous_commit=off"})
    try:
        engine = Engine(setup_db)
        engine.publish(DEFINITION.read_text(encoding="utf-8"), str(DEFINITION))
        say(f"building the org: {args.staff} staff in {args.units} units, accounts, tokens")
        org = build_org(setup_db, args.staff, args.units)
        issue_tokens(setup_db, org)
        say(f"starting {args.cases} cases for HTTP")
        http_cases, next_month = start_cases(engine, org, args.cases, 0, say)
        engine_total = len(engine_threads(args)) * args.engine_cases + ENGINE_WARMUP
        say(f"starting {engine_total} cases for the engine")
        engine_cases, _ = start_cases(engine, org, engine_total, next_month, say)
    finally:
        setup_db.dispose()
    vacuum_analyze(url)
    return [(cid, org.tokens[pid]) for cid, pid in http_cases], engine_cases


def engine_threads(args: argparse.Namespace) -> tuple[int, ...]:
    return (1, args.workers) if args.workers > 1 else (1,)


def http_phase(name: str, url: str, plan: list[tuple[int, str]], args: argparse.Namespace,
               tmp: Path, say: Say) -> HttpRun:
    xacts_before = transactions(name)
    port = free_port()
    with gunicorn(url, args.workers, port, tmp / "gunicorn.log", say) as master:
        warm_errors = warm_up(port, plan[:WARMUP])
        if len(warm_errors) == WARMUP:
            raise RuntimeError("every warm-up request failed:\n" + "\n".join(warm_errors))
        before = CpuSnapshot.take()
        wrk = run_wrk(port, plan[WARMUP:], args, tmp, say)
        after = CpuSnapshot.take()
        ours = backends(name)

    def group(pid: int, comm: str, ppid: int) -> str | None:
        if master in (pid, ppid):
            return "gunicorn"
        if pid in ours:
            return "pg"
        return "pg_other" if comm == "postgres" else None

    server_log = (tmp / "gunicorn.log").read_text(errors="replace")[-3000:]
    cpu = after.used_since(before, group)
    cpu["wrk"] = wrk.cpu_seconds
    wait_disconnected(name)  # the workers' backends have reported their transactions
    xacts = (transactions(name) - xacts_before) / (WARMUP + wrk["sent"])
    moved = count_moved(url, [cid for cid, _token in plan])
    say(f"HTTP: {wrk['ok']} actions answered 200 in {wrk.seconds:.1f}s")
    row = Measured(f"HTTP, gunicorn {workers_label(args.workers)}", wrk["ok"], wrk.seconds,
                   wrk["p50_us"] / 1e6, wrk["p99_us"] / 1e6, cpu.get("gunicorn", 0.0),
                   cpu.get("pg", 0.0), xacts)
    return HttpRun(row, wrk, warm_errors, moved, cpu, server_log)


def engine_phase(name: str, url: str, cases: list[tuple[int, int]], args: argparse.Namespace,
                 say: Say) -> list[Measured]:
    db = Database(url)
    rows = []
    try:
        engine = Engine(db)
        fire_all(engine, cases[:ENGINE_WARMUP], [])
        rest = cases[ENGINE_WARMUP:]
        for k, threads in enumerate(engine_threads(args)):
            todo = rest[k * args.engine_cases:(k + 1) * args.engine_cases]
            db.dispose()  # so that pg_stat_database has every transaction so far
            wait_disconnected(name)
            xacts_before = transactions(name)
            before = CpuSnapshot.take()
            seconds, latencies = fire_in_threads(engine, todo, threads)
            after = CpuSnapshot.take()
            ours = backends(name)
            cpu = after.used_since(before, lambda pid, _comm, _ppid, ours=ours: (
                "python" if pid == os.getpid() else "pg" if pid in ours else None))
            db.dispose()
            wait_disconnected(name)
            xacts = (transactions(name) - xacts_before) / len(todo)
            rows.append(Measured(f"engine, Engine.fire, {threads_label(threads)}", len(todo),
                                 seconds, percentile(latencies, 50), percentile(latencies, 99),
                                 cpu.get("python", 0.0), cpu.get("pg", 0.0), xacts))
            say(f"engine, {threads_label(threads)}: {rows[-1].rate:,.0f} actions/s")
    finally:
        db.dispose()
    return rows


# --------------------------------------------------------------------------- report


def threads_label(n: int) -> str:
    return f"{n} thread" + ("s" if n > 1 else "")


def workers_label(n: int) -> str:
    return f"{n} worker" + ("s" if n > 1 else "")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def machine_lines(url: str, wrk: str) -> list[str]:
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in
                         ("Flask", "flask-smorest", "SQLAlchemy", "psycopg", "gunicorn"))
    return [
        f"date     {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"machine  {platform.platform()}, {platform.machine()}, nproc {ncpu}",
        f"         NOTE: wrk, the gunicorn workers and PostgreSQL share these {ncpu} cores, "
        "and so does anything else running on the machine",
        f"python   {platform.python_implementation()} {platform.python_version()}; {versions}",
        f"database {pg_settings(url)}",
        f"client   {wrk}",
    ]


def wrk_version(path: str) -> str:
    out = subprocess.run([path, "-v"], capture_output=True, text=True).stdout
    return out.splitlines()[0].split(" Copyright")[0] if out else "wrk (version unknown)"


def report(args: argparse.Namespace, machine: list[str], load: tuple, http: HttpRun,
           engine: list[Measured]) -> bool:
    """Print the table and the details; True when every HTTP action answered 200."""
    wrk = http.wrk
    non200 = sum(wrk.statuses.values())
    clean = non200 == 0 and not http.warm_errors and wrk.socket_errors == 0
    ended = ("the cases ran out" if wrk.interrupted or wrk["exhausted_threads"]
             else f"{args.duration}s elapsed")
    print(f"\ncivflow HTTP benchmark: POST /api/v1/cases/<id>/actions/{TRIGGER}, every "
          "request the first action of its own case, by the case's subject")
    for line in machine:
        print(line)
    print("load     1/5/15-min load average: "
          + " → ".join("/".join(f"{x:.2f}" for x in avg) for avg in load) + " (start → end)")
    print(f"\nHTTP run: {wrk.seconds:.1f}s ({ended}); {args.workers} gunicorn sync workers; "
          f"wrk {args.threads} threads, {args.connections} connections")

    head = ("", "actions/s", "p50", "p99", "CPU ms/action", "(PostgreSQL)", "DB xacts/action")
    print("\n{:<34}{:>10}{:>10}{:>10}{:>15}{:>13}{:>17}".format(*head))
    for row in [http.row, *engine]:
        print(f"{row.label:<34}{row.rate:>10,.0f}{ms(row.p50):>10}{ms(row.p99):>10}"
              f"{row.python_cpu / row.actions * 1000:>15.2f}"
              f"{row.pg_cpu / row.actions * 1000:>13.2f}{row.xacts:>17.2f}")
    for row in engine:
        label = "ratio HTTP / engine, " + row.label.rsplit(", ", 1)[1]
        print(f"{label:<34}{http.row.rate / row.rate:>10.0%}")
    single = next((row for row in engine if row.label.endswith(threads_label(1))), None)
    if single is not None:
        share = http.row.rate / single.rate
        print(f"target (issue 12): gunicorn with {args.workers} workers ≥ 80% of the "
              f"single-threaded engine: {'reached' if share >= 0.8 else 'NOT reached'} "
              f"({share:.0%})")
    print("  HTTP latency: wrk's, per request, including the wait for a free worker "
          f"({args.connections} connections, {args.workers} workers). Engine latency: per "
          "Engine.fire call.\n  CPU ms/action: the gunicorn workers (HTTP) or this process "
          "(engine), then the PostgreSQL backends serving them.\n  DB xacts/action: "
          "pg_stat_database commits + rollbacks per action (no pre-ping: the pool recycles).")

    print(f"\nHTTP answers: {wrk['ok']:,} × 200 of {wrk['answered']:,}; non-200: {non200}"
          + (" (" + ", ".join(f"{s}: {c}" for s, c in sorted(wrk.statuses.items())) + ")"
             if non200 else "")
          + f"; socket errors: {wrk.socket_errors}; {wrk['sent'] - wrk['answered']} sent but "
            f"still in flight when wrk stopped; warm-up: {WARMUP} requests, "
            f"{len(http.warm_errors)} non-200")
    for sample in wrk.samples + http.warm_errors[:5]:
        print(f"  non-200: {sample}")
    if not clean and http.server_log.strip():
        print("  end of gunicorn's output:\n    "
              + "\n    ".join(http.server_log.strip().splitlines()))
    low = WARMUP - len(http.warm_errors) + wrk["ok"]
    high = low + wrk["sent"] - wrk["answered"]
    verdict = "consistent" if low <= http.moved <= high else "INCONSISTENT"
    print(f"cases the database shows moved: {http.moved:,} (expected {low:,}"
          + (f" to {high:,}" if high > low else "") + f"): {verdict}")

    cpu = http.machine_cpu
    known = sum(cpu.get(k, 0.0) for k in ("gunicorn", "pg", "pg_other", "wrk"))
    shares = [("gunicorn (master + workers)", cpu.get("gunicorn", 0.0)),
              ("PostgreSQL backends of the bench DB", cpu.get("pg", 0.0)),
              ("PostgreSQL, other processes", cpu.get("pg_other", 0.0)),
              ("wrk", cpu.get("wrk", 0.0)),
              ("anything else (e.g. other sessions)", cpu["total"] - known),
              ("machine total", cpu["total"])]
    ncpu = len(os.sched_getaffinity(0))
    print(f"\nCPU during the HTTP run, % of one core ({ncpu * 100}% = every core busy):")
    for label, seconds in shares:
        print(f"  {label:<40}{100 * seconds / wrk.seconds:>6.0f}%")
    print("\nwrk's own report:\n  " + "\n  ".join(wrk.output.strip().splitlines()))
    print("\nresult: " + ("OK, every action answered 200" if clean else
                          "RUN WITH ERRORS (see the non-200 answers and socket errors above)"))
    return clean


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--cases", type=int, default=20000, metavar="N",
                    help="cases for the HTTP run, one request each (20000)")
    ap.add_argument("--workers", type=int, default=2, help="gunicorn sync workers (2)")
    ap.add_argument("--duration", type=int, default=30, metavar="S",
                    help="longest HTTP run in seconds (30); it ends earlier if the cases "
                         "run out")
    ap.add_argument("--connections", type=int, default=8, metavar="C",
                    help="wrk connections (8)")
    ap.add_argument("--threads", type=int, default=2, metavar="T", help="wrk threads (2)")
    ap.add_argument("--engine-cases", type=int, default=3000, metavar="E",
                    help="cases per engine run (3000)")
    ap.add_argument("--staff", type=int, default=2000, metavar="P",
                    help="staff members, each with an account and a token (2000)")
    ap.add_argument("--units", type=int, default=20, metavar="U",
                    help="sub-units, each with a leader (20)")
    ap.add_argument("--wrk", default="wrk", help="the wrk binary (wrk)")
    args = ap.parse_args(argv)
    if min(args.workers, args.duration, args.threads, args.units) < 1 \
            or args.cases < WARMUP + args.threads or args.engine_cases < 100 \
            or args.connections < args.threads or args.staff < args.units:
        ap.error("sizes too small (see --help)")
    if not shutil.which(args.wrk):
        ap.error(f"{args.wrk} not found: install wrk (apt-get install -y wrk)")

    def say(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    load = os.getloadavg()
    with scratch_database(say) as (name, url), \
            tempfile.TemporaryDirectory(prefix="civflow_bench_") as tmp:
        plan, engine_cases = setup(url, args, say)
        http = http_phase(name, url, plan, args, Path(tmp), say)
        engine = engine_phase(name, url, engine_cases, args, say)
        machine = machine_lines(url, wrk_version(args.wrk))
    clean = report(args, machine, (load, os.getloadavg()), http, engine)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
