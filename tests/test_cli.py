"""The `civflow` command line and the first-run path of `serve`."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from service.app import create_app
from service.cli import main, prepare
from workflows.accounts import authenticate
from workflows.db import Database, upgrade
from workflows.models import Case, FlowVersion, Person, User
from workflows.org import import_people

from .conftest import REGULAR, ROOT


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def test_validate_exit_codes(tmp_path):
    ok = run("validate", ROOT / "definitions")
    assert ok.exit_code == 0, ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(REGULAR.read_text(encoding="utf-8").replace("to: approved", "to: aproved"),
                   encoding="utf-8")
    res = run("validate", REGULAR, bad)
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.startswith(str(bad))]
    assert f"{bad}: transitions[6].to: unknown state 'aproved' (did you mean 'approved'?)" \
        in lines[0]
    assert any("state 'approved' is unreachable" in ln for ln in lines)
    res = run("validate", bad, tmp_path / "missing.yaml")
    assert res.exit_code == 2
    assert "missing.yaml: <file>: cannot read" in res.output
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("flow: \xe9".encode("latin-1"))
    assert run("validate", latin).exit_code == 2


def test_publish_init_start_fire_show(db_url, org, tmp_path):
    res = run("publish", REGULAR, "--db", db_url)
    assert res.exit_code == 0 and "published: regular-assessment v1" in res.output
    res = run("publish", REGULAR, "--db", db_url)
    assert "unchanged: regular-assessment v1" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("flow: x\n", encoding="utf-8")
    res = run("publish", REGULAR, bad, "--db", db_url)
    assert res.exit_code == 1 and "nothing published" in res.output
    res = run("start", "regular-assessment", "S1", "--period", "2026-11", "--db", db_url)
    assert res.exit_code == 0, res.output
    case_id = res.output.split()[1].rstrip(":")
    res = run("fire", case_id, "submit", "--as", "S1", "--data", '{"summary": "小结"}',
              "--db", db_url)
    assert res.exit_code == 0 and "summary → evaluation (version 2)" in res.output
    res = run("fire", case_id, "evaluate", "--as", "S2", "--data", '{"grade": "好"}',
              "--db", db_url)
    assert res.exit_code == 1 and '"rule": "role"' in res.output
    res = run("show", case_id, "--db", db_url)
    assert '"state": "evaluation"' in res.output and '"trigger": "submit"' in res.output



def test_the_calendar_file_is_validated_among_the_flows_and_not_published(db_url, tmp_path):
    """Issue 14.8: `civflow validate definitions/*.yaml` and `publish definitions/*.yaml`
    (the natural commands) check calendar.yaml as a calendar and publish only the flows."""
    files = sorted((ROOT / "definitions").glob("*.yaml"))
    assert any(f.name == "calendar.yaml" for f in files)
    res = run("validate", *files)
    assert res.exit_code == 0, res.output
    assert "calendar.yaml: ok: working-day calendar" in res.output
    res = run("publish", *files, "--db", db_url)
    assert res.exit_code == 0, res.output
    assert "skipped: " in res.output and "calendar.yaml (the working-day calendar" in res.output
    assert res.output.count("published: ") == len(files) - 1
    # A bad calendar: every problem, by path, and nothing is published.
    folder = tmp_path / "defs"
    folder.mkdir()
    (folder / "xx.yaml").write_text(
        REGULAR.read_text(encoding="utf-8").replace("flow: regular-assessment", "flow: xx"),
        encoding="utf-8")
    bad = folder / "calendar.yaml"
    bad.write_text("holidays: [2027-02-30, 2027-01-01]\nworkdays: [2027-01-01]\n"
                   "years: [2028]\nextra: 1\n", encoding="utf-8")
    res = run("validate", folder)
    assert res.exit_code == 1
    assert res.stdout.splitlines() == [
        f"{bad}: extra: unknown key; a calendar file has holidays, workdays, years",
        f"{bad}: holidays[0]: '2027-02-30' is not a date YYYY-MM-DD",
        f"{bad}: workdays: 2027-01-01 is also listed under holidays",
        f"{bad}: years[0]: 2028 is listed as entered in full but no holiday of 2028 is listed"]
    res = run("publish", folder, "--db", db_url)
    assert res.exit_code == 1 and "nothing published" in res.output
    db = Database(db_url)
    with db.unit_of_work(write=False) as s:
        assert s.execute(select(FlowVersion.id).where(FlowVersion.flow_id == "xx")).first() is None
    db.dispose()
    bad.write_text("holidays: [2027-01-01\n", encoding="utf-8")
    res = run("validate", bad)
    assert res.exit_code == 1 and f"{bad}: <root>: not valid YAML" in res.output

def test_first_run_prepares_everything(tmp_path):
    url = f"sqlite:///{tmp_path / 'first.db'}"
    db = prepare(url, ROOT / "definitions", demo=True).db
    with db.unit_of_work(write=False) as s:
        hashes = s.execute(select(User.password_hash)).scalars().all()
    prepare(url, ROOT / "definitions", demo=True)  # a second start changes nothing
    with db.unit_of_work(write=False) as s:
        shipped = [f for f in (ROOT / "definitions").glob("*.yaml") if f.name != "calendar.yaml"]
        assert s.execute(select(func.count()).select_from(FlowVersion)).scalar() == len(shipped)
        assert s.execute(select(func.count()).select_from(Person)).scalar() == 30
        # The first start replayed the demo's year of history (checked in test_demo.py).
        cases = s.execute(select(func.count()).select_from(Case)).scalar()
        assert cases > 0
        assert s.execute(select(User.password_hash)).scalars().all() == hashes
    client = create_app(url).test_client()
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json == {"status": "ok", "database": "sqlite"}
    assert client.get("/api/v1/cases").status_code == 401  # everything else needs a login
    r = client.post("/api/v1/auth/token", json={"username": "staff01",
                                                "password": "civflow-demo"})
    assert r.status_code == 201  # the README's first login works at once
    r = client.get("/api/v1/cases", headers={"Authorization": f"Bearer {r.json['access_token']}"})
    assert r.status_code == 200 and 0 < r.json["total"] < cases  # staff01's own months
    Database(url).dispose()


def test_first_run_leaves_a_database_with_an_organisation_alone(tmp_path):
    url = f"sqlite:///{tmp_path / 'own.db'}"
    upgrade(url)
    import_people(Database(url), "unit_code,unit_name,person_code,name\nX,某单位,P1,张三\n")
    db = prepare(url, ROOT / "definitions", demo=True).db
    with db.unit_of_work(write=False) as s:
        assert s.execute(select(func.count()).select_from(Person)).scalar() == 1
        assert s.execute(select(func.count()).select_from(User)).scalar() == 0
    prepare(url, tmp_path / "nowhere", demo=False)  # a missing folder is reported, not fatal
    db.dispose()


# --------------------------------------------------------------------------- accounts


@pytest.fixture
def sqlite_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'accounts.db'}"
    upgrade(url)
    import_people(Database(url), "unit_code,unit_name,person_code,name,roles\n"
                                 "ORG,示范单位,P1,张三,admin\nORG,,P2,李四,\n")
    yield url
    Database(url).dispose()


def test_create_user_reads_the_password_from_stdin(sqlite_url):
    res = run("create-user", "zhangsan", "--person", "P1", "--password-stdin",
              "--db", sqlite_url, input="correct horse\n")
    assert res.exit_code == 0, res.output
    assert res.stdout == "created user zhangsan (person P1)\n"
    db = Database(sqlite_url)
    user = authenticate(db, "zhangsan", "correct horse")  # the newline is not part of it
    with db.unit_of_work(write=False) as s:
        assert s.get(Person, user.person_id).code == "P1"
    res = run("create-user", "zhangsan", "--password-stdin", "--db", sqlite_url,
              input="another secret\n")
    assert res.exit_code == 0 and res.stdout == "password changed for user zhangsan\n"
    authenticate(db, "zhangsan", "another secret")
    db.dispose()


def test_create_user_prompts_twice(sqlite_url):
    res = run("create-user", "lisi", "--person", "P2", "--db", sqlite_url,
              input="secret-pw-1\nsecret-pw-1\n")
    assert res.exit_code == 0, res.output
    assert "Password:" in res.output and "Repeat the password:" in res.output
    assert "secret-pw-1" not in res.output  # hidden input
    authenticate(Database(sqlite_url), "lisi", "secret-pw-1")


def test_create_user_refuses_short_passwords_and_unknown_people(sqlite_url):
    res = run("create-user", "wang", "--password-stdin", "--db", sqlite_url, input="short\n")
    assert res.exit_code == 1
    assert "at least 8 characters" in res.stderr and "nothing changed" in res.stderr
    res = run("create-user", "wang", "--person", "NOPE", "--password-stdin", "--db", sqlite_url,
              input="long enough\n")
    assert res.exit_code == 1 and "no person with code 'NOPE'" in res.stderr
    res = run("create-user", "wang", "--password-stdin", "--db", sqlite_url, input="")
    assert res.exit_code == 1  # end of input is an empty password
    with Database(sqlite_url).unit_of_work(write=False) as s:
        assert s.execute(select(func.count()).select_from(User)).scalar() == 0


def test_token_prints_a_working_token(sqlite_url):
    assert run("create-user", "zhangsan", "--person", "P1", "--password-stdin",
               "--db", sqlite_url, input="correct horse\n").exit_code == 0
    res = run("token", "zhangsan", "--days", "90", "--db", sqlite_url)
    assert res.exit_code == 0, res.output
    token = res.stdout.strip()
    assert len(token) >= 40 and "\n" not in token
    assert "bearer token for zhangsan, expires" in res.stderr and "(90 days)" in res.stderr
    client = create_app(sqlite_url).test_client()
    auth = {"Authorization": f"Bearer {token}"}
    me = client.get("/api/v1/auth/me", headers=auth)
    assert me.status_code == 200 and me.json["username"] == "zhangsan"
    assert client.get("/metrics", headers=auth).status_code == 200  # P1 is an admin
    res = run("token", "ghost", "--db", sqlite_url)
    assert res.exit_code == 1 and "no user 'ghost'" in res.stderr
    assert run("token", "zhangsan", "--days", "0", "--db", sqlite_url).exit_code == 2


def test_health_reports_an_unreachable_database(tmp_path):
    app = create_app("postgresql+psycopg://nobody:x@127.0.0.1:1/none")
    res = app.test_client().get("/healthz")
    assert res.status_code == 503 and res.json["status"] == "unavailable"


def test_an_unreachable_database_is_503_with_retry_after_not_500(tmp_path):
    app = create_app("postgresql+psycopg://nobody:x@127.0.0.1:1/none")
    client = app.test_client()
    res = client.get("/api/v1/cases", headers={"Authorization": "Bearer some-token"})
    assert res.status_code == 503 and res.headers["Retry-After"] == "2"
    assert res.json["code"] == "database_unavailable"
    assert "same Idempotency-Key" in res.json["message"]
    res = client.post("/api/v1/auth/token", json={"username": "a", "password": "b"})
    assert res.status_code == 503


def test_the_first_request_of_a_process_has_a_session(tmp_path, monkeypatch):
    """Without CIVFLOW_SECRET_KEY the signing key comes from the database; Flask opens the
    session before any hook runs, so it must be loaded by then — on the first request."""
    monkeypatch.delenv("CIVFLOW_SECRET_KEY", raising=False)
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    run("init-db", "--db", url)
    run("create-user", "zhangsan", "--password-stdin", "--db", url,
        input="a long enough password\n")
    client = create_app(url).test_client()
    page = client.get("/login")
    assert page.status_code == 200 and 'name="csrf_token"' in page.get_data(as_text=True)
    with client.session_transaction() as s:
        csrf = s["csrf"]
    r = client.post("/login", data={"username": "zhangsan", "password": "a long enough password",
                                    "csrf_token": csrf})
    assert r.status_code == 302 and r.headers["Location"] == "/home"
