"""Queue and case-list latency with a million cases, against the same SQL issued directly.

    .venv/bin/python bench/query_bench.py [--cases 1000000] [--people N] [--units U]
                                          [--rounds 100] [--only NAME,…]
                                          [--explain miss|all|none] [--regenerate]
                                          [--json PATH]

What is measured (issue 7)
    The generated database of ``bench/dataset.py`` (kept between runs; made on first use,
    a few minutes for a million cases). For each scenario — the queue (待办) of a division
    leader, a bureau leader, a bureau committee member (unit subtree), the root committee
    and a process owner; the case list of a process owner with the common filters (flow +
    state, unit subtree, period, overdue, sorted by due date, page 1 and a deep page, a
    search by person code), and the lists of a leader, a committee member and a staff
    member — it times the real function, ``Engine.queue`` or ``Engine.list_cases`` (session,
    statement building, result rows, state labels, the actions of each queue row), and the
    ceiling: the very statements that call sent, captured once with their parameters
    (SQLAlchemy's ``before_cursor_execute``), replayed through plain psycopg on one open
    connection in one transaction, every row fetched. The two take turns, in alternating
    order, ``--rounds`` times per scenario; the figures are p50/p95/p99 in ms. The target
    (issue 7) is p95 ≤ 25 ms for the real function.

    Before timing, each scenario is checked: the engine's page and total must equal the
    ceiling's (the same case ids in the same order). ``--explain miss`` (the default)
    prints EXPLAIN (ANALYZE, BUFFERS) of the count and page statements of every scenario
    whose p95 misses the target; ``all`` of every scenario.

The engine's clock is the moment the data were generated around, so overdue and the
deadlines are the same whenever the kept database is used. It is a benchmark, not a test:
it asserts nothing about time; it exits 1 when the engine's answer differs from the SQL's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import benchlib
import dataset
import psycopg
from benchlib import libpq_url, percentile, say
from sqlalchemy import event

from workflows.access import load_viewer
from workflows.db import Database
from workflows.engine import Engine
from workflows.queries import CaseFilter

TARGET_MS = 25.0
REGULAR = "regular-assessment"


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # queue | list
    viewer: str  # a key of Dataset.person
    filter: CaseFilter
    what: str


def scenarios(ds: dataset.Dataset) -> list[Scenario]:
    bureau, last = ds.unit["bureau"], ds.last_month
    f = CaseFilter
    return [
        Scenario("queue/leader", "queue", "leader", f(), "a division leader (处长): 评鉴"),
        Scenario("queue/bureau-leader", "queue", "bureau_leader", f(),
                 "a bureau leader: 评鉴 in the bureau's subtree"),
        Scenario("queue/committee", "queue", "committee", f(),
                 "a bureau committee member: 审定 in the bureau's subtree"),
        Scenario("queue/root-committee", "queue", "root_committee", f(),
                 "a committee member of the root: 审定 everywhere"),
        Scenario("queue/root-committee-p20", "queue", "root_committee", f(page=20),
                 "the same, page 20"),
        Scenario("queue/owner", "queue", "owner", f(), "a process owner (acts on own cases)"),
        Scenario("list/owner-flow-state", "list", "owner", f(flow=REGULAR, state="evaluation"),
                 "owner: flow + state"),
        Scenario("list/owner-unit", "list", "owner", f(unit_id=bureau),
                 "owner: a bureau's subtree"),
        Scenario("list/owner-period", "list", "owner", f(flow=REGULAR, period=last),
                 "owner: flow + last month"),
        Scenario("list/owner-overdue", "list", "owner", f(overdue=True), "owner: overdue"),
        Scenario("list/owner-by-due", "list", "owner", f(sort="deadline_at"),
                 "owner: every case, sorted by due date"),
        Scenario("list/owner-all", "list", "owner", f(), "owner: every case, newest first"),
        Scenario("list/owner-deep", "list", "owner", f(page=1000),
                 "owner: every case, page 1000 (offset 19,980)"),
        Scenario("list/owner-search", "list", "owner", f(text="P00012"),
                 "owner: search by person code"),
        Scenario("list/leader", "list", "leader", f(), "division leader: own subtree"),
        Scenario("list/committee-period", "list", "committee", f(flow=REGULAR, period=last),
                 "bureau committee: flow + last month"),
        Scenario("list/committee-overdue", "list", "committee",
                 f(overdue=True, sort="deadline_at"), "bureau committee: overdue, by due"),
        Scenario("list/staff", "list", "staff", f(), "a staff member: own cases"),
    ]


# --------------------------------------------------------------------------- the two sides

Statement = tuple[str, Any]


class Recorder:
    """Every statement the engine sends while `on`, with its parameters."""

    def __init__(self, db: Database):
        self.on = False
        self.statements: list[Statement] = []
        event.listen(db.engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn, _cursor, statement, parameters, _context, _many) -> None:
        if self.on:
            self.statements.append((statement, parameters))

    def capture(self, fn) -> tuple[Any, list[Statement]]:
        self.statements, self.on = [], True
        try:
            return fn(), self.statements
        finally:
            self.on = False


class Ceiling:
    """The captured statements, replayed through psycopg: one transaction, all rows read."""

    def __init__(self, url: str):
        self.conn = psycopg.connect(libpq_url(url))

    def run(self, statements: list[Statement], seconds: list[float] | None = None
            ) -> list[list[tuple]]:
        """Run them in one transaction; `seconds` receives each statement's time."""
        out = []
        with self.conn.cursor() as cur:
            for sql, params in statements:
                t0 = time.perf_counter()
                cur.execute(sql, params)
                out.append(cur.fetchall())
                if seconds is not None:
                    seconds.append(time.perf_counter() - t0)
        self.conn.commit()
        return out

    def explain(self, sql: str, params: Any) -> str:
        with self.conn.cursor() as cur:
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
            plan = "\n".join(r[0] for r in cur.fetchall())
        self.conn.commit()
        return plan

    def close(self) -> None:
        self.conn.close()


def role(sql: str) -> str:
    """What a captured statement is for: the count, the page, or other (flows, units)."""
    if "count(*)" in sql:
        return "count"
    if "LIMIT" in sql and " cases" in sql:
        return "page"
    return "other"


def page_and_total(statements: list[Statement], results: list[list[tuple]]
                   ) -> tuple[list[int], int]:
    """The ceiling's answer: the ids of the page statement and the count."""
    ids: list[int] | None = None
    total: int | None = None
    for (sql, _p), rows in zip(statements, results, strict=True):
        if role(sql) == "count":
            total = rows[0][0]
        elif role(sql) == "page":
            ids = [r[0] for r in rows]
    if ids is None or total is None:
        raise RuntimeError("no page or count statement among: "
                           + " | ".join(s.split("\n", 1)[0] for s, _ in statements))
    return ids, total


# --------------------------------------------------------------------------- measuring


@dataclass
class Measured:
    scenario: Scenario
    rows: int
    total: int
    statements: int
    engine: list[float] = field(default_factory=list)  # ms per call
    ceiling: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)  # ceiling ms per statement role
    same: bool = True
    problem: str = ""
    plans: list[str] = field(default_factory=list)

    def p(self, side: str, q: float) -> float:
        return percentile(getattr(self, side), q)

    def part(self, name: str) -> float:
        return percentile(self.parts.get(name, []), 0.5)

    @property
    def ratio(self) -> float:
        """engine p50 / ceiling p50: how many times the SQL alone the real call takes."""
        return self.p("engine", 0.5) / self.p("ceiling", 0.5)

    @property
    def meets(self) -> bool:
        return self.p("engine", 0.95) <= TARGET_MS


def measure(engine: Engine, recorder: Recorder, ceiling: Ceiling, sc: Scenario, viewer,
            rounds: int, explain: str) -> Measured:
    def call():
        fn = engine.queue if sc.kind == "queue" else engine.list_cases
        return fn(viewer, sc.filter)

    for _ in range(2):  # compiled flows cached, statements prepared
        call()
    (rows, total), statements = recorder.capture(call)
    ids, count = page_and_total(statements, ceiling.run(statements))
    m = Measured(sc, len(rows), total, len(statements))
    if [r.id for r in rows] != ids or total != count:
        m.same = False
        m.problem = (f"engine {[r.id for r in rows][:5]}… total {total}; "
                     f"SQL {ids[:5]}… total {count}")
    for i in range(rounds):
        for side in (("engine", "ceiling") if i % 2 == 0 else ("ceiling", "engine")):
            t0 = time.perf_counter()
            if side == "engine":
                call()
            else:
                each: list[float] = []
                ceiling.run(statements, each)
                for (sql, _p), sec in zip(statements, each, strict=True):
                    m.parts.setdefault(role(sql), []).append(sec * 1000)
            getattr(m, side).append((time.perf_counter() - t0) * 1000)
    if explain == "all" or (explain == "miss" and not m.meets):
        for sql, params in statements:
            if role(sql) != "other":
                m.plans.append(f"-- {sql}\n-- {params}\n{ceiling.explain(sql, params)}")
    return m


# --------------------------------------------------------------------------- report


def report(ds: dataset.Dataset, results: list[Measured], rounds: int, command: str,
           load: tuple, sizes: str) -> None:
    print(f"\ncivflow query benchmark: queue and case lists on {ds.cases:,} cases "
          f"({ds.people:,} people, {ds.units} units); {rounds} rounds per scenario, engine "
          "and ceiling alternating")
    print(f"command  {command}")
    for line in benchlib.machine_lines():
        print(line)
    print(benchlib.load_line(*load))
    print(f"data     {ds.name}: {sizes}; generated {ds.generated_at} in {ds.seconds:.0f} s")
    print("ceiling  the same statements with the same parameters through plain psycopg, one "
          "transaction, rows fetched")
    head = (f"\n{'scenario':<27}{'rows':>5}{'total':>9}{'SQL':>4}"
            f"{'engine p50':>11}{'p95':>7}{'p99':>7}{'SQL p50':>9}{'p95':>7}{'p99':>7}"
            f"{'ratio':>7}{'count':>7}{'page':>6}  p95 ≤ {TARGET_MS:g} ms")
    print(head)
    for m in results:
        def e(q: float, m: Measured = m) -> float:
            return m.p("engine", q)

        def c(q: float, m: Measured = m) -> float:
            return m.p("ceiling", q)

        print(f"{m.scenario.name:<27}{m.rows:>5}{m.total:>9,}{m.statements:>4}"
              f"{e(.5):>11.1f}{e(.95):>7.1f}{e(.99):>7.1f}{c(.5):>9.1f}{c(.95):>7.1f}"
              f"{c(.99):>7.1f}{m.ratio:>6.2f}×{m.part('count'):>7.1f}{m.part('page'):>6.1f}"
              f"  {'ok' if m.meets else 'MISS'}")
    print("(ms. SQL = statements per call (flows, unit subtrees, count, page), then the "
          "ceiling's p50/p95/p99;\n ratio = engine p50 / SQL p50; count, page = p50 of those "
          "two statements alone in the ceiling)")
    misses = [m for m in results if not m.meets]
    print(f"target: p95 ≤ {TARGET_MS:g} ms for every scenario: "
          + ("reached" if not misses else
             f"NOT reached ({len(misses)} miss: {', '.join(m.scenario.name for m in misses)})"))
    wrong = [m for m in results if not m.same]
    print("answers: " + ("the engine's page and total equal the SQL's in every scenario"
                         if not wrong else "DIFFER: " + "; ".join(
                             f"{m.scenario.name}: {m.problem}" for m in wrong)))
    for m in results:
        for plan in m.plans:
            print(f"\nEXPLAIN (ANALYZE, BUFFERS) — {m.scenario.name}\n{plan}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--cases", type=int, default=1_000_000)
    ap.add_argument("--people", type=int, default=None, help="default: cases / 33, ≤ 30,000")
    ap.add_argument("--units", type=int, default=None, help="default: people / 100, ≤ 300")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--only", default="", help="comma-separated scenario names (or prefixes)")
    ap.add_argument("--explain", choices=("miss", "all", "none"), default="miss")
    ap.add_argument("--regenerate", action="store_true", help="make the data again")
    ap.add_argument("--database", default=None, help="database name (default by size)")
    ap.add_argument("--drop", action="store_true", help="drop the database afterwards")
    ap.add_argument("--json", default=None, help="write a summary for run_all.py here")
    args = ap.parse_args(argv)
    if args.cases < 1000 or args.rounds < 1:
        ap.error("--cases must be at least 1000 and --rounds at least 1")
    command = benchlib.command_line("bench/query_bench.py", argv)
    load = os.getloadavg()
    ds = dataset.ensure(args.cases, args.people, args.units, args.regenerate, args.database)
    db = Database(ds.url)
    engine = Engine(db, clock=lambda: ds.anchor)
    recorder = Recorder(db)
    ceiling = Ceiling(ds.url)
    chosen = [sc for sc in scenarios(ds) if not args.only or any(
        sc.name.startswith(p.strip()) for p in args.only.split(","))]
    results: list[Measured] = []
    try:
        with db.unit_of_work(write=False) as s:
            viewers = {k: load_viewer(s, pid) for k, pid in ds.person.items()}
        for sc in chosen:
            m = measure(engine, recorder, ceiling, sc, viewers[sc.viewer], args.rounds,
                        args.explain)
            say(f"{sc.name}: engine p95 {m.p('engine', .95):.1f} ms, SQL p95 "
                f"{m.p('ceiling', .95):.1f} ms ({m.total:,} rows match)")
            results.append(m)
        sizes = dataset.table_sizes(ds.url)
    finally:
        ceiling.close()
        db.dispose()
        if args.drop:
            benchlib.drop_database(ds.name)
    load = (load, os.getloadavg())
    report(ds, results, args.rounds, command, load, sizes)
    ok = all(m.same for m in results)
    benchlib.write_summary(args.json, "query", [
        {"what": f"{m.scenario.name} p95", "value": round(m.p("engine", .95), 2),
         "ceiling": round(m.p("ceiling", .95), 2), "ratio": round(m.ratio, 2), "unit": "ms",
         "note": ("ok" if m.meets else "MISS") + f" (p50 {m.p('engine', .5):.1f} ms, "
                 f"{m.total:,} matching)"} for m in results], command, load, ok,
        [f"{ds.cases:,} cases, {ds.people:,} people, {ds.units} units; target p95 ≤ "
         f"{TARGET_MS:g} ms; median engine/SQL ratio "
         f"{statistics.median(m.ratio for m in results):.2f}×" if results else ""])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
