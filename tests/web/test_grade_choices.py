"""The web form of an action offers only the values the action accepts (issue 13 item 11):
the annual 确定优秀人选 offers 优秀 only, 提出等次 the other grades."""

from __future__ import annotations

import re

from tests.test_annual import ANNUAL, SOURCE, _to_evaluation


def _options(page: str, select_id: str) -> list[str]:
    block = re.search(rf'<select id="{select_id}"[^>]*>(.*?)</select>', page, re.S)
    assert block, select_id
    return [v for v in re.findall(r'<option value="([^"]*)"', block.group(1)) if v]


def test_each_action_offers_only_its_grades(web, engine, org):
    engine.publish(SOURCE, str(ANNUAL))
    cid = _to_evaluation(engine, org, "s1")
    web.login("l1")
    page = web.get(f"/cases/{cid}").get_data(as_text=True)
    assert _options(page, "a-propose_excellent-grade") == ["优秀"]
    assert _options(page, "a-evaluate-grade") == ["称职", "基本称职", "不称职", "不定等次"]
    # A value the form never offered is refused beside the field, nothing moves.
    r = web.post(f"/cases/{cid}/actions/propose_excellent",
                 {"version": str(engine.get_case(cid).version), "grade": "称职"})
    assert r.status_code == 422 and "只能是以下之一：优秀" in r.get_data(as_text=True)
    assert engine.get_case(cid).state == "evaluation"
