"""Every database test runs twice: on SQLite and on PostgreSQL.

PostgreSQL comes from $CIVFLOW_TEST_PG_URL (`.ci/run` exports it), else the local default
below. A session-wide scratch database is created and migrated once, and emptied before each
test. When PostgreSQL cannot be reached the PostgreSQL half is skipped with a visible
message — except in CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from workflows.db import Database, upgrade
from workflows.engine import Engine
from workflows.models import Base, Unit
from workflows.org import add_person, add_unit, assign_role

# Request logs go to stderr in production; in tests they only slow thousands of requests.
os.environ.setdefault("CIVFLOW_LOG_LEVEL", "WARNING")

ROOT = Path(__file__).resolve().parent.parent
REGULAR = ROOT / "definitions" / "regular-assessment.yaml"
PG_DEFAULT = "postgresql+psycopg://civflow:civflow@127.0.0.1:5432/civflow"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

CST = ZoneInfo("Asia/Shanghai")

_pg_problem: str | None = None


def cst(*args) -> dt.datetime:
    """A moment in Beijing time, for tests on the controlled clock."""
    return dt.datetime(*args, tzinfo=CST)


class Clock:
    """A controlled clock for `Engine(db, clock=...)`: set `.now` to move time."""

    def __init__(self, start: dt.datetime):
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now


def _pg_admin_url() -> str:
    url = os.environ.get("CIVFLOW_TEST_PG_URL") or PG_DEFAULT
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def pytest_report_header(config):
    return f"civflow: PostgreSQL admin URL {_pg_admin_url()} (CI={IN_CI})"


def pytest_terminal_summary(terminalreporter):
    if _pg_problem:
        terminalreporter.write_sep("!", "PostgreSQL tests were SKIPPED", yellow=True)
        terminalreporter.write_line(_pg_problem)
        terminalreporter.write_line("Start PostgreSQL (see .ci/run) to run the full suite.")


@pytest.fixture(scope="session")
def pg_url():
    """A fresh migrated PostgreSQL database for this test session."""
    global _pg_problem
    admin = _pg_admin_url()
    try:
        eng = create_engine(admin, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
        with eng.connect() as c:
            c.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "no PostgreSQL"
        _pg_problem = f"PostgreSQL at {admin} is not reachable: {exc.__class__.__name__}: {exc}"
        if IN_CI:
            pytest.fail(_pg_problem + " — CI requires PostgreSQL", pytrace=False)
        pytest.skip(_pg_problem)
    name = f"civflow_test_{uuid.uuid4().hex[:10]}"
    with eng.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.rsplit("/", 1)[0] + "/" + name
    upgrade(url)
    yield url
    with eng.connect() as c:
        # Plainly first: the server stops an autovacuum worker busy in the database itself,
        # whereas FORCE would try to terminate it too (a superuser's process).
        try:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55006":  # object_in_use: a client
                raise
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    eng.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


def _truncate_all(url: str) -> None:
    eng = create_engine(url)
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with eng.begin() as c:
        c.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    eng.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path, sqlite_template):
    if request.param == "sqlite":
        path = tmp_path / "civflow.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("pg_url")
    _truncate_all(url)
    return url


@pytest.fixture
def pg_only_url(pg_url):
    """For tests that need PostgreSQL itself (real concurrency)."""
    _truncate_all(pg_url)
    return pg_url


@pytest.fixture
def db(db_url):
    database = Database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def engine(db):
    return Engine(db)


@dataclass
class Org:
    """A small organisation department (组织部) for tests.

    ORG (部机关): head `chief` (leader), committee members `c1`, `c2`;
      SEC1 (干部一科): leader `l1`, staff s1…s5 (tier staff), deputy `d1`;
      SEC2 (干部二科): leader `l2`, staff t1, t2.
    """

    ids: dict[str, int]
    units: dict[str, int]

    def __getattr__(self, name: str) -> int:
        try:
            return self.ids[name]
        except KeyError:
            raise AttributeError(name) from None


@pytest.fixture
def org(db) -> Org:
    ids: dict[str, int] = {}
    units: dict[str, int] = {}
    with db.unit_of_work() as s:
        root = add_unit(s, "ORG", "部机关")
        sec1 = add_unit(s, "SEC1", "干部一科", root)
        sec2 = add_unit(s, "SEC2", "干部二科", root)
        units.update(ORG=root.id, SEC1=sec1.id, SEC2=sec2.id)
        people = [("chief", root, "chief"), ("c1", root, "staff"), ("c2", root, "staff"),
                  ("l1", sec1, "chief"), ("d1", sec1, "deputy"), ("l2", sec2, "chief")]
        people += [(f"s{i}", sec1, "staff") for i in range(1, 6)]
        people += [("t1", sec2, "staff"), ("t2", sec2, "staff")]
        made = {}
        for code, unit, tier in people:
            made[code] = add_person(s, code.upper(), f"测试{code}", unit, tier)
            ids[code] = made[code].id
        assign_role(s, made["chief"], "leader", root)
        assign_role(s, made["c1"], "committee", root)
        assign_role(s, made["c2"], "committee", root)
        assign_role(s, made["l1"], "leader", sec1)
        assign_role(s, made["l2"], "leader", sec2)
        assign_role(s, made["c1"], "hr-office")  # a unit-less group
    return Org(ids, units)


@pytest.fixture
def regular(engine):
    """The shipped regular-assessment flow, published."""
    return engine.publish(REGULAR.read_text(encoding="utf-8"), str(REGULAR))


# --------------------------------------------------------------------------- HTTP API

PASSWORD = "civflow-test-pw"
_HASHED: list[str] = []  # one Argon2 hash for the whole session


@dataclass
class ApiClient:
    """A Flask test client and bearer headers for each person of the `org` fixture."""

    client: object
    org: Org
    db: Database
    users: dict[str, int]
    tokens: dict[str, str]

    def headers(self, who: str, **extra: str) -> dict[str, str]:
        if who not in self.tokens:
            # Tokens are issued directly: a password login costs an Argon2 hash each time,
            # and test_api_auth.py covers logging in.
            from workflows.accounts import BEARER, issue_token
            from workflows.engine import utcnow

            self.tokens[who], _ = issue_token(self.db, self.users[who], BEARER,
                                              dt.timedelta(hours=1), utcnow())
        return {"Authorization": f"Bearer {self.tokens[who]}", **extra}

    def get(self, who: str, url: str, **kw):
        return self.client.get(url, headers=self.headers(who, **kw.pop("headers", {})), **kw)

    def post(self, who: str, url: str, **kw):
        return self.client.post(url, headers=self.headers(who, **kw.pop("headers", {})), **kw)

    def put(self, who: str, url: str, **kw):
        return self.client.put(url, headers=self.headers(who, **kw.pop("headers", {})), **kw)

    def patch(self, who: str, url: str, **kw):
        return self.client.patch(url, headers=self.headers(who, **kw.pop("headers", {})), **kw)

    def delete(self, who: str, url: str, **kw):
        return self.client.delete(url, headers=self.headers(who, **kw.pop("headers", {})), **kw)


@pytest.fixture
def api(db, engine, org, regular) -> ApiClient:
    """The service on the test database: every `org` person has an account named by their
    fixture name (chief, c1, l1, s1, …) with password PASSWORD; `owner` is a process owner
    and `admin` an admin (both in ORG)."""
    from service.app import create_app
    from workflows.accounts import hash_password
    from workflows.models import User

    if not _HASHED:
        _HASHED.append(hash_password(PASSWORD))
    hashed = _HASHED[0]
    with db.unit_of_work() as s:
        root = s.get(Unit, org.units["ORG"])
        for name, tier in (("owner", "staff"), ("admin", "staff")):
            p = add_person(s, name.upper(), f"测试{name}", root, tier)
            org.ids[name] = p.id
            assign_role(s, p, "process_owner" if name == "owner" else "admin", root)
        users = {name: User(username=name, person_id=pid, password_hash=hashed)
                 for name, pid in org.ids.items()}
        s.add_all(users.values())
        s.flush()
        user_ids = {name: u.id for name, u in users.items()}
    app = create_app(db.url, config={"TESTING": True, "SECRET_KEY": "test"}, engine=engine)
    client = app.test_client()
    # The API's messages are Chinese unless asked otherwise; the suite reads them in English
    # (tests/test_messages.py checks the Chinese default).
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    return ApiClient(client, org, db, user_ids, {})
