"""Resident memory of a service process with a million cases against an empty database.

    .venv/bin/python bench/memory_bench.py [--cases 1000000] [--requests 2000] [--json PATH]

What is measured (issue 7)
    Two databases with the same organisation and flows: the generated one of
    ``bench/dataset.py`` (``--cases``, kept between runs) and one generated with the same
    people and units but no case at all (also kept). Against each, gunicorn with one sync
    worker (``service.app:create_app()``, the production entry point, no scheduler) is
    started and sent the same ``--requests`` requests one after another, cycling through a
    mix of what people do all day: the queue of a leader, a committee member and the root
    committee; the case list of a process owner with the common filters (flow + state, unit
    subtree, period, overdue, by due date, page 1000), of a leader and of a staff member;
    the ledger's states, rates and rows of last month — and, after each round of those, 5
    of 50 case details and histories spread over the table (on the empty database these
    answer 404).

    The worker's VmRSS (resident now) and VmHWM (the peak) are read from
    ``/proc/<pid>/status`` after start-up, after half the requests and at the end; the
    figures to compare are the ones at the end. "Flat" means the process does not grow
    with the data: nothing loads all cases, only pages and aggregates. The ratio printed is
    million / empty, for VmRSS and VmHWM at the end; growth between half-way and the end
    on the same database would show a leak rather than a data-sized load.

It asserts nothing about memory; it exits 1 when a request that must succeed does not
(anything but 200, and 404 only for a case of the empty database).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import benchlib
import dataset
from benchlib import ROOT, percentile, say

from workflows.accounts import BEARER, issue_token
from workflows.db import Database

FLOW = "regular-assessment"
DETAIL_IDS = 50


def requests_mix(ds: dataset.Dataset, cases: int) -> list[tuple[str, str]]:
    """(viewer, path) pairs; the case ids are those of the generated (large) database."""
    bureau, last = ds.unit["bureau"], ds.last_month
    lists = [("owner", "/api/v1/cases"),
             ("owner", f"/api/v1/cases?flow={FLOW}&state=evaluation"),
             ("owner", f"/api/v1/cases?unit_id={bureau}"),
             ("owner", f"/api/v1/cases?flow={FLOW}&period={last}"),
             ("owner", "/api/v1/cases?overdue=true"),
             ("owner", "/api/v1/cases?sort=deadline_at"),
             ("owner", "/api/v1/cases?page=1000"),
             ("leader", "/api/v1/queue"), ("committee", "/api/v1/queue"),
             ("root_committee", "/api/v1/queue"),
             ("leader", "/api/v1/cases"), ("staff", "/api/v1/cases"),
             ("owner", f"/api/v1/ledger/states?flow={FLOW}&period={last}"),
             ("owner", f"/api/v1/ledger/rates?flow={FLOW}&period={last}"),
             ("owner", f"/api/v1/ledger/cases?flow={FLOW}&period={last}")]
    step = max(1, cases // DETAIL_IDS)
    ids = [1 + k * step for k in range(DETAIL_IDS)]
    details = [("owner", f"/api/v1/cases/{i}" + ("/history" if k % 2 else ""))
               for k, i in enumerate(ids)]
    per_round = len(details) // 10
    mix: list[tuple[str, str]] = []
    for k in range(10):  # a round: every list, then 5 details — 10 rounds, every detail once
        mix += lists + details[k * per_round:(k + 1) * per_round]
    return mix


# --------------------------------------------------------------------------- the process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@contextmanager
def service(url: str, log: Path) -> Iterator[tuple[int, int, int]]:
    """gunicorn, one sync worker, on a free port: yields (port, master pid, worker pid)."""
    port = free_port()
    env = {**os.environ, "CIVFLOW_DATABASE_URL": url, "CIVFLOW_LOG_LEVEL": "WARNING",
           "CIVFLOW_SECRET_KEY": "memory-bench"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    cmd = [str(Path(sys.executable).with_name("gunicorn")), "-w", "1", "-b",
           f"127.0.0.1:{port}", "service.app:create_app()"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {log.read_text()[-2000:]}")
            try:
                if get(port, "/healthz", None)[0] == 200 and children(proc.pid):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not answer: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield port, proc.pid, children(proc.pid)[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def get(port: int, path: str, token: str | None) -> tuple[int, int]:
    """(status, body bytes) of one GET on a new connection (sync workers close it)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        resp = conn.getresponse()
        return resp.status, len(resp.read())
    finally:
        conn.close()


# --------------------------------------------------------------------------- the run


@dataclass
class Run:
    label: str
    cases: int
    start: dict[str, int] = field(default_factory=dict)
    half: dict[str, int] = field(default_factory=dict)
    end: dict[str, int] = field(default_factory=dict)
    master: dict[str, int] = field(default_factory=dict)
    statuses: Counter = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)
    body_bytes: int = 0


def measure(ds: dataset.Dataset, label: str, mix: list[tuple[str, str]], n: int,
            tmp: Path) -> Run:
    db = Database(ds.url)
    try:
        tokens = {who: issue_token(db, uid, BEARER, dt.timedelta(hours=2),
                                   dt.datetime.now(dt.UTC))[0] for who, uid in ds.user.items()}
    finally:
        db.dispose()
    run = Run(label, ds.cases)
    with service(ds.url, tmp / f"{label}.log") as (port, master, worker):
        say(f"{label}: gunicorn worker pid {worker} on port {port}; {n} requests")
        run.start = status(worker)
        for i in range(n):
            who, path = mix[i % len(mix)]
            t0 = time.perf_counter()
            code, size = get(port, path, tokens[who])
            run.ms.append((time.perf_counter() - t0) * 1000)
            run.statuses[code] += 1
            run.body_bytes = max(run.body_bytes, size)
            detail = path.startswith("/api/v1/cases/")
            if code != 200 and not (code == 404 and detail and ds.cases == 0):
                run.unexpected.append(f"{code} {who} {path}")
            if i + 1 == n // 2:
                run.half = status(worker)
        run.end = status(worker)
        run.master = status(master)
    return run


def mb(kb: int | None) -> str:
    return f"{kb / 1024:.1f}" if kb else "-"


def report(runs: list[Run], n: int, command: str, load: tuple, sizes: str) -> None:
    print(f"\ncivflow memory benchmark: one gunicorn sync worker, {n:,} requests of the same "
          "mix against each database")
    print(f"command  {command}")
    for line in benchlib.machine_lines():
        print(line)
    print(benchlib.load_line(*load))
    print(f"data     {sizes}")
    print(f"\n{'database':<26}{'start':>8}{'half':>8}{'end':>8}{'peak':>8}{'master':>8}"
          f"{'p50 ms':>8}{'p95 ms':>8}   answers")
    for r in runs:
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(r.statuses.items()))
        print(f"{r.label:<26}{mb(r.start.get('VmRSS')):>8}{mb(r.half.get('VmRSS')):>8}"
              f"{mb(r.end.get('VmRSS')):>8}{mb(r.end.get('VmHWM')):>8}"
              f"{mb(r.master.get('VmRSS')):>8}{percentile(r.ms, .5):>8.1f}"
              f"{percentile(r.ms, .95):>8.1f}   {answers}")
    print("(MB: the worker's VmRSS after start-up, half-way and at the end, its VmHWM at the "
          "end, and the master's VmRSS)")
    empty, full = runs
    rss = full.end["VmRSS"] / empty.end["VmRSS"]
    hwm = full.end["VmHWM"] / empty.end["VmHWM"]
    grow = full.end["VmRSS"] / full.half["VmRSS"]
    print(f"ratio    {full.cases:,} cases / empty: VmRSS ×{rss:.2f}, VmHWM ×{hwm:.2f}; "
          f"second half of the requests on {full.cases:,} cases: VmRSS ×{grow:.2f}")
    flat = hwm <= 1.25 and grow <= 1.05
    print("target: resident memory flat with the data (peak within 25 % of the empty "
          f"database's, no growth over the second half): {'reached' if flat else 'NOT reached'}")
    for r in runs:
        for line in r.unexpected[:10]:
            print(f"unexpected answer on {r.label}: {line}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--cases", type=int, default=1_000_000)
    ap.add_argument("--people", type=int, default=None, help="default: cases / 33, ≤ 30,000")
    ap.add_argument("--units", type=int, default=None, help="default: people / 100, ≤ 300")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--regenerate", action="store_true", help="make both databases again")
    ap.add_argument("--database", default=None,
                    help="name of the large database (default by size); the empty one is "
                         "this name + _empty")
    ap.add_argument("--drop", action="store_true", help="drop both databases afterwards")
    ap.add_argument("--json", default=None, help="write a summary for run_all.py here")
    args = ap.parse_args(argv)
    if args.cases < 1000 or args.requests < 2:
        ap.error("--cases must be at least 1000 and --requests at least 2")
    command = benchlib.command_line("bench/memory_bench.py", argv)
    load = os.getloadavg()
    full = dataset.ensure(args.cases, args.people, args.units, args.regenerate, args.database)
    empty = dataset.ensure(0, full.people, full.units, args.regenerate,
                           name=f"{args.database}_empty" if args.database
                           else f"civflow_bench_cases_0_people_{full.people}")
    mix = requests_mix(full, full.cases)
    try:
        with tempfile.TemporaryDirectory(prefix="memory_bench_") as tmp:
            runs = [measure(empty, "empty (0 cases)", mix, args.requests, Path(tmp)),
                    measure(full, f"{full.cases:,} cases", mix, args.requests, Path(tmp))]
        sizes = dataset.table_sizes(full.url)
    finally:
        if args.drop:
            for ds in (full, empty):
                benchlib.drop_database(ds.name)
    load = (load, os.getloadavg())
    report(runs, args.requests, command, load, sizes)
    ok = not any(r.unexpected for r in runs)
    e, f = runs
    benchlib.write_summary(args.json, "memory", [
        {"what": f"worker VmRSS after {args.requests:,} requests, {full.cases:,} cases vs empty",
         "value": round(f.end["VmRSS"] / 1024, 1), "ceiling": round(e.end["VmRSS"] / 1024, 1),
         "ratio": round(f.end["VmRSS"] / e.end["VmRSS"], 2), "unit": "MB",
         "note": f"peak {mb(f.end['VmHWM'])} vs {mb(e.end['VmHWM'])} MB"},
        {"what": "request p50, same mix", "value": round(percentile(f.ms, .5), 1),
         "ceiling": round(percentile(e.ms, .5), 1),
         "ratio": round(percentile(f.ms, .5) / percentile(e.ms, .5), 2), "unit": "ms",
         "note": f"p95 {percentile(f.ms, .95):.0f} vs {percentile(e.ms, .95):.0f} ms"}],
        command, load, ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
