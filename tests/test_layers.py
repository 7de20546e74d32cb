"""The layers: the service enters `workflows/` through the front door only.

`service/` (API views, web pages, CLI) imports neither `workflows.db`, `workflows.models`
nor SQLAlchemy, opens no unit of work and touches no engine's database (`.db`); and each
front-door method (`workflows.frontdoor`) opens exactly one unit of work, on both
databases.
"""

from __future__ import annotations

import ast
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from workflows.access import ADMIN, Viewer
from workflows.accounts import BEARER
from workflows.db import Database
from workflows.errors import Forbidden, NotFound

from .conftest import ROOT

FORBIDDEN_MODULES = ("sqlalchemy", "workflows.db", "workflows.models")


def violations(source: str) -> list[str]:
    """What a module of the service must not do, as `line: what` strings."""
    found = []
    for node in ast.walk(ast.parse(source)):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for m in modules:
            if any(m == f or m.startswith(f + ".") for f in FORBIDDEN_MODULES):
                found.append(f"{node.lineno}: imports {m}")
                break  # one finding per import statement
        if isinstance(node, ast.Attribute) and node.attr in ("unit_of_work", "db"):
            found.append(f"{node.lineno}: uses .{node.attr}")
    return sorted(set(found))


def test_the_checker_finds_what_it_looks_for():
    source = ("from sqlalchemy import select\nimport workflows.models\n"
              "from workflows import db\nwith engine().db.unit_of_work() as s:\n    pass\n")
    assert violations(source) == ["1: imports sqlalchemy", "2: imports workflows.models",
                                  "3: imports workflows.db", "4: uses .db",
                                  "4: uses .unit_of_work"]


def test_the_service_goes_through_the_front_door():
    files = sorted((ROOT / "service").rglob("*.py"))
    assert len(files) > 20  # the whole service is read, not an empty folder
    found = {str(f.relative_to(ROOT)): v for f in files
             if (v := violations(f.read_text(encoding="utf-8")))}
    assert found == {}


# --------------------------------------------------------------------------- one unit each


@pytest.fixture
def units_of_work(monkeypatch) -> Iterator[list[bool]]:
    """Every unit of work opened (its `write` flag), in order: a session (`unit_of_work`) or
    a connection's `Work` (`work`, which `Database.run` opens)."""
    opened: list[bool] = []

    def counting(original):
        @contextmanager
        def counted(self, write: bool = True):
            opened.append(write)
            with original(self, write) as unit:
                yield unit
        return counted

    monkeypatch.setattr(Database, "unit_of_work", counting(Database.unit_of_work))
    monkeypatch.setattr(Database, "work", counting(Database.work))
    yield opened


def once(opened: list[bool], call, write: bool = False):
    """Run `call`, check that it opened exactly one unit of work, return its result."""
    opened.clear()
    result = call()
    assert opened == [write], f"{len(opened)} units of work (write flags {opened})"
    return result


NOW = dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC)


def test_each_front_door_call_is_one_unit_of_work(engine, org, regular, units_of_work):
    door, opened = engine.door, units_of_work
    admin = Viewer(person_id=org.chief, assignments=((ADMIN, None, None),))
    staff = Viewer(person_id=org.s1)
    flow = regular.flow

    units = once(opened, lambda: door.org.units())
    assert {u.code for u in units} == {"ORG", "SEC1", "SEC2"}
    assert once(opened, lambda: door.org.unit(unit_id=org.units["SEC1"])).name == "干部一科"
    assert once(opened, lambda: door.org.person_id(code="S1")) == org.s1
    people, total = once(opened, lambda: door.org.people(
        filters={"unit_id": org.units["SEC2"], "page": 1, "per_page": 10}))
    assert total == 3 and {p["code"] for p in people} == {"L2", "T1", "T2"}
    assert once(opened, lambda: door.org.person_names(ids=[org.s1, None])) == {
        org.s1: "测试s1"}
    role = once(opened, lambda: door.org.add_role(viewer=admin, person_id=org.s2,
                                                  role="committee",
                                                  unit_id=org.units["SEC1"]), write=True)
    assert role["person_id"] == org.s2

    # The flow named by id is looked up in the same unit of work as the numbers.
    counts = once(opened, lambda: door.ledger.state_counts(viewer=admin, flow=flow))
    assert (counts["flow"], counts["total"]) == (flow, 0)
    stats = once(opened, lambda: door.ledger.statistics(viewer=admin, flow=flow))
    assert stats.grades is not None  # the regular assessment has a quota
    page = once(opened, lambda: door.ledger.cases(viewer=admin, flow=flow, page=1))
    assert (page.rows, page.total) == ([], 0)
    board = once(opened, lambda: door.contact_points.scoreboard(viewer=admin, year=2026,
                                                                flow=flow))
    assert (board["year"], board["flow"]) == (2026, flow)
    assert once(opened, lambda: door.contact_points.register(viewer=admin, year=2026)) == []
    # No rank-promotion flow is published: the positions are read without its ladder.
    assert once(opened, lambda: door.positions.read(viewer=admin)) == []
    assert once(opened, lambda: door.notifications.inbox(viewer=staff)).total == 0
    assert once(opened, lambda: door.notifications.mark_all_read(viewer=staff),
                write=True) == 0
    assert once(opened, lambda: door.facts.read(viewer=staff, person_id=org.s1)).rank is None
    assert once(opened, lambda: door.reads.backlog(now=NOW)).timers_due >= 0
    authors = once(opened, lambda: door.reads.version_authors(version_id=regular.version_id))
    assert (authors.created_by, authors.published_by) == (None, None)
    once(opened, lambda: door.system.check_schema())

    account = once(opened, lambda: door.accounts.create_user(
        username="s1", password="long-enough-pw", person_code="S1"), write=True)
    assert (account.username, account.person_id, account.created) == ("s1", org.s1, True)
    issued = once(opened, lambda: door.accounts.issue_token(
        username="s1", kind=BEARER, ttl=dt.timedelta(days=1), now=NOW), write=True)
    signed = once(opened, lambda: door.accounts.sign_in(token=issued.token,
                                                        now=NOW + dt.timedelta(hours=1)))
    assert (signed.principal.username, signed.viewer.person_id) == ("s1", org.s1)
    once(opened, lambda: door.accounts.revoke(token_id=signed.principal.token_id, now=NOW),
         write=True)
    assert once(opened, lambda: door.accounts.lockouts(viewer=admin, now=NOW)) == []
    events, total = once(opened, lambda: door.accounts.security_events(viewer=admin))
    assert (events, total) == ([], 0)


def test_the_access_check_comes_before_any_unit_of_work(engine, org, units_of_work):
    door, opened = engine.door, units_of_work
    staff = Viewer(person_id=org.s1)
    refused = [
        lambda: door.org.create_unit(viewer=staff, code="X", name="某单位"),
        lambda: door.org.remove_role(viewer=staff, assignment_id=1),
        lambda: door.facts.create(viewer=staff, kind="rank", person_id=org.s1, values={}),
        lambda: door.facts.audit(viewer=staff, person_id=org.s1),
        lambda: door.accounts.lockouts(viewer=staff, now=NOW),
        lambda: door.accounts.security_events(viewer=staff),
        lambda: door.notifications.deliveries(viewer=staff),
        lambda: door.positions.put(viewer=staff, unit_code="SEC1", rank="一级主任科员",
                                   round="2026-1", positions=1),
        lambda: door.contact_points.scoreboard(viewer=staff, year=2026, flow="x"),
    ]
    for call in refused:
        opened.clear()
        with pytest.raises(Forbidden):
            call()
        assert opened == []


def test_a_flow_that_is_not_published_is_not_found_in_the_same_unit(engine, org,
                                                                     units_of_work):
    admin = Viewer(person_id=org.chief, assignments=((ADMIN, None, None),))
    units_of_work.clear()
    with pytest.raises(NotFound):
        engine.door.ledger.rates(viewer=admin, flow="regular-assessment")
    assert units_of_work == [False]
