"""Starting a case by hand (发起事项) on the web page, for process owners and admins: the
annual assessment for a unit and a year, a promotion and a dispatch for one person, and the
refusals — all through `Engine.start_case_for`, as `POST /api/v1/cases`. On SQLite and
PostgreSQL."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from tests.conftest import ROOT
from workflows.models import Case, Person, Unit

FLOWS = ("annual-assessment", "rank-promotion", "frontline-dispatch")


@pytest.fixture
def flows(engine):
    for name in FLOWS:
        path = ROOT / "definitions" / f"{name}.yaml"
        engine.publish(path.read_text(encoding="utf-8"), str(path))


def _text(r) -> str:
    return r.get_data(as_text=True)


def _cases(db, flow: str) -> list[tuple[int, str | None]]:
    with db.unit_of_work(write=False) as s:
        return sorted(s.execute(select(Case.subject_id, Case.period_key)
                                .where(Case.flow_id == flow)).all())


def test_the_annual_assessment_for_a_unit_and_a_year(web, engine, org, flows, db):
    web.login("owner")
    page = _text(web.get("/owner/start?flow=annual-assessment"))
    assert 'id="start-unit"' in page and "干部一科" in page and 'placeholder="2026"' in page
    r = web.post("/owner/start", {"flow": "annual-assessment", "period": "2026",
                                  "unit_id": str(org.units["SEC1"])})
    body = _text(r)
    assert r.status_code == 200
    with db.unit_of_work(write=False) as s:
        sec1 = sorted(s.execute(select(Person.id).join(Unit, Unit.id == Person.unit_id)
                                .where(Unit.id == org.units["SEC1"],
                                       Person.active.is_(True))).scalars())
    started = _cases(db, "annual-assessment")
    assert started == [(pid, "2026") for pid in sec1]  # one per person of the unit
    assert f"已发起 {len(sec1)} 件，未通过 0 件" in body
    # Again: each one is refused (one case per person and year), nothing added.
    body = _text(web.post("/owner/start", {"flow": "annual-assessment", "period": "2026",
                                           "unit_id": str(org.units["SEC1"])}))
    assert f"已发起 0 件，未通过 {len(sec1)} 件" in body and "已有该流程本周期的事项" in body
    assert _cases(db, "annual-assessment") == started


def test_a_promotion_and_a_dispatch_for_one_person(web, engine, org, flows, db):
    web.login("owner")
    page = _text(web.get("/owner/start?flow=rank-promotion"))
    assert 'id="start-person"' in page and 'id="start-period"' not in page
    assert 'id="start-unit"' not in page  # one person at a time: no period, no unit
    for flow, code, who in (("rank-promotion", "S1", org.s1),
                            ("frontline-dispatch", "T1", org.t1)):
        r = web.post("/owner/start", {"flow": flow, "person": code})
        assert r.status_code == 302, _text(r)
        case_id = int(re.search(r"/cases/(\d+)$", r.headers["Location"]).group(1))
        assert _cases(db, flow) == [(who, None)]
        assert engine.get_case(case_id).flow == flow
        assert "已发起" in _text(web.get(r.headers["Location"]))


def test_refusals_are_on_the_form_and_change_nothing(web, engine, org, flows, db):
    web.login("owner")

    def refused(data: dict, status: int, text: str) -> None:
        before = {f: _cases(db, f) for f in FLOWS}
        r = web.post("/owner/start", data)
        assert r.status_code == status and text in _text(r), _text(r)
        assert {f: _cases(db, f) for f in FLOWS} == before

    refused({"flow": "annual-assessment", "period": "26", "person": "S1"}, 422,
            "2026")  # the period key's shape, from the engine (the API's message)
    refused({"flow": "annual-assessment", "period": "2026"}, 422,
            "请填写人员编号或选择单位，二者选一")
    refused({"flow": "annual-assessment", "period": "2026", "person": "S1",
             "unit_id": str(org.units["SEC1"])}, 422, "请填写人员编号或选择单位，二者选一")
    refused({"flow": "rank-promotion", "person": "NOBODY"}, 422,
            "人员编号</a>: 没有编号为 NOBODY 的人员")  # named in words in the summary
    refused({"flow": "rank-promotion", "unit_id": str(org.units["SEC1"])}, 422,
            "该流程每次只为一人发起")
    refused({"flow": "no-such-flow", "person": "S1"}, 422, "请选择一个已发布的流程")
    assert web.post("/owner/start", {"flow": "annual-assessment", "period": "2026",
                                     "person": "S1"}).status_code == 302
    refused({"flow": "annual-assessment", "period": "2026", "person": "S1"}, 409,
            "该人员已有该流程本周期的事项")
    with db.unit_of_work(write=False) as s:
        n = s.execute(select(func.count()).select_from(Case)).scalar()
    r = web.client.post("/owner/start", data={"flow": "rank-promotion", "person": "S2",
                                              "csrf_token": "wrong"})
    assert r.status_code == 403  # the CSRF check refuses it
    with db.unit_of_work(write=False) as s:
        assert s.execute(select(func.count()).select_from(Case)).scalar() == n


def test_only_owners_and_admins_start_by_hand(web, engine, org, flows, db):
    web.login("s1")
    assert web.get("/owner/start").status_code == 403
    r = web.post("/owner/start", {"flow": "rank-promotion", "person": "S1"})
    assert r.status_code == 403 and _cases(db, "rank-promotion") == []
    web.login("admin")
    assert web.get("/owner/start?flow=rank-promotion").status_code == 200
    assert "发起事项" in _text(web.get("/home"))  # in the bar
