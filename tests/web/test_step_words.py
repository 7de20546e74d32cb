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
