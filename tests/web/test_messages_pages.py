"""Engine messages on the pages (消息代码): a quota refusal, a field error and the 404 page
read in the session's language (Chinese by default, English by the switch). The API side and
the catalogues are in tests/test_messages.py."""

from __future__ import annotations

from tests.test_messages import FLOW, over_the_quota


def test_a_page_shows_the_refusal_in_the_session_language(web, engine, org):
    ids = over_the_quota(engine, org)
    web.login("c1")
    form = {"flow": FLOW, "state": "approval", "trigger": "approve",
            "case_ids": [str(i) for i in ids]}
    r = web.post("/queue/bulk", form)
    body = r.get_data(as_text=True)
    assert r.status_code == 422 and "名额已满：" in body and "本次申请 3 人" in body
    assert "asked 3" not in body
    web.post("/lang", {"lang": "en", "next": "/home"})
    body = web.post("/queue/bulk", form).get_data(as_text=True)
    assert "asked 3" in body and "名额已满" not in body

    web.post("/lang", {"lang": "zh", "next": "/home"})
    web.login("s4")
    cid = engine.start_case(FLOW, org.ids["s4"], period_key="2026-10").id
    form = {"version": "1", "summary": "本月小结",
            "individual_indicators.1.indicator": "x" * 201}
    body = web.post(f"/cases/{cid}/actions/submit", form).get_data(as_text=True)
    assert "长度不得超过 200" in body and "Longer than" not in body
    # the 404 page, in Chinese
    web.login("admin")
    r = web.get(f"/ledger?flow={FLOW}&unit_id=99999")
    assert r.status_code == 404 and "单位 99999 不存在" in r.get_data(as_text=True)
