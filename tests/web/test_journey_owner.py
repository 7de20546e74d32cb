"""A process owner (流程管理员) in the browser: opens the flows, a version page whose state
diagram mermaid draws as SVG with the cases per step, uploads a broken definition and sees
the problem by its line (the link puts the cursor on that line), fixes it and publishes it,
then reads the ledger's charts and downloads the ledger as Excel.

Chromium (Debian's) through Playwright, against the live server with the demo bureau and its
year of history, on SQLite and PostgreSQL. No request may leave the server (mermaid is
vendored). Saves tests/screenshots/owner-*.png.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from openpyxl import load_workbook
from playwright.sync_api import expect

from .conftest import login, no_sideways_scroll, shot

FLOW = "regular-assessment"


def _version_id(live, version: int) -> int:
    return live.engine.version(FLOW, version).id


def test_owner_journey(live, page, phone, db_url):
    backend = db_url.split(":")[0].split("+")[0]
    outside: list[str] = []

    def guard(route):  # anything not from the live server is refused and remembered
        if route.request.url.startswith(live.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.context.route("**/*", guard)
    current = live.engine.flow(FLOW).version
    counts = live.engine.counts_by_state(_version_id(live, current))
    assert counts.get("summary") and counts.get("approved")  # the demo's year of cases

    # --- the flows
    login(page, live, "owner")
    page.locator("header nav").get_by_role("link", name="流程管理").click()
    page.wait_for_url(re.compile(r"/flows$"))
    card = page.locator(".flow-card").filter(has_text="平时考核")
    expect(card).to_contain_text(f"当前版本：第 {current} 版")
    shot(page, f"owner-flows-{backend}")

    # --- a version: the diagram drawn by mermaid, with the cases per step
    card.get_by_role("link", name=f"第 {current} 版", exact=True).click()
    page.wait_for_url(re.compile(rf"/flows/{FLOW}/versions/{current}$"))
    svg = page.locator("figure.diagram svg")
    expect(svg).to_have_count(1)
    expect(svg).to_contain_text(f"个人小结 ({counts['summary']})")
    expect(svg).to_contain_text(f"已审定 ({counts['approved']})")
    expect(svg).to_contain_text("提交小结")  # a transition's label
    expect(page.locator("details.diagram-text pre")).to_contain_text("stateDiagram-v2")
    shot(page, f"owner-version-{backend}")

    # --- a new version from this one: broken first
    page.get_by_role("link", name="以此版本为基础上传新版本").click()
    page.wait_for_url(re.compile(r"/flows/upload\?"))
    area = page.locator("#source")
    source = area.input_value()
    assert source.startswith("# 平时考核")
    broken = source.replace("to: feedback", "to: feedbak", 1)
    line = next(n for n, t in enumerate(broken.splitlines(), 1) if "feedbak" in t)
    area.fill(broken)
    page.get_by_role("button", name="校验").click()
    problems = page.locator(".problems")
    expect(problems).to_be_visible()
    first = page.locator("#problem-1")
    expect(first).to_contain_text(f"第 {line} 行")
    expect(first).to_contain_text("未知状态“feedbak”（是否想写“feedback”？）")
    expect(first.locator(".src-line.marked")).to_contain_text("to: feedbak")
    # The line links are wired when owner.js has run (before that they only jump): on a
    # loaded machine the click could come first.
    page.wait_for_load_state("load")
    first.get_by_role("link", name=f"第 {line} 行").click()
    picked = page.evaluate("() => { const a = document.getElementById('source');"
                           " return a.value.slice(a.selectionStart, a.selectionEnd); }")
    assert picked.strip() == "to: feedbak"
    expect(page.locator("#source")).to_be_focused()
    expect(page.locator("#source-pos")).to_contain_text(f"第 {line} 行")
    shot(page, f"owner-upload-error-{backend}")

    # --- fixed, with a new description: published as the next version
    fixed = area.input_value().replace("to: feedbak", "to: feedback", 1).replace(
        "description: >-\n", "description: >-\n  第二版：补充说明。\n", 1)
    area.fill(fixed)
    page.get_by_role("button", name="发布", exact=True).click()
    page.wait_for_url(re.compile(rf"/flows/{FLOW}/versions/{current + 1}$"))
    expect(page.locator(".flash.success")).to_contain_text(f"第 {current + 1} 版已发布")
    expect(page.locator(".version-head")).to_contain_text("当前版本")
    expect(page.locator("figure.diagram svg")).to_contain_text("个人小结 (0)")  # no cases yet
    assert live.engine.flow(FLOW).version == current + 1
    shot(page, f"owner-published-{backend}")

    # --- the ledger with its charts, then a download
    page.locator("header nav").get_by_role("link", name="台账统计").click()
    page.wait_for_url(re.compile(r"/ledger$"))
    rates = page.locator("svg#rates-chart")
    expect(rates).to_be_visible()
    expect(rates.locator("rect.bar-done").first).to_be_attached()
    grades = page.locator("svg#grades-chart")
    expect(grades).to_be_visible()
    expect(grades.locator("line.limit").first).to_be_attached()
    expect(page.locator("svg#grades-chart text.pool-label").first).to_contain_text("·")
    assert no_sideways_scroll(page)
    shot(page, f"owner-ledger-{backend}")

    with page.expect_download() as got:
        page.locator("#exports-h ~ .download-list").get_by_role(
            "link", name="台账 · Excel").click()
    download = got.value
    assert download.suggested_filename == f"ledger-{FLOW}.xlsx"
    book = load_workbook(io.BytesIO(Path(download.path()).read_bytes()))  # saved unnamed
    sheet = book.active
    assert [c.value for c in sheet[1]][:3] == ["事项编号", "人员编号", "姓名"]
    assert sheet.max_row > 100  # a year of the bureau's cases

    page.get_by_role("link", name="台账", exact=True).click()
    page.wait_for_url(re.compile(r"/ledger/cases"))
    expect(page.locator("table.ledger-table tbody tr").first).to_be_visible()
    shot(page, f"owner-ledger-cases-{backend}")
    assert outside == []

    # --- the same pages on a phone: one column, no sideways scrolling
    login(phone, live, "owner")
    for url, name in ((f"/flows/{FLOW}/versions/{current + 1}", "version"),
                      ("/ledger", "ledger")):
        phone.goto(live.url + url)
        expect(phone.locator("svg").first).to_be_visible()
        assert no_sideways_scroll(phone), url
        shot(phone, f"owner-phone-{name}-{backend}")
