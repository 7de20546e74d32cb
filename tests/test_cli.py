"""The `civflow` command line and the first-run path of `serve`."""

from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import func, select

from service.app import create_app
from service.cli import main, prepare
from workflows.db import Database
from workflows.models import Case, FlowVersion, Person

from .conftest import REGULAR, ROOT


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_validate_exit_codes(tmp_path):
    ok = run("validate", ROOT / "definitions")
    assert ok.exit_code == 0, ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(REGULAR.read_text(encoding="utf-8").replace("to: approved", "to: aproved"),
                   encoding="utf-8")
    res = run("validate", REGULAR, bad)
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.startswith(str(bad))]
    assert f"{bad}: transitions[5].to: unknown state 'aproved' (did you mean 'approved'?)" \
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


def test_first_run_prepares_everything(tmp_path):
    url = f"sqlite:///{tmp_path / 'first.db'}"
    db = prepare(url, ROOT / "definitions", demo=True)
    prepare(url, ROOT / "definitions", demo=True)  # a second start changes nothing
    with db.unit_of_work(write=False) as s:
        assert s.execute(select(func.count()).select_from(FlowVersion)).scalar() == 1
        assert s.execute(select(func.count()).select_from(Person)).scalar() == 15
        assert s.execute(select(func.count()).select_from(Case)).scalar() == 0
    client = create_app(url).test_client()
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json == {"status": "ok", "database": "sqlite"}
    assert client.get("/api/v1/cases").status_code == 401  # everything else needs a login
    Database(url).dispose()


def test_health_reports_an_unreachable_database(tmp_path):
    app = create_app("postgresql+psycopg://nobody:x@127.0.0.1:1/none")
    res = app.test_client().get("/healthz")
    assert res.status_code == 503 and res.json["status"] == "unavailable"
