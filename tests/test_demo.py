"""`civflow demo`: the demo organisation, its accounts, and that running it twice is a no-op.

SQLite only (tmp_path): the command's job is loading data, which the import tests already
cover on both databases.
"""

from __future__ import annotations

from collections import Counter

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from service import demo
from service.app import create_app
from service.cli import main
from workflows.db import Database
from workflows.models import ApiToken, FlowVersion, Person, RoleAssignment, Unit, User
from workflows.org import read_rows

from .conftest import ROOT

DIVISIONS = ("RSJ-GWY", "RSJ-KHJC", "RSJ-GZFL")
ACCOUNTS = (["admin", "owner", "committee1", "leader1", "leader2", "leader3"]
            + [f"staff{i:02d}" for i in range(1, 25)])


def run_demo(url: str):
    res = CliRunner().invoke(main, ["demo", "--db", url,
                                    "--definitions", str(ROOT / "definitions")])
    assert res.exit_code == 0, res.output
    return res


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'demo.db'}"
    first = run_demo(url)
    assert "published: regular-assessment v1" in first.stdout
    assert "demo organisation created: 4 units, 30 people, 30 accounts" in first.stdout
    yield url
    Database(url).dispose()


@pytest.fixture(scope="module")
def client(demo_url):
    return create_app(demo_url, config={"TESTING": True}).test_client()


def test_the_shipped_file_is_valid_and_shaped_as_documented():
    rows, errors = read_rows(demo.PEOPLE_CSV.read_text(encoding="utf-8"))
    assert errors == []
    assert sorted(demo.usernames()) == sorted(ACCOUNTS)
    assert len({r.name for r in rows}) == 30  # no two people share a name
    per_unit = Counter(r.unit_code for r in rows)
    assert per_unit == {"RSJ": 3, **{d: 9 for d in DIVISIONS}}


def test_demo_creates_the_bureau_people_and_roles(demo_url):
    db = Database(demo_url)
    with db.unit_of_work(write=False) as s:
        units = {code: (uid, name, parent) for code, uid, name, parent in s.execute(
            select(Unit.code, Unit.id, Unit.name, Unit.parent_id))}
        assert units["RSJ"][1] == "示范市人力资源和社会保障局" and units["RSJ"][2] is None
        assert {c for c, v in units.items() if v[2] == units["RSJ"][0]} == set(DIVISIONS)
        assert s.execute(select(func.count()).select_from(Person)).scalar() == 30
        people = s.execute(select(User.username, Person.tier, Person.rank, Person.rank_since,
                                  Person.post, Unit.code)
                           .join(Person, Person.id == User.person_id)
                           .join(Unit, Unit.id == Person.unit_id)).all()
        roles = {(u, r, c) for u, r, c in s.execute(
            select(User.username, RoleAssignment.role, Unit.code)
            .join(RoleAssignment, RoleAssignment.person_id == User.person_id)
            .join(Unit, Unit.id == RoleAssignment.unit_id))}
        hashes = {h for (h,) in s.execute(select(User.password_hash))}
    assert sorted(p.username for p in people) == sorted(ACCOUNTS)
    assert all(p.rank and p.rank_since and p.post for p in people)
    assert {p.tier for p in people} == {"chief", "deputy", "staff"}
    assert roles == {("admin", "admin", "RSJ"), ("owner", "process_owner", "RSJ"),
                     ("committee1", "committee", "RSJ"), ("committee1", "leader", "RSJ"),
                     ("leader1", "leader", "RSJ-GWY"),
                     ("leader2", "leader", "RSJ-KHJC"), ("leader3", "leader", "RSJ-GZFL")}
    by_user = {p.username: p for p in people}
    for n, division in enumerate(DIVISIONS, 1):
        assert by_user[f"leader{n}"].tier == "chief" and by_user[f"leader{n}"].code == division
        staff = [f"staff{i:02d}" for i in range(8 * n - 7, 8 * n + 1)]
        assert {by_user[u].code for u in staff} == {division}
        assert {by_user[u].tier for u in staff} == {"deputy", "staff"}
    assert len(hashes) == 1 and None not in hashes  # hashed once, set on every account


def test_every_demo_account_logs_in(client):
    for username in ACCOUNTS:
        r = client.post("/api/v1/auth/token",
                        json={"username": username, "password": demo.PASSWORD})
        assert r.status_code == 201, (username, r.json)
    r = client.post("/api/v1/auth/token", json={"username": "staff01", "password": "nope-nope"})
    assert r.status_code == 401


def test_the_demo_roles_carry_a_case_to_the_end(client, demo_url):
    """staff02 (公务员管理处) → leader1 evaluates → committee1 (the bureau) approves."""

    tokens: dict[str, str] = {}

    def headers(username: str, version: int | None = None) -> dict[str, str]:
        if username not in tokens:
            r = client.post("/api/v1/auth/token",
                            json={"username": username, "password": demo.PASSWORD})
            tokens[username] = r.json["access_token"]
        h = {"Authorization": f"Bearer {tokens[username]}"}
        return h | ({"If-Match": f'"{version}"'} if version else {})

    with Database(demo_url).unit_of_work(write=False) as s:
        subject = s.execute(select(Person.id).where(Person.code == "RS0103")).scalar()
    r = client.post("/api/v1/cases", headers=headers("staff02"),
                    json={"flow": "regular-assessment", "subject_id": subject,
                          "period_key": "2026-05"})
    assert r.status_code == 201, r.json
    case, version = r.json["id"], r.json["version"]
    steps = [("staff02", "submit", {"summary": "本月完成公务员登记复核 120 人次"}),
             ("leader1", "evaluate", {"grade": "好"}),
             ("staff02", "accept", {}),
             ("committee1", "approve", {})]
    for who, trigger, data in steps:
        r = client.post(f"/api/v1/cases/{case}/actions/{trigger}",
                        headers=headers(who, version), json={"data": data})
        assert r.status_code == 200, (who, trigger, r.json)
        version = r.json["version"]
    assert r.json["to"] == "approved"
    r = client.get(f"/api/v1/cases/{case}", headers=headers("leader2"))
    assert r.status_code == 404  # another division's leader does not see it


def test_running_demo_twice_changes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'twice.db'}"
    run_demo(url)
    db = Database(url)

    def snapshot():
        with db.unit_of_work(write=False) as s:
            return [s.execute(select(*t.__table__.c).order_by(t.id)).all()
                    for t in (Unit, Person, RoleAssignment, User, FlowVersion, ApiToken)]

    before = snapshot()
    again = run_demo(url)
    assert snapshot() == before
    assert "unchanged: regular-assessment v1" in again.stdout
    assert "demo organisation already present" in again.stdout
    assert "nothing changed" in again.stdout
    table = again.stdout.splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("USERNAME"))
    assert [line.split()[0] for line in table[header + 1:header + 31]] == demo.usernames()
    assert "committee1  陈建国  示范市人力资源和社会保障局  committee" in again.stdout
    db.dispose()


def test_demo_gives_a_password_only_to_accounts_without_one(tmp_path):
    url = f"sqlite:///{tmp_path / 'repair.db'}"
    run_demo(url)
    db = Database(url)
    with db.unit_of_work() as s:
        s.execute(User.__table__.update().where(User.username == "staff05")
                  .values(password_hash=None))
        kept = s.execute(select(User.password_hash).where(User.username == "admin")).scalar()
    res = run_demo(url)
    assert "password set for 1 account(s)" in res.stdout and "nothing changed" not in res.stdout
    with db.unit_of_work(write=False) as s:
        assert s.execute(select(func.count()).select_from(User)
                         .where(User.password_hash.is_(None))).scalar() == 0
        assert s.execute(select(User.password_hash)
                         .where(User.username == "admin")).scalar() == kept
    db.dispose()


def test_demo_seeds_the_facts_the_rules_read(tmp_path):
    from click.testing import CliRunner
    from sqlalchemy import func, select

    from service.cli import main
    from workflows.db import Database
    from workflows.facts import person_facts
    from workflows.models import AnnualResult, Person

    url = f"sqlite:///{tmp_path / 'facts.db'}"
    result = CliRunner().invoke(main, ["demo", "--db", url])
    assert result.exit_code == 0, result.output
    assert "demo facts loaded: 116" in result.output
    db = Database(url)
    with db.unit_of_work(write=False) as s:
        assert s.execute(select(func.count()).select_from(AnnualResult)
                         .where(AnnualResult.year == 2025)).scalar() == 30
        staff05 = s.execute(select(Person.id).where(Person.code == "RS0106")).scalar()
        facts = person_facts(s, staff05)
    assert [x.kind for x in facts.sanctions] == ["警告"]
    again = CliRunner().invoke(main, ["demo", "--db", url])
    assert "demo facts loaded" not in again.output
    db.dispose()
