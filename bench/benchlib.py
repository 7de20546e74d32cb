"""What the benchmarks of issue 7 share: the PostgreSQL admin URL, named and scratch
databases, the machine description, percentiles, progress lines and the JSON summary that
`bench/run_all.py` collects.

The older benchmarks (engine, http, timer) carry their own copies of some of this; they are
left as they are so that each stays runnable on its own.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/x.py` from anywhere
    sys.path.insert(0, str(ROOT))
DEFINITIONS = ROOT / "definitions"
PG_ENV = "CIVFLOW_TEST_PG_URL"
PG_DEFAULT = "postgresql+psycopg://civflow:civflow@127.0.0.1:5432/civflow"


def say(msg: str) -> None:
    """A progress line on stderr; stdout is kept for the results."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- databases


def pg_admin_url() -> str:
    """The URL of a role that may create databases: $CIVFLOW_TEST_PG_URL or the default."""
    url = os.environ.get(PG_ENV) or PG_DEFAULT
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            url = "postgresql+psycopg://" + url[len(plain):]
    return url


def pg_url(name: str) -> str:
    """The SQLAlchemy URL of database `name` on the admin URL's server."""
    return make_url(pg_admin_url()).set(database=name).render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as a libpq conninfo URL, for plain psycopg."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _admin() -> psycopg.Connection:
    return psycopg.connect(libpq_url(pg_admin_url()), autocommit=True)


def database_exists(name: str) -> bool:
    with _admin() as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (name,)).fetchone() is not None


def create_database(name: str) -> None:
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    """Drop a scratch database. Plainly first: the server itself stops an autovacuum worker
    busy in it, whereas FORCE would try to terminate that worker too and fail for a role
    without pg_signal_backend. FORCE only when a client is still connected."""
    with _admin() as conn:
        try:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        except psycopg.errors.ObjectInUse:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def scratch_database(kind: str = "postgresql", prefix: str = "civflow_bench"
                     ) -> Iterator[str]:
    """A new, migrated, empty database, removed afterwards; yields its URL.

    PostgreSQL: `<prefix>_<random>` on the admin URL's server; SQLite: a file in a
    temporary directory."""
    from workflows.db import upgrade

    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix=prefix + "_") as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            upgrade(url)
            yield url
        return
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    create_database(name)
    try:
        url = pg_url(name)
        upgrade(url)
        yield url
    finally:
        drop_database(name)


# --------------------------------------------------------------------------- the machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def pg_version() -> str:
    try:
        with _admin() as conn:
            return "PostgreSQL " + conn.execute("SHOW server_version").fetchone()[0]
    except psycopg.Error as exc:
        return f"PostgreSQL unreachable ({exc.__class__.__name__})"


def machine() -> dict[str, str]:
    """What the figures depend on: CPU, cores, RAM, database and Python versions."""
    return {
        "cpu": _cpu_model(),
        "cores": str(cores()),
        "ram": f"{_ram_gib():.1f} GiB",
        "os": platform.platform(),
        "postgresql": pg_version(),
        "sqlite": f"SQLite {sqlite3.sqlite_version}",
        "python": f"{platform.python_implementation()} {platform.python_version()}; "
                  f"SQLAlchemy {sqlalchemy.__version__}, psycopg {psycopg.__version__}",
    }


def machine_lines() -> list[str]:
    m = machine()
    return [f"date     {now_iso()}",
            f"machine  {m['cpu']}, {m['cores']} cores, {m['ram']} RAM; {m['os']}",
            f"software {m['postgresql']}; {m['sqlite']}; {m['python']}"]


def now_iso() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def load_line(before: Sequence[float], after: Sequence[float]) -> str:
    return ("load     1/5/15-min load average: "
            + " → ".join("/".join(f"{x:.2f}" for x in avg) for avg in (before, after))
            + " (start → end)")


# --------------------------------------------------------------------------- figures


def percentile(values: Sequence[float], p: float) -> float:
    """The p-quantile (0..1) with linear interpolation between the nearest ranks."""
    if not values:
        return math.nan
    xs = sorted(values)
    k = (len(xs) - 1) * p
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def write_summary(path: str | None, bench: str, rows: list[dict[str, Any]],
                  command: str, load: tuple[Sequence[float], Sequence[float]],
                  ok: bool, notes: list[str] | None = None) -> None:
    """The machine-readable summary `run_all.py` puts in docs/BENCHMARKS.md.

    Each row: `what`, `value` (the median or the figure), `ceiling` (or the reference it is
    compared with, may be None), `ratio` (value / ceiling as the bench defines it, may be
    None), `unit`, `note`."""
    if not path:
        return
    Path(path).write_text(json.dumps({
        "bench": bench, "command": command, "date": now_iso(), "ok": ok,
        "load": [list(load[0]), list(load[1])], "rows": rows, "notes": notes or [],
    }, ensure_ascii=False, indent=1), encoding="utf-8")


def command_line(script: str, argv: Sequence[str] | None) -> str:
    import shlex

    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(shlex.quote(a) for a in [".venv/bin/python", script, *args])
