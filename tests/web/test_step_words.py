"""Steps in words on the pages: the feedback step (结果反馈) recalls the grade it
acknowledges and shows the day it accepts by itself as its 期限; the flow version page
says who acts and the deadlines in words, the definition's keys in a tooltip. On SQLite and
PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from workflows.engine import Actor
from workflows.models import Timer

FLOW = "regular-assessment"
P = Actor.person


def _text(r) -> str:
    return r.get_data(as_text=True)


def test_the_feedback_step_shows_the_grade_and_when_it_accepts_by_itself(web, engine, org):
    cid = engine.start_case(FLOW, org.s1, period_key="2026-11").id
    engine.fire(cid, "submit", P(org.s1), data={"summary": "本月小结"})
    engine.fire(cid, "evaluate", P(org.l1), data={"grade": "较好",
                                                    "evaluation_comment": "意见"})
    assert engine.get_case(cid).deadline_at is None  # the step has no deadline of its own
    with engine.db.unit_of_work(write=False) as s:
        due = s.execute(select(Timer.due_at).where(Timer.case_id == cid, Timer.kind == "auto",
                                                   Timer.status == "pending")).scalar_one()
    web.login("s1")
    page = _text(web.get(f"/cases/{cid}"))
    head = page.split('class="case-head')[1].split("</header>")[0]
    assert 'id="auto-step"' in head and "到期未办理将自动：认可结果" in head
    assert "<time datetime=" in head and '<span class="muted">—</span>' not in head
    assert f'datetime="{due.isoformat()}"' in head
    accept = page.split('id="a-accept"')[1].split("</form>")[0]
    assert "考核等次" in accept and "<strong>较好</strong>" in accept


def test_the_flow_version_page_says_who_acts_and_the_deadlines_in_words(web, engine, org):
    web.login("owner")
    page = _text(web.get(f"/flows/{FLOW}/versions/1"))
    assert '<span class="term" title="subject: subject">本人</span>' in page
    assert '<span class="term" title="deadline: working_days: 5, from: period_end">' \
           "期满后 5 个工作日</span>" in page
    assert 'title="committee: unit_role committee">党组（机关）成员</span>' in page
    assert "5 个工作日内未办理则自动：认可结果" in page  # the feedback step's auto timer
    assert "截止前 1 天提醒" in page and "每 周五 16:00 提醒一次" in page
    assert ">subject<" not in page and "working_days: 5, from: period_end</code>" not in page
    web.post("/lang", {"lang": "en", "next": "/home"})
    page = _text(web.get(f"/flows/{FLOW}/versions/1"))
    assert '<span class="term" title="subject: subject">the person assessed</span>' in page
    assert "5 working day(s) after the period ends" in page
    assert "after 5 working day(s) of silence, by itself: Accept" in page


def test_durations_in_words(web):
    from service.web.words import duration_words

    with web.client.application.test_request_context():
        assert duration_words("P5D") == "5 天"
        assert duration_words("P1M") == "1 个月"
        assert duration_words("PT12H") == "12 小时"
        assert duration_words("not-a-duration") == "not-a-duration"


def test_the_home_to_do_shows_when_the_feedback_step_accepts_by_itself(web, engine, org):
    """结果反馈 has no deadline of its own: its to-do card and the "My cases" row show the
    day the auto timer accepts, as the case page does, not a bare dash."""
    cid = engine.start_case(FLOW, org.s1, period_key="2026-11").id
    engine.fire(cid, "submit", P(org.s1), data={"summary": "本月小结"})
    engine.fire(cid, "evaluate", P(org.l1), data={"grade": "较好",
                                                    "evaluation_comment": "意见"})
    with engine.db.unit_of_work(write=False) as s:
        due = s.execute(select(Timer.due_at).where(Timer.case_id == cid, Timer.kind == "auto",
                                                   Timer.status == "pending")).scalar_one()
    web.login("s1")
    home = _text(web.get("/home"))
    card = home.split('class="card todo')[1].split("</li>")[0]
    assert f'datetime="{due.isoformat()}"' in card and "到期未办理将自动：认可结果" in card
    mine = home.split('id="mine-h"')[1].split("</table>")[0]
    assert f'datetime="{due.isoformat()}"' in mine
    assert '<span class="muted">—</span>' not in home


def test_a_step_without_any_deadline_says_so(web):
    from flask import render_template_string, session

    due = '{% from "macros.html" import due %}{{ due(None, False) }}'
    with web.client.application.test_request_context():
        assert "无期限" in render_template_string(due)
    with web.client.application.test_request_context():
        session["lang"] = "en"
        assert "no deadline" in render_template_string(due)
