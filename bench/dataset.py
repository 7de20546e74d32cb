"""A large generated civflow database on PostgreSQL, for the query and memory benchmarks.

    .venv/bin/python bench/dataset.py [--cases 1000000] [--people N] [--units U]
                                      [--regenerate] [--drop]

The database is named after its size (``civflow_bench_cases_1000000``), created through
the admin URL (``$CIVFLOW_TEST_PG_URL`` or the local default) and **kept** between runs:
generating a million cases takes a few minutes, and the benchmarks only read it. A row in
`settings` (key ``bench.dataset``) records what was generated; a database without it (a run
that was interrupted) or generated with other sizes is dropped and made again. Every use
runs the migrations first, so a new index (a new Alembic revision) reaches the kept data.

What is generated, all in SQL (``INSERT … SELECT … FROM generate_series``) apart from the
small organisation (COPY):

- a unit tree of `--units` units: the root (厅), `units // 25` bureaus (局) under it and the
  other units as divisions (处) spread over the bureaus;
- `--people` people (default: cases / 33, at most 30,000): in each division a chief (正职,
  the division's leader), a deputy (副职) and staff; each bureau has a leader and two
  committee members (审定); the root has a leader, two committee members, a process owner
  and an admin; accounts for the viewers the benchmarks use;
- the four shipped flows, published through `Engine.publish`;
- `--cases` cases over the four flows — regular assessment 88 % (one per person and month,
  back from the current month), annual assessment 8 % (one per person and year), rank
  promotion 2.5 % and frontline dispatch 1.5 % (no period, over three years). Most are
  closed; the current month's regular cases are in 个人小结, the previous month's are
  spread over the open steps, part of the month before waits for the quarter's 审定, a few
  % of the others are open; open cases carry deadlines, some already passed (overdue).
  The case data hold a short summary and, once graded, the grade.

History records and timers are not generated: the lists and the queue do not read them
(the case detail's history then comes back empty for generated cases).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import benchlib
import psycopg
from benchlib import DEFINITIONS, libpq_url, pg_url, say

MARKER = "bench.dataset"
SHARES = {"regular-assessment": 0.88, "annual-assessment": 0.08, "rank-promotion": 0.025,
          "frontline-dispatch": 0.015}  # the rest of the rounding goes to the last flow
SUMMARY = "本月完成干部档案专项审核，参与年度考核方案起草，按时报送人员统计报表。"
VIEWERS = ("leader", "bureau_leader", "committee", "root_committee", "owner", "admin", "staff")


@dataclass
class Dataset:
    """What was generated, as recorded in the database."""

    name: str
    url: str
    cases: int
    people: int
    units: int
    anchor: dt.datetime  # the "now" the cases were generated around
    person: dict[str, int] = field(default_factory=dict)  # viewer -> person id
    user: dict[str, int] = field(default_factory=dict)  # viewer -> user id
    unit: dict[str, int] = field(default_factory=dict)  # "bureau", "division" -> unit id
    flows: dict[str, int] = field(default_factory=dict)  # flow -> version id
    counts: dict[str, int] = field(default_factory=dict)  # flow -> cases
    seconds: float = 0.0
    generated_at: str = ""

    @property
    def last_month(self) -> str:
        first = self.anchor.replace(day=1)
        return (first - dt.timedelta(days=1)).strftime("%Y-%m")


def default_people(cases: int) -> int:
    return max(60, min(30_000, cases // 33))


def default_units(people: int) -> int:
    return max(6, min(300, people // 100))


def database_name(cases: int) -> str:
    return f"civflow_bench_cases_{cases}"


# --------------------------------------------------------------------------- the organisation


def _copy(cur: psycopg.Cursor, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as cp:
        for row in rows:
            cp.write_row(row)


def _org(cur: psycopg.Cursor, people: int, units: int, password_hash: str
         ) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Units, people, roles and accounts; returns (viewer persons, viewer users, units)."""
    bureaus = max(1, units // 25)
    divisions = max(1, units - 1 - bureaus)
    unit_rows: list[tuple] = [(1, "ROOT", "示范省人力资源和社会保障厅", None, "/1/")]
    for b in range(bureaus):
        uid = 2 + b
        unit_rows.append((uid, f"B{b + 1:02d}", f"第{b + 1}局", 1, f"/1/{uid}/"))
    division_of: list[int] = []
    for k in range(divisions):
        uid, bid = 2 + bureaus + k, 2 + k % bureaus
        unit_rows.append((uid, f"D{k + 1:03d}", f"第{k % bureaus + 1}局第{k // bureaus + 1}处",
                          bid, f"/1/{bid}/{uid}/"))
        division_of.append(uid)
    _copy(cur, "units", ("id", "code", "name", "parent_id", "path"), unit_rows)

    person_rows: list[tuple] = []
    roles: list[tuple[int, int, str]] = []  # person, unit, role

    def person(unit: int, tier: str) -> int:
        pid = len(person_rows) + 1
        person_rows.append((pid, f"P{pid:06d}", f"干部{pid:05d}", unit, tier, True))
        return pid

    viewers: dict[str, int] = {}
    viewers["root_leader"] = person(1, "chief")
    roles.append((viewers["root_leader"], 1, "leader"))
    for _ in range(2):
        pid = person(1, "deputy")
        roles.append((pid, 1, "committee"))
        viewers.setdefault("root_committee", pid)
    viewers["owner"] = person(1, "staff")
    roles.append((viewers["owner"], 1, "process_owner"))
    viewers["admin"] = person(1, "staff")
    roles.append((viewers["admin"], 1, "admin"))
    for b in range(bureaus):
        pid = person(2 + b, "chief")
        roles.append((pid, 2 + b, "leader"))
        viewers.setdefault("bureau_leader", pid)
        for _ in range(2):
            pid = person(2 + b, "deputy")
            roles.append((pid, 2 + b, "committee"))
            viewers.setdefault("committee", pid)
    j = 0
    while len(person_rows) < people:
        unit = division_of[j % divisions]
        tier = "chief" if j < divisions else "deputy" if j < 2 * divisions else "staff"
        pid = person(unit, tier)
        if tier == "chief":
            roles.append((pid, unit, "leader"))
            viewers.setdefault("leader", pid)
        elif tier == "staff":
            viewers.setdefault("staff", pid)
        j += 1
    _copy(cur, "people", ("id", "code", "name", "unit_id", "tier", "active"), person_rows)
    _copy(cur, "role_assignments", ("person_id", "unit_id", "role"), roles)
    now = dt.datetime.now(dt.UTC)
    named = {k: viewers[k] for k in VIEWERS if k in viewers}
    users = {name: uid for uid, name in enumerate(named, start=1)}
    _copy(cur, "users", ("id", "username", "person_id", "password_hash", "active", "created_at"),
          [(users[n], f"bench-{n.replace('_', '-')}", pid, password_hash, True, now)
           for n, pid in named.items()])
    for table in ("units", "people", "users"):
        cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))")
    bureau = 2
    division = next(u for u, pid in ((r[3], r[0]) for r in person_rows)
                    if pid == named["leader"])
    return named, users, {"bureau": bureau, "division": division, "root": 1}


# --------------------------------------------------------------------------- the cases

COLUMNS = ("flow_id, version_id, subject_id, unit_id, tier, period_key, state, data, version, "
           "history_seq, state_visit, history_hash, created_at, updated_at, state_entered_at, "
           "deadline_at, closed_at")

# Each flow: one INSERT … SELECT over generate_series(0, n-1) AS g. `r` is a pseudo-random
# 0..99 per case that picks its state; the subject is g mod people (so the unique key
# (flow, subject, period) holds for the periodic flows, where the period is g / people).
REGULAR = """
WITH s AS (
  SELECT g, g %% %(people)s + 1 AS pid, (g / %(people)s)::int AS m, ((g * 7919 + 13) %% 100)::int AS r
  FROM generate_series(0, %(n)s::bigint - 1) AS g),
t AS (
  SELECT s.*, date_trunc('month', %(anchor)s::timestamptz) - make_interval(months => s.m::int)
              AS month,
    CASE WHEN s.m = 0 THEN 'summary'
         WHEN s.m = 1 AND s.r < 10 THEN 'summary'
         WHEN s.m = 1 AND s.r < 25 THEN 'evaluation'
         WHEN s.m = 1 AND s.r < 40 THEN 'feedback'
         WHEN s.m = 1 AND s.r < 60 THEN 'approval'
         WHEN s.m = 2 AND s.r < 20 THEN 'approval'
         ELSE 'approved' END AS state
  FROM s),
u AS (
  SELECT t.*,
    CASE t.state WHEN 'summary' THEN 1 WHEN 'evaluation' THEN 2 WHEN 'feedback' THEN 3
                 WHEN 'approval' THEN 4 ELSE 5 END AS n,
    CASE WHEN t.state = 'approved'
         THEN least(t.month + interval '1 month' + make_interval(days => 20 + t.r %% 10,
                                                                 hours => t.r %% 24),
                    %(anchor)s::timestamptz - interval '1 hour')
         ELSE greatest(t.month + interval '8 hours', %(anchor)s::timestamptz
                       - make_interval(days => t.r %% 10, hours => t.r %% 24)) END AS entered
  FROM t)
INSERT INTO cases ({columns})
SELECT 'regular-assessment', %(vid)s, p.id, p.unit_id, p.tier, to_char(u.month, 'YYYY-MM'),
  u.state,
  CASE u.state WHEN 'summary' THEN '{{}}'::jsonb
               WHEN 'evaluation' THEN jsonb_build_object('summary', %(summary)s::text)
               ELSE jsonb_build_object('summary', %(summary)s::text, 'grade',
                                       (ARRAY['好', '较好', '较好', '一般'])[1 + u.r %% 4]) END,
  u.n, u.n, u.n, md5(u.g::text) || md5((u.g + 1)::text),
  u.month + interval '8 hours', u.entered, u.entered,
  CASE u.state
    WHEN 'summary' THEN u.month + interval '1 month' + interval '7 days'
    WHEN 'evaluation' THEN %(anchor)s::timestamptz + make_interval(days => u.r %% 14 - 5)
    WHEN 'approval' THEN date_trunc('quarter', u.month) + interval '3 months 14 days'
    END,
  CASE WHEN u.state = 'approved' THEN u.entered END
FROM u JOIN people p ON p.id = u.pid
"""

ANNUAL = """
WITH s AS (
  SELECT g, g %% %(people)s + 1 AS pid, (g / %(people)s)::int AS y, ((g * 7919 + 17) %% 100)::int AS r
  FROM generate_series(0, %(n)s::bigint - 1) AS g),
t AS (
  SELECT s.*, extract(year FROM %(anchor)s::timestamptz)::int - 1 - s.y AS year,
    CASE WHEN s.y > 0 THEN 'closed'
         WHEN s.r < 4 THEN 'result' WHEN s.r < 7 THEN 'appeal_window'
         WHEN s.r < 9 THEN 'review' WHEN s.r < 10 THEN 'complaint' ELSE 'closed' END AS state
  FROM s),
u AS (
  SELECT t.*, make_timestamptz(t.year + 1, 1, 5, 9, 0, 0) AS opened,
    CASE WHEN t.state = 'closed'
         THEN make_timestamptz(t.year + 1, 3, 1, 9, 0, 0) + make_interval(days => t.r %% 60)
         ELSE %(anchor)s::timestamptz - make_interval(days => (t.r * 3) %% 40) END AS entered
  FROM t)
INSERT INTO cases ({columns})
SELECT 'annual-assessment', %(vid)s, p.id, p.unit_id, p.tier, u.year::text, u.state,
  jsonb_build_object('summary', %(summary)s::text, 'grade',
                     (ARRAY['优秀', '称职', '称职', '称职', '基本称职'])[1 + u.r %% 5]),
  8, 8, 8, md5(u.g::text) || md5((u.g + 2)::text), u.opened, u.entered, u.entered,
  CASE u.state WHEN 'review' THEN u.entered + interval '30 days'
               WHEN 'complaint' THEN u.entered + interval '60 days' END,
  CASE WHEN u.state = 'closed' THEN u.entered END
FROM u JOIN people p ON p.id = u.pid
"""

# Flows without a period: the subject is spread with a stride, cases over three years.
UNPERIODIC = """
WITH s AS (
  SELECT g, (g * %(stride)s) %% %(people)s + 1 AS pid, ((g * 7919 + %(salt)s) %% 100)::int AS r
  FROM generate_series(0, %(n)s::bigint - 1) AS g),
t AS (
  SELECT s.*, {state} AS state FROM s),
u AS (
  SELECT t.*,
    CASE WHEN t.state IN ({finals})
         THEN %(anchor)s::timestamptz - make_interval(days => 30 + (t.g %% 1065)::int)
         ELSE %(anchor)s::timestamptz - make_interval(days => (t.g %% 90)::int) END AS opened
  FROM t)
INSERT INTO cases ({columns})
SELECT %(flow)s, %(vid)s, p.id, p.unit_id, p.tier, NULL, u.state,
  jsonb_build_object('summary', %(summary)s::text), 4, 4, 4,
  md5(u.g::text) || md5((u.g + 3)::text), u.opened,
  u.opened + make_interval(days => u.r %% 20), u.opened + make_interval(days => u.r %% 20),
  CASE WHEN u.state IN ({deadlines})
       THEN %(anchor)s::timestamptz + make_interval(days => u.r %% 21 - 7) END,
  CASE WHEN u.state IN ({finals}) THEN u.opened + make_interval(days => u.r %% 20) END
FROM u JOIN people p ON p.id = u.pid
"""

UNPERIODIC_FLOWS: dict[str, dict[str, Any]] = {
    "rank-promotion": {
        "stride": 7, "salt": 19,
        "state": "CASE WHEN r < 1 THEN 'recommendation' WHEN r < 2 THEN 'vetting' "
                 "WHEN r < 3 THEN 'approval' WHEN r < 4 THEN 'filing' "
                 "WHEN r < 92 THEN 'filed' ELSE 'rejected' END",
        "finals": "'filed', 'rejected'", "deadlines": "'-'"},
    "frontline-dispatch": {
        "stride": 13, "salt": 23,
        "state": "CASE WHEN r < 5 THEN 'dispatched' WHEN r < 6 THEN 'summary' "
                 "WHEN r < 7 THEN 'evaluation' WHEN r < 8 THEN 'dispatch_approval' "
                 "WHEN r < 85 THEN 'closed' ELSE 'withdrawn' END",
        "finals": "'closed', 'withdrawn'",
        "deadlines": "'summary', 'evaluation', 'dispatch_approval'"},
}


def split(cases: int) -> dict[str, int]:
    counts = {flow: int(cases * share) for flow, share in SHARES.items()}
    counts["frontline-dispatch"] += cases - sum(counts.values())
    return counts


def _cases(cur: psycopg.Cursor, counts: dict[str, int], flows: dict[str, int], people: int,
           anchor: dt.datetime) -> None:
    common = {"people": people, "anchor": anchor, "summary": SUMMARY}
    for flow, n in counts.items():
        if n <= 0:
            continue
        t0 = time.perf_counter()
        params = {**common, "n": n, "vid": flows[flow], "flow": flow}
        if flow == "regular-assessment":
            sql = REGULAR.format(columns=COLUMNS)
        elif flow == "annual-assessment":
            sql = ANNUAL.format(columns=COLUMNS)
        else:
            spec = UNPERIODIC_FLOWS[flow]
            sql = UNPERIODIC.format(columns=COLUMNS, state=spec["state"],
                                    finals=spec["finals"], deadlines=spec["deadlines"])
            params.update(stride=spec["stride"], salt=spec["salt"])
        cur.execute(sql, params)
        say(f"  {flow}: {n:,} cases in {time.perf_counter() - t0:.0f} s")


# --------------------------------------------------------------------------- the database


def _read_marker(url: str) -> dict[str, Any] | None:
    try:
        with psycopg.connect(libpq_url(url)) as conn:
            row = conn.execute("SELECT value FROM settings WHERE key = %s", (MARKER,)).fetchone()
    except psycopg.Error:
        return None
    return json.loads(row[0]) if row else None


def _as_dataset(name: str, url: str, raw: dict[str, Any]) -> Dataset:
    raw = dict(raw)
    raw["anchor"] = dt.datetime.fromisoformat(raw["anchor"])
    return Dataset(name=name, url=url, **raw)


def ensure(cases: int, people: int | None = None, units: int | None = None,
           regenerate: bool = False, name: str | None = None) -> Dataset:
    """The generated database of this size: reused when it is there, else made."""
    from workflows.db import upgrade

    people = people or default_people(cases)
    units = units or default_units(people)
    name = name or database_name(cases)
    url = pg_url(name)
    if benchlib.database_exists(name) and not regenerate:
        raw = _read_marker(url)
        if raw and (raw["cases"], raw["people"], raw["units"]) == (cases, people, units):
            upgrade(url)  # a newer migration (an index) reaches the kept data
            ds = _as_dataset(name, url, raw)
            say(f"using {name}: {cases:,} cases, {people:,} people, {units} units, generated "
                f"{ds.generated_at} in {ds.seconds:.0f} s")
            return ds
        say(f"{name} is incomplete or of other sizes: making it again")
    benchlib.drop_database(name)
    benchlib.create_database(name)
    return generate(name, url, cases, people, units)


def generate(name: str, url: str, cases: int, people: int, units: int) -> Dataset:
    from workflows.accounts import hash_password
    from workflows.db import Database, upgrade
    from workflows.engine import Engine

    if people < units + 5 + 3 * max(1, units // 25):
        raise SystemExit(f"--people {people} is too few for {units} units (each needs a "
                         "leader)")
    t0 = time.perf_counter()
    say(f"generating {name}: {cases:,} cases, {people:,} people, {units} units")
    upgrade(url)
    db = Database(url)
    try:
        engine = Engine(db)
        flows = {}
        for flow in SHARES:
            path = DEFINITIONS / f"{flow}.yaml"
            flows[flow] = engine.publish(path.read_text(encoding="utf-8"), str(path)).version_id
    finally:
        db.dispose()
    anchor = dt.datetime.now(dt.UTC).replace(microsecond=0)
    counts = split(cases)
    with psycopg.connect(libpq_url(url)) as conn:
        with conn.cursor() as cur:
            person, user, unit = _org(cur, people, units, hash_password("civflow-bench"))
            _cases(cur, counts, flows, people, anchor)
        conn.commit()
        say("  VACUUM ANALYZE")
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
        ds = Dataset(name=name, url=url, cases=cases, people=people, units=units, anchor=anchor,
                     person=person, user=user, unit=unit, flows=flows, counts=counts,
                     seconds=round(time.perf_counter() - t0, 1),
                     generated_at=benchlib.now_iso())
        raw = asdict(ds)
        for k in ("name", "url"):
            raw.pop(k)
        raw["anchor"] = anchor.isoformat()
        conn.execute("INSERT INTO settings (key, value) VALUES (%s, %s)",
                     (MARKER, json.dumps(raw, ensure_ascii=False)))
    say(f"generated {name} in {ds.seconds:.0f} s")
    return ds


def table_sizes(url: str) -> str:
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT pg_size_pretty(pg_table_size('cases')), "
            "pg_size_pretty(pg_indexes_size('cases')), "
            "pg_size_pretty(pg_database_size(current_database()))").fetchone()
        open_, overdue = conn.execute(
            "SELECT count(*) FILTER (WHERE closed_at IS NULL), "
            "count(*) FILTER (WHERE closed_at IS NULL AND deadline_at < now()) "
            "FROM cases").fetchone()
    return (f"cases table {rows[0]} + indexes {rows[1]}; database {rows[2]}; "
            f"{open_:,} open cases, {overdue:,} of them overdue now")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--cases", type=int, default=1_000_000)
    ap.add_argument("--people", type=int, default=None)
    ap.add_argument("--units", type=int, default=None)
    ap.add_argument("--regenerate", action="store_true", help="make it again even if kept")
    ap.add_argument("--drop", action="store_true", help="drop the database of this size")
    args = ap.parse_args(argv)
    if args.drop:
        benchlib.drop_database(database_name(args.cases))
        say(f"dropped {database_name(args.cases)}")
        return 0
    ds = ensure(args.cases, args.people, args.units, args.regenerate)
    print(f"{ds.name}: {ds.cases:,} cases ({', '.join(f'{k} {v:,}' for k, v in ds.counts.items())}"
          f"), {ds.people:,} people, {ds.units} units; {table_sizes(ds.url)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
