"""The approval queue's filters (筛选) and the bulk page (批量办理), through Flask's test
client: every filter of the queue is carried to the bulk page, shown there, and the bulk
page lists exactly the cases the queue's button counts; an approver's own cases are not in
their queue; the 环节 filter names each step label once. On SQLite and PostgreSQL."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from tests.conftest import ROOT
from workflows.engine import Actor

FLOW = "regular-assessment"
PERIOD = "2026-11"
P = Actor.person


def _to_approval(engine, org, who: str, grade: str = "较好", period: str = PERIOD) -> int:
    cid = engine.start_case(FLOW, org.ids[who], period_key=period).id
    engine.fire(cid, "submit", P(org.ids[who]), data={"summary": "本月小结"})
    leader = "l1" if who.startswith(("s", "d")) else "l2"
    engine.fire(cid, "evaluate", P(org.ids[leader]), data={"grade": grade,
                                                           "evaluation_comment": "意见"})
    engine.fire(cid, "accept", P(org.ids[who]))
    return cid


def _text(r) -> str:
    return r.get_data(as_text=True)


def _bulk_links(page: str) -> dict[str, tuple[str, int]]:
    """The queue's bulk buttons: trigger → (href, the count on the button)."""
    out = {}
    for href, n in re.findall(r'href="(/queue/bulk\?[^"]+)">[^<]*\((\d+)\)</a>', page):
        href = href.replace("&amp;", "&")
        out[parse_qs(urlsplit(href).query)["trigger"][0]] = (href, int(n))
    return out


def _listed(page: str) -> set[int]:
    return {int(i) for i in re.findall(r'name="case_ids" value="(\d+)"', page)}


def test_the_bulk_page_keeps_the_queue_filters_and_its_count(web, engine, org):
    sec1 = {_to_approval(engine, org, who) for who in ("s1", "s2", "s3")}
    sec2 = {_to_approval(engine, org, who) for who in ("t1", "t2")}
    web.login("c1")  # committee of ORG: approves in both sections

    everything = _bulk_links(_text(web.get("/queue")))
    assert everything["approve"][1] == 5

    queue = _text(web.get(f"/queue?unit_id={org.units['SEC1']}"))
    href, n = _bulk_links(queue)["approve"]
    assert n == 3 and f"unit_id={org.units['SEC1']}" in href
    page = _text(web.get(href))
    assert _listed(page) == sec1  # not the 干部二科 cases
    assert "3 件" in page and "单位: 干部一科" in page  # the filters, shown as chips
    assert f'name="f.unit_id" value="{org.units["SEC1"]}"' in page  # and kept on submit
    assert "全选所列 3 件" in page
    bar = page.split('class="submit-bar"')[1].split("</div>")[0]  # the reason beside it
    assert 'id="bulk-submit"' in bar and 'id="bulk-reason"' in bar

    # Every filter: the tier, the period, the name, the step.
    s1_only = f"/queue?unit_id={org.units['SEC1']}&tier=staff&period={PERIOD}&q=测试s1" \
              "&state=approval&overdue=false"
    href, n = _bulk_links(_text(web.get(s1_only)))["approve"]
    page = _text(web.get(href))
    assert n == 1 and len(_listed(page)) == 1
    for chip in ("层级: 一般干部", f"周期: {PERIOD}", "姓名或编号: 测试s1", "逾期: 仅看未逾期"):
        assert chip in page, chip
    assert "approve" not in _bulk_links(_text(web.get("/queue?period=2026-01")))

    # Submitting approves only what was ticked; the results page goes back filtered.
    chosen = sorted(sec1)[:2]
    r = web.post("/queue/bulk", {"flow": FLOW, "state": "approval", "trigger": "approve",
                                 "f.unit_id": str(org.units["SEC1"]),
                                 "case_ids": [str(i) for i in chosen]})
    body = _text(r)
    assert r.status_code == 200 and "完成 2 件，未通过 0 件" in body
    assert f"unit_id={org.units['SEC1']}" in body
    assert {engine.get_case(i).state for i in sec2} == {"approval"}
    left = _text(web.get(f"/queue/bulk?unit_id={org.units['SEC1']}&flow={FLOW}"
                         "&state=approval&trigger=approve"))
    assert _listed(left) == sec1 - set(chosen)


def test_the_bulk_page_says_when_it_lists_only_the_first_cases(web, engine, org,
                                                              monkeypatch):
    """More cases match than the bulk page lists (BULK_MAX, 500; 2 here): the page says so
    and by how many, not only the capped count."""
    monkeypatch.setattr("service.web.queue.BULK_MAX", 2)
    for who in ("s1", "s2", "s3"):
        _to_approval(engine, org, who)
    web.login("c1")
    url = f"/queue/bulk?flow={FLOW}&state=approval&trigger=approve"
    page = _text(web.get(url))
    assert len(_listed(page)) == 2
    assert 'id="bulk-capped"' in page and "仅显示前 2 件，共 3 件；请缩小筛选范围" in page
    web.post("/lang", {"lang": "en", "next": "/home"})
    page = _text(web.get(url))
    assert "Only the first 2 of 3 cases are listed; narrow the filters" in page
    monkeypatch.setattr("service.web.queue.BULK_MAX", 3)  # all listed: no such line
    assert 'id="bulk-capped"' not in _text(web.get(url))


def test_a_bad_filter_is_named_and_the_rest_kept(web, engine, org):
    _to_approval(engine, org, "s1")
    _to_approval(engine, org, "t1")
    web.login("c1")
    r = web.get(f"/queue?unit_id={org.units['SEC2']}&tier=boss")
    body = _text(r)
    assert r.status_code == 200 and "层级: 请选择一个层级" in body
    href, n = _bulk_links(body)["approve"]
    assert n == 1 and "tier" not in href


def test_an_approvers_own_case_is_not_in_their_queue(web, engine, org):
    # d1 (副职, 干部一科) is also a committee member: their own case waits for their summary.
    from tests.conftest import assign_role

    with engine.db.unit_of_work() as s:
        from workflows.models import Person, Unit
        assign_role(s, s.get(Person, org.d1), "committee", s.get(Unit, org.units["ORG"]))
    own = engine.start_case(FLOW, org.d1, period_key=PERIOD).id
    other = _to_approval(engine, org, "s1")
    web.login("d1")
    queue = _text(web.get("/queue"))
    assert f'id="q-{other}"' in queue and f'id="q-{own}"' not in queue
    assert "审批队列 <small class=\"muted\">1 件" in queue
    home = _text(web.get("/home"))
    assert "审批队列中有 1 件事项等待您办理" in home and f"/cases/{own}" in home  # a to-do on home


def test_the_step_filter_names_each_label_once(web, engine, org):
    for name in ("annual-assessment", "rank-promotion"):
        path = ROOT / "definitions" / f"{name}.yaml"
        engine.publish(path.read_text(encoding="utf-8"), str(path))
    cid = _to_approval(engine, org, "s1")
    web.login("c1")
    page = _text(web.get("/queue"))
    options = re.findall(r'<option value="([^"]*)"[^>]*>([^<]+)</option>',
                         page.split('id="f-state"')[1].split("</select>")[0])
    texts = [t for _v, t in options]
    assert texts.count("审定") == 1 and texts.count("审批") == 1
    value = dict((t, v) for v, t in options)["审定"]
    # 审定 is the annual and the regular flows' `approval`; 审批 is the promotion's.
    assert set(value.split(",")) == {"annual-assessment:approval", f"{FLOW}:approval"}
    listed = _text(web.get("/queue", query_string={"state": value}))
    assert f'id="q-{cid}"' in listed and "环节: " not in listed
    other = dict((t, v) for v, t in options)["审批"]
    assert f'id="q-{cid}"' not in _text(web.get("/queue", query_string={"state": other}))


def test_the_bulk_button_and_why_it_is_disabled_stay_in_view_on_a_phone(live, phone, db_url):
    """Chromium at 390 × 844 on the demo bureau: the list of a division's 审定 is many
    screens long; the button and the reason it is disabled sit together at the bottom of
    the screen wherever the page is scrolled to."""
    from playwright.sync_api import expect

    from .conftest import login, no_sideways_scroll, shot

    backend = db_url.split(":")[0].split("+")[0]
    login(phone, live, "committee1")
    phone.goto(f"{live.url}/queue?unit_id={_unit_id(live, '公务员管理处')}")
    button = phone.get_by_role("link", name=re.compile("审定通过"))
    n = int(re.search(r"\((\d+)\)", button.inner_text()).group(1))
    button.click()
    phone.wait_for_url(re.compile(r"/queue/bulk\?"))
    expect(phone.locator('input[name="case_ids"]')).to_have_count(n)
    expect(phone.locator("#bulk-filters")).to_contain_text("公务员管理处")
    reason, submit = phone.locator("#bulk-reason"), phone.locator("#bulk-submit")
    expect(submit).to_be_disabled()
    expect(reason).to_contain_text("请至少勾选 1 件")

    def in_view(locator) -> bool:
        box = locator.bounding_box()
        return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 844

    assert in_view(submit) and in_view(reason)  # at the top of the page already
    phone.locator('input[name="case_ids"]').nth(n // 2).scroll_into_view_if_needed()
    assert in_view(submit) and in_view(reason)  # and halfway down the list
    shot(phone, f"bulk-phone-{backend}")
    phone.get_by_label(re.compile("全选")).check()
    expect(submit).to_be_enabled()
    expect(reason).to_have_text("")
    assert no_sideways_scroll(phone)


def _unit_id(live, name: str) -> int:
    from sqlalchemy import select

    from workflows.models import Unit

    with live.engine.db.unit_of_work(write=False) as s:
        return s.execute(select(Unit.id).where(Unit.name == name)).scalar_one()
