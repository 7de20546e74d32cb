"""Approvers in the browser: a leader (处长) filters the queue, claims a step, evaluates and
meets the rule that a low grade needs a comment; the committee (党组) sends a case back with
a reason, then approves in bulk while the quota meter refuses a pool with too many 好 and
lets the approval through once a box is unticked.

Chromium (Debian's) through Playwright, against the live server with the demo bureau and its
year of history (October's cases wait in 审定), on SQLite and PostgreSQL. Saves
tests/screenshots/approver-*.png.
"""

from __future__ import annotations

import re

from playwright.sync_api import expect

from workflows.engine import Actor

from .conftest import login, shot

FLOW = "regular-assessment"
NOVEMBER, OCTOBER = "2026-11", "2026-10"


def _fire(live, case_id: int, trigger: str, who: str, **data) -> None:
    version = live.engine.get_case(case_id).version
    live.engine.fire(case_id, trigger, Actor.person(live.person(who)), data=data,
                     expected_version=version)


def test_approver_journey(live, page, db_url):
    backend = db_url.split(":")[0].split("+")[0]
    # The bureau (机关) has 21 一般干部 across its divisions: at most floor(21 × 40%) = 8 好
    # in November's staff pool. Eight are graded 好 here (six of 公务员管理处, two of
    # 考核奖惩处); the leader's 好 for RS0103 below makes nine.
    graded = {"RS0101": ("RS0104", "RS0105", "RS0106", "RS0107", "RS0108", "RS0109"),
              "RS0201": ("RS0204", "RS0205")}
    mine = {code: live.case_of(code, FLOW, NOVEMBER)
            for code in ("RS0103", *graded["RS0101"], *graded["RS0201"])}
    for code, cid in mine.items():
        _fire(live, cid, "submit", code, summary="十一月工作小结")
    for leader, codes in graded.items():
        for code in codes:
            _fire(live, mine[code], "evaluate", leader, grade="好")
            _fire(live, mine[code], "accept", code)

    # --- the leader: queue, filter, claim, evaluate
    login(page, live, "leader1")
    page.get_by_role("navigation").get_by_role("link", name="审批队列").click()
    page.get_by_label("流程").select_option(FLOW)
    page.get_by_label("环节", exact=True).select_option(label="领导评鉴")
    page.get_by_role("button", name="筛选").click()
    row = page.locator(f"#q-{mine['RS0103']}")
    expect(row).to_contain_text("李明轩")
    expect(row).to_contain_text("领导评鉴")
    expect(row.locator("time")).to_have_count(1)  # due date
    shot(page, f"approver-queue-{backend}")
    row.get_by_role("button", name=re.compile("认领")).click()  # htmx: the row is redrawn
    expect(page.locator(f"#q-{mine['RS0103']}")).to_contain_text("由您认领")
    page.locator(f"#q-{mine['RS0103']}").get_by_role("link", name="李明轩", exact=True).click()

    form = page.locator("#a-evaluate")
    form.get_by_label("考核等次").select_option("一般")
    form.get_by_role("button", name="评鉴定等").click()
    # 一般 needs an evaluation comment (required_when): said beside that field.
    expect(page.locator("#a-evaluate-evaluation_comment-error")).to_contain_text("评鉴意见")
    expect(page.locator(".case-head")).to_contain_text("领导评鉴")
    page.locator("#a-evaluate").get_by_label("考核等次").select_option("好")
    page.locator("#a-evaluate").get_by_role("button", name="评鉴定等").click()
    expect(page.locator(".case-head")).to_contain_text("结果反馈")
    _fire(live, mine["RS0103"], "accept", "RS0103")
    page.get_by_role("button", name="退出登录").click()
    page.wait_for_url(re.compile(r"/login"))

    # --- the committee: send back with a reason
    login(page, live, "committee1")
    october = live.case_of("RS0106", FLOW, OCTOBER)  # 黄俊杰, waiting in 审定
    page.goto(f"{live.url}/cases/{october}")
    back = page.locator("#a-send_back")
    back.get_by_role("button", name="退回重评").click()
    expect(page.locator("#a-send_back-comment-error")).to_be_visible()
    expect(page.locator(".case-head")).to_contain_text("审定")
    page.locator("#a-send_back").get_by_label(re.compile("理由")).fill("等次依据不足，请补充服务对象评价")
    page.locator("#a-send_back").get_by_role("button", name="退回重评").click()
    expect(page.locator(".case-head")).to_contain_text("领导评鉴")
    expect(page.locator(".timeline")).to_contain_text("等次依据不足")

    # --- bulk approval with the quota meter
    page.get_by_role("navigation").get_by_role("link", name="审批队列").click()
    page.get_by_role("link", name=re.compile("审定通过")).click()
    page.wait_for_url(re.compile(r"/queue/bulk\?"))
    page.get_by_label("全选").check()
    pool = page.locator(".pool.over")
    expect(pool).to_have_count(1)
    expect(pool).to_contain_text("示范市人力资源和社会保障局")  # the 机关's pool
    expect(pool).to_contain_text(NOVEMBER)
    expect(pool.locator('[data-f="limit"]')).to_have_text("8")
    expect(pool.locator('[data-f="selected"]')).to_have_text("9")
    submit = page.locator("#bulk-submit")
    expect(submit).to_be_disabled()
    expect(page.locator("#bulk-reason")).to_contain_text("超出限额")
    shot(page, f"approver-bulk-over-{backend}")

    page.locator(f'input[name="case_ids"][value="{mine["RS0103"]}"]').uncheck()
    expect(page.locator(".pool.over")).to_have_count(0)
    expect(submit).to_be_enabled()
    ticked = page.locator('input[name="case_ids"]:checked').count()
    submit.click()
    expect(page.locator(".flash")).to_contain_text(f"完成 {ticked} 件，未通过 0 件")
    shot(page, f"approver-bulk-done-{backend}")
    assert live.engine.get_case(mine["RS0104"]).state == "approved"
    assert live.engine.get_case(mine["RS0103"]).state == "approval"
