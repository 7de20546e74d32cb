"""A staff member's month in the browser, on a phone (390 px): log in, write a weekly record
(周记实), try to submit the summary empty and see the error beside the field, submit it,
accept the leader's feedback (认可结果) and read the history as a timeline.

Chromium (Debian's) through Playwright, against the live server with the demo bureau, on
SQLite and PostgreSQL. Saves tests/screenshots/staff-*.png.
"""

from __future__ import annotations

import re

from playwright.sync_api import expect

from workflows.engine import Actor

from .conftest import login, no_sideways_scroll, shot

FLOW = "regular-assessment"
PERIOD = "2026-11"


def test_staff_journey_on_a_phone(live, phone, db_url):
    backend = db_url.split(":")[0].split("+")[0]
    # staff02 (李明轩, 公务员管理处): the demo opened November's case with a few weekly records.
    case_id = live.case_of("RS0103", FLOW, PERIOD)
    page = phone

    login(page, live, "staff02")
    # Keyboard: the first Tab reaches the skip link, which leads into the content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    todo = page.locator(".todo").filter(has_text="平时考核")
    expect(todo).to_have_count(1)
    expect(todo).to_contain_text("个人小结")
    expect(todo.locator("time")).to_have_count(1)  # its due date
    assert no_sideways_scroll(page)
    shot(page, f"staff-home-{backend}")

    todo.get_by_role("link").click()
    page.wait_for_url(re.compile(rf"/cases/{case_id}$"))

    # 周记实: one row, then the record shows it.
    week = page.locator("#a-record_week")
    week.get_by_label("周次").first.fill("第48周")
    week.get_by_label("本周工作").first.fill("完成公务员登记材料审核 32 份")
    week.get_by_role("button", name="记录周记实").click()
    expect(page.locator(".flash.success")).to_be_visible()
    expect(page.locator("#record-h + .record-list")).to_contain_text("完成公务员登记材料审核 32 份")

    # The summary sent empty: the message sits beside the field, nothing moves.
    submit = page.locator("#a-submit")
    submit.get_by_role("button", name="提交小结").click()
    error = page.locator("#a-submit-summary-error")
    expect(error).to_be_visible()
    expect(page.locator("#a-submit-summary")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#a-submit-summary")).to_have_attribute(
        "aria-describedby", "a-submit-summary-error")
    expect(page.locator(".case-head")).to_contain_text("个人小结")
    shot(page, f"staff-error-{backend}")

    page.locator("#a-submit-summary").fill("本月完成登记审核和培训组织，按期报送统计。")
    indicators = page.locator("#a-submit-individual_indicators")
    indicators.get_by_label("指标").first.fill("登记材料审核")
    indicators.get_by_label("目标").first.fill("30 份")
    indicators.get_by_label("完成情况").first.fill("32 份")
    page.locator("#a-submit").get_by_role("button", name="提交小结").click()
    expect(page.locator(".case-head")).to_contain_text("领导评鉴")

    # The leader evaluates (not this journey's user): straight through the engine.
    leader = live.person("RS0101")
    version = live.engine.get_case(case_id).version
    live.engine.fire(case_id, "evaluate", Actor.person(leader),
                     data={"grade": "较好", "evaluation_comment": "工作扎实"},
                     expected_version=version)

    page.goto(f"{live.url}/home")
    page.locator(".todo").filter(has_text="结果反馈").get_by_role("link").click()
    expect(page.locator("#record-h + .record-list")).to_contain_text("较好")
    page.locator("#a-accept").get_by_role("button", name="认可结果").click()
    expect(page.locator(".flash.success")).to_be_visible()
    expect(page.locator(".case-head")).to_contain_text("审定")

    timeline = page.locator(".timeline li")
    expect(timeline.first).to_contain_text("认可结果")  # newest first
    expect(timeline.last).to_contain_text("系统")  # opened by the cycle (system)
    expect(page.locator(".timeline")).to_contain_text("评鉴定等")
    expect(page.locator(".timeline")).to_contain_text("王立新")
    assert no_sideways_scroll(page)
    shot(page, f"staff-case-{backend}")
