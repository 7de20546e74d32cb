"""The web pages through Flask's test client (no browser): who gets which page, CSRF, the
errors beside the fields, the language switch, expired sessions, claims, delegation, bulk
approval refused by the quota on the server, notifications. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import func, select, update

from workflows.engine import Actor
from workflows.models import ApiToken, Case, HistoryRecord, Notification

FLOW = "regular-assessment"
PERIOD = "2026-11"
P = Actor.person


def _start(engine, org, who: str, period: str = PERIOD) -> int:
    return engine.start_case(FLOW, org.ids[who], period_key=period).id


def _to_approval(engine, org, who: str, grade: str, period: str = PERIOD) -> int:
    cid = _start(engine, org, who, period)
    engine.fire(cid, "submit", P(org.ids[who]), data={"summary": "本月小结"})
    engine.fire(cid, "evaluate", P(org.ids["l1"]), data={"grade": grade,
                                                         "evaluation_comment": "意见"})
    engine.fire(cid, "accept", P(org.ids[who]))
    return cid


def _history_count(db, cid: int) -> int:
    with db.unit_of_work(write=False) as s:
        return s.execute(select(func.count()).select_from(HistoryRecord)
                         .where(HistoryRecord.case_id == cid)).scalar()


def _text(r) -> str:
    return r.get_data(as_text=True)


# --------------------------------------------------------------------------- who sees what


def test_anonymous_browsers_are_sent_to_login_with_next(web):
    for url in ("/home", "/queue", "/notifications", "/cases/1", "/queue/bulk?flow=x"):
        r = web.get(url)
        assert r.status_code == 302, url
        assert r.headers["Location"].startswith("/login?next=")
    assert web.get("/").headers["Location"] == "/login?next=/"
    assert web.get("/static/web/civflow.css").status_code == 200
    assert web.get("/static/web/htmx.min.js").status_code == 200
    page = web.get("/login")
    assert page.status_code == 200 and 'lang="zh-CN"' in _text(page)
    assert '<label for="username">用户名</label>' in _text(page)


def test_every_page_for_the_right_user_and_not_for_the_wrong_one(web, engine, org):
    own = _start(engine, org, "s1")
    other_unit = _start(engine, org, "t1")
    approval = _to_approval(engine, org, "s2", "较好")

    web.login("s1")
    assert web.get("/").headers["Location"] == "/home"
    for url in ("/home", "/notifications", f"/cases/{own}"):
        assert web.get(url).status_code == 200, url
    assert web.get(f"/cases/{other_unit}").status_code == 404  # not 403: not for them to know
    r = web.get("/queue")
    assert r.status_code == 403 and "审批队列供担任角色的人员" in _text(r)
    assert web.get(f"/queue/bulk?flow={FLOW}&state=approval&trigger=approve").status_code == 403
    home = _text(web.get("/home"))
    assert "我的待办" in home and "审批队列" not in home  # no queue in the bar for staff
    assert "流程管理" not in home

    web.login("l1")
    assert web.get("/queue").status_code == 200
    assert web.get(f"/cases/{own}").status_code == 200
    assert web.get(f"/cases/{other_unit}").status_code == 404  # SEC2 is not l1's
    assert web.get(f"/queue/bulk?flow={FLOW}&state=evaluation&trigger=evaluate"
                   ).status_code == 200
    r = web.get("/queue/bulk?flow=regular-assessment")
    assert r.status_code == 422 and "state" in _text(r)

    web.login("c1")
    r = web.get(f"/queue/bulk?flow={FLOW}&state=approval&trigger=approve")
    assert r.status_code == 200 and f'value="{approval}"' in _text(r)

    web.login("owner")
    home = _text(web.get("/home"))
    # The process-owner pages are announced in the bar until they exist.
    assert "流程管理" in home and "台账统计" in home


def test_queue_filters_go_through_the_api_schema(web, engine, org):
    late = _start(engine, org, "s1")
    engine.fire(late, "submit", P(org.s1), data={"summary": "小结"})
    with engine.db.unit_of_work() as s:
        s.execute(update(Case).where(Case.id == late).values(
            deadline_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)))
    web.login("l1")
    r = web.get(f"/queue?flow={FLOW}&state=evaluation&overdue=true")
    body = _text(r)
    assert r.status_code == 200 and f'id="q-{late}"' in body and "已逾期" in body
    r = web.get(f"/queue?flow={FLOW}&overdue=false")
    assert f'id="q-{late}"' not in _text(r)
    r = web.get("/queue?q=" + "x" * 101)  # CaseQuery: at most 100 characters
    assert r.status_code == 200 and "f-q-error" in _text(r)


# --------------------------------------------------------------------------- CSRF


def test_posts_without_the_session_token_are_refused(web, engine, org, db):
    cid = _start(engine, org, "s1")
    web.login("s1")
    before = _history_count(db, cid)
    form = {"version": "1", "summary": "小结", "idempotency_key": "k1"}
    r = web.post(f"/cases/{cid}/actions/submit", form, csrf=False)
    assert r.status_code == 403 and "表单已失效" in _text(r)
    r = web.post(f"/cases/{cid}/actions/submit", {**form, "csrf_token": "forged"}, csrf=False)
    assert r.status_code == 403
    assert _history_count(db, cid) == before
    assert engine.get_case(cid).state == "summary"
    # htmx sends the token in a header instead.
    r = web.client.post(f"/queue/{cid}/claim", data={"version": "1"},
                        headers={"X-CSRF-Token": web.csrf(), "HX-Request": "true"})
    assert r.status_code == 403  # a staff member cannot claim: the engine said so, not CSRF
    assert "表单已失效" not in _text(r)
    # The login form is protected too.
    r = web.client.post("/login", data={"username": "s1", "password": "x"})
    assert r.status_code == 403


# --------------------------------------------------------------------------- forms


def test_errors_are_shown_beside_their_fields_and_nothing_moves(web, engine, org, db):
    cid = _start(engine, org, "s1")
    web.login("s1")
    r = web.post(f"/cases/{cid}/actions/submit", {"version": "1", "summary": "  "})
    body = _text(r)
    assert r.status_code == 422
    assert re.search(r'<textarea id="a-submit-summary" name="summary"[^>]*aria-invalid="true"'
                     r'[^>]*aria-describedby="a-submit-summary-error"', body)
    assert '<p class="field-error" id="a-submit-summary-error">必填</p>' in body
    assert 'href="#a-submit-summary"' in body  # the summary above the form links to it
    # Row 2 of the indicators too long, row 1 left empty: the message sits on row 2.
    form = {"version": "1", "summary": "本月小结", "individual_indicators.1.indicator": "x" * 201,
            "individual_indicators.1.target": "目标"}
    r = web.post(f"/cases/{cid}/actions/submit", form)
    body = _text(r)
    assert r.status_code == 422
    assert 'id="a-submit-individual_indicators-1-indicator-error"' in body
    assert "长度不得超过 200" in body
    assert ">本月小结</textarea>" in body  # what was typed is kept
    assert engine.get_case(cid).state == "summary" and _history_count(db, cid) == 1

    r = web.post(f"/cases/{cid}/actions/record_week",
                 {"version": "1", "weekly_records.0.week": "第48周",
                  "weekly_records.0.content": "整理档案"})
    assert r.status_code == 302 and r.headers["Location"] == f"/cases/{cid}"
    assert engine.get_case(cid).data["weekly_records"] == [{"week": "第48周",
                                                            "content": "整理档案"}]
    page = _text(web.get(f"/cases/{cid}"))
    assert "“记录周记实”已完成" in page and "整理档案" in page


def test_a_rule_refusal_lands_beside_its_field(web, engine, org):
    cid = _start(engine, org, "s1")
    engine.fire(cid, "submit", P(org.s1), data={"summary": "小结"})
    web.login("l1")
    r = web.post(f"/cases/{cid}/actions/evaluate", {"version": "2", "grade": "一般"})
    body = _text(r)
    assert r.status_code == 422
    assert 'id="a-evaluate-evaluation_comment-error"' in body
    assert '<option value="一般" selected>' in body
    r = web.post(f"/cases/{cid}/actions/evaluate", {"version": "2", "grade": "不存在"})
    assert r.status_code == 422 and "只能是以下之一：好, 较好, 一般, 较差" in _text(r)
    assert engine.get_case(cid).state == "evaluation"


def test_a_stale_page_is_a_conflict_and_a_double_click_acts_once(web, engine, org, db):
    cid = _start(engine, org, "s1")
    web.login("s1")
    form = {"version": "1", "summary": "本月小结", "idempotency_key": "once"}
    assert web.post(f"/cases/{cid}/actions/submit", form).status_code == 302
    assert web.post(f"/cases/{cid}/actions/submit", form).status_code == 302  # replayed
    assert _history_count(db, cid) == 2
    engine.fire(cid, "return_summary", P(org.l1), comment="请补充", expected_version=2)
    r = web.post(f"/cases/{cid}/actions/submit", {**form, "idempotency_key": "two",
                                                  "version": "2"})
    assert r.status_code == 409 and "已被他人更改" in _text(r)
    assert ">本月小结</textarea>" in _text(r)
    r = web.post(f"/cases/{cid}/actions/submit", {**form, "version": "abc"})
    assert r.status_code == 422 and "页面未提交案件版本" in _text(r)  # in the page's language


def test_send_back_needs_a_reason(web, engine, org):
    cid = _to_approval(engine, org, "s1", "较好")
    web.login("c1")
    r = web.post(f"/cases/{cid}/actions/send_back", {"version": "4", "comment": " "})
    assert r.status_code == 422 and 'id="a-send_back-comment-error"' in _text(r)
    r = web.post(f"/cases/{cid}/actions/send_back", {"version": "4", "comment": "依据不足"})
    assert r.status_code == 302 and engine.get_case(cid).state == "evaluation"
    assert "依据不足" in _text(web.get(f"/cases/{cid}"))


# --------------------------------------------------------------------------- claims, delegation


def test_claim_release_and_delegate(web, engine, org):
    cid = _to_approval(engine, org, "s1", "较好")
    web.login("c1")
    r = web.client.post(f"/queue/{cid}/claim", data={"version": "4"},
                        headers={"X-CSRF-Token": web.csrf(), "HX-Request": "true"})
    assert r.status_code == 200 and f'<tr id="q-{cid}"' in _text(r) and "由您认领" in _text(r)
    r = web.post(f"/queue/{cid}/claim", {"version": "4"})  # the page is stale now
    assert r.status_code == 302
    assert 'class="flash error"' in _text(web.get(r.headers["Location"]))
    r = web.post(f"/queue/{cid}/release", {"version": "5", "next": "/queue"})
    assert r.status_code == 302 and r.headers["Location"] == "/queue"
    assert engine.get_case(cid).version == 6

    page = _text(web.get(f"/cases/{cid}"))
    assert f'<option value="{org.c2}">测试c2</option>' in page  # who may take the step
    r = web.post(f"/queue/{cid}/delegate", {"version": "6", "to": "abc"})
    assert r.status_code == 422 and 'id="delegate-to-error"' in _text(r)
    r = web.post(f"/queue/{cid}/delegate", {"version": "6", "to": str(org.s3)})
    assert r.status_code == 403 and 'id="delegate-to-error"' in _text(r)
    r = web.post(f"/queue/{cid}/delegate", {"version": "6", "to": str(org.c2),
                                            "comment": "请代为审定"})
    assert r.status_code == 302
    case = web.get(f"/cases/{cid}")
    assert "将本环节转办给 测试c2" in _text(case) and "请代为审定" in _text(case)
    assert engine.get_case(cid).version == 7


# --------------------------------------------------------------------------- bulk


def test_bulk_approval_refused_by_the_quota_on_the_server(web, engine, org):
    # SEC1 staff s1…s5: 5 in the pool, at most floor(5 × 40%) = 2 好.
    ids = [_to_approval(engine, org, who, "好") for who in ("s1", "s2", "s3")]
    for who in ("s4", "s5"):
        _start(engine, org, who)
    web.login("c1")
    page = _text(web.get(f"/queue/bulk?flow={FLOW}&state=approval&trigger=approve"))
    assert 'data-limit="2"' in page and 'data-used="0"' in page
    form = {"flow": FLOW, "state": "approval", "trigger": "approve"}
    r = web.client.post("/queue/bulk", data={**form, "case_ids": [str(i) for i in ids],
                                             "csrf_token": web.csrf()})
    body = _text(r)
    assert r.status_code == 422 and "限额 2 人" in body and "本次申请 3 人" in body
    assert 'class="pool over"' in body  # the meter drawn over, boxes still ticked
    assert all(f'value="{i}" id="c-{i}" checked' in body for i in ids)
    assert [engine.get_case(i).state for i in ids] == ["approval"] * 3
    r = web.client.post("/queue/bulk", data={**form, "case_ids": [], "csrf_token": web.csrf()})
    assert r.status_code == 422 and "请至少选择 1 件" in _text(r)

    r = web.client.post("/queue/bulk", data={**form, "case_ids": [str(i) for i in ids[:2]],
                                             "csrf_token": web.csrf()})
    assert r.status_code == 200 and "完成 2 件，未通过 0 件" in _text(r)
    page = _text(web.get(f"/queue/bulk?flow={FLOW}&state=approval&trigger=approve"))
    assert 'data-limit="2"' in page and 'data-used="2"' in page


# --------------------------------------------------------------------------- language, session


def test_language_switch(web, engine, org):
    cid = _start(engine, org, "s1")
    web.login("s1")
    page = _text(web.get(f"/cases/{cid}"))
    assert 'lang="zh-CN"' in page and "个人小结" in page and "您现在可以办理" in page
    r = web.post("/lang", {"lang": "en", "next": f"/cases/{cid}"})
    assert r.status_code == 302 and r.headers["Location"] == f"/cases/{cid}"
    page = _text(web.get(f"/cases/{cid}"))
    assert '<html lang="en">' in page
    assert "What you can do now" in page and "Self summary" in page  # the definition's en
    assert web.post("/lang", {"lang": "fr", "next": "https://evil.example/"}
                    ).headers["Location"] == "/home"
    assert "What you can do now" in _text(web.get(f"/cases/{cid}"))
    web.post("/lang", {"lang": "zh", "next": "/home"})
    assert "我的待办" in _text(web.get("/home"))


def test_expired_sessions_and_logout(web, engine, org, db):
    cid = _start(engine, org, "s1")
    web.login("s1")
    assert web.get("/home").status_code == 200
    with db.unit_of_work() as s:
        s.execute(update(ApiToken).values(expires_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)))
    r = web.get(f"/cases/{cid}")
    assert r.status_code == 302
    assert r.headers["Location"] == f"/login?next=/cases/{cid}&expired=1"
    assert "登录已过期" in _text(web.get(r.headers["Location"]))
    r = web.login("s1")
    assert r.headers["Location"] == "/home"
    r = web.post("/logout")
    assert r.status_code == 302 and r.headers["Location"] == "/login"
    assert "您已退出登录" in _text(web.get("/login"))
    assert web.get("/home").status_code == 302
    with db.unit_of_work(write=False) as s:
        # the expired session's token stays expired; the second one is revoked
        assert s.execute(select(func.count()).select_from(ApiToken)
                         .where(ApiToken.revoked_at.is_not(None))).scalar() == 1


def test_login_goes_back_to_the_page_asked_for(web, engine, org):
    cid = _start(engine, org, "s1")
    r = web.get(f"/cases/{cid}")
    nxt = r.headers["Location"].split("next=")[1]
    page = web.get(f"/login?next={nxt}")
    token = re.search(r'name="csrf_token" value="([^"]+)"', _text(page)).group(1)
    from tests.conftest import PASSWORD

    r = web.client.post("/login", data={"username": "s1", "password": PASSWORD,
                                        "csrf_token": token, "next": f"/cases/{cid}"})
    assert r.headers["Location"] == f"/cases/{cid}"
    r = web.client.post("/login", data={"username": "s1", "password": "wrong-one",
                                        "csrf_token": web.csrf()})
    assert r.status_code == 401 and "用户名或密码错误" in _text(r)


# --------------------------------------------------------------------------- notifications


def test_notifications_page(web, engine, org, db):
    cid = _start(engine, org, "s1")
    with db.unit_of_work() as s:
        for i, pid in enumerate((org.s1, org.s1, org.s2)):
            s.add(Notification(key=f"k{i}", person_id=pid, case_id=cid, kind="reminder",
                               title=f"提醒{i}", body="请记录本周工作纪实"))
    web.login("s1")
    page = _text(web.get("/notifications"))
    assert "提醒0" in page and "提醒1" in page and "提醒2" not in page
    assert "2 条未读" in page
    with db.unit_of_work(write=False) as s:
        first = s.execute(select(Notification.id).where(Notification.key == "k0")).scalar()
        theirs = s.execute(select(Notification.id).where(Notification.key == "k2")).scalar()
    r = web.client.post(f"/notifications/{first}/read",
                        headers={"X-CSRF-Token": web.csrf(), "HX-Request": "true"})
    assert r.status_code == 200 and f'id="n-{first}"' in _text(r) and "标为已读" not in _text(r)
    assert web.post(f"/notifications/{theirs}/read").status_code == 404
    assert "1 条未读" in _text(web.get("/notifications"))
    r = web.post("/notifications/read-all")
    assert r.status_code == 302
    assert "0 条未读" in _text(web.get("/notifications"))
