"""The pages under the Content-Security-Policy, in Chromium: htmx (a claim redraws the queue's
row), mermaid (the state diagram), Swagger UI (/docs) and the owner's upload page work with
`script-src 'self'`, and the browser reports no violation on any page; a flow whose labels
are HTML (`<img onerror>`, `<b>`, `<a href=javascript:>`) is drawn with those labels as
text, no element made of them (issue 11, items 8 and 9; tests/reliability/test_attacks.py
checks the same from the server's side).
"""

from __future__ import annotations

import re

from playwright.sync_api import expect

from workflows.engine import Actor

from .conftest import login

FLOW = "regular-assessment"
WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI + " " + e.sourceFile);
});
"""
HTML_LABELS = """\
flow: html-labels
title: 标签
states:
  - {name: draft, label: '<img src=x onerror="window.__xss=1">'}
  - {name: done, label: '<b>bold</b> & <a href="javascript:window.__xss=2">link</a>', final: true}
transitions:
  - {trigger: finish, from: draft, to: done, by: subject, label: '<i>go</i>'}
"""


def _watch(page) -> list[str]:
    """Console errors and uncaught exceptions of the page (CSP refusals are logged there)."""
    errors: list[str] = []
    page.add_init_script(WATCH)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error"
            and not m.text.startswith("Failed to load resource") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    # A missing resource is logged without its address: record it from the response
    # (the browser's own /favicon.ico aside — there is none).
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status == 404
            and not r.url.endswith("/favicon.ico") else None)
    return errors


def _clean(page, errors: list[str], where: str) -> None:
    assert page.evaluate("window.__violations") == [], where
    assert not errors, (where, errors)


def test_pages_work_under_the_csp(live, page):
    errors = _watch(page)
    page.goto(f"{live.url}/login")
    _clean(page, errors, "login")
    login(page, live, "owner")
    for path in ("/home", "/notifications", "/queue", "/flows", "/flows/upload", "/ledger",
                 "/ledger/cases", "/ledger/eligibility", "/ledger/contact-points"):
        page.goto(f"{live.url}{path}")
        page.wait_for_load_state("networkidle")
        _clean(page, errors, path)

    current = live.engine.flow(FLOW).version
    page.goto(f"{live.url}/flows/{FLOW}/versions/{current}")
    expect(page.locator("figure.diagram svg")).to_have_count(1)  # mermaid drew it
    expect(page.locator("figure.diagram svg")).to_contain_text("提交小结")
    _clean(page, errors, "version page")

    page.goto(f"{live.url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("civflow")
    expect(page.locator(".opblock").first).to_be_visible()  # the operations are listed
    _clean(page, errors, "/docs")


def test_htmx_works_under_the_csp(live, page):
    errors = _watch(page)
    case = live.case_of("RS0103", FLOW, "2026-11")
    version = live.engine.get_case(case).version
    live.engine.fire(case, "submit", Actor.person(live.person("RS0103")),
                     data={"summary": "十一月工作小结"}, expected_version=version)
    login(page, live, "leader1")
    page.goto(f"{live.url}/queue")
    row = page.locator(f"#q-{case}")
    row.get_by_role("button", name=re.compile("认领")).click()  # htmx redraws the row
    expect(page.locator(f"#q-{case}")).to_contain_text("由您认领")
    _clean(page, errors, "queue")


def test_html_in_labels_is_drawn_as_text(live, page):
    live.engine.upload(HTML_LABELS, "html-labels.yaml", by=live.person("RS0001"))
    errors = _watch(page)
    login(page, live, "owner")
    page.goto(f"{live.url}/flows/html-labels/versions/1")
    svg = page.locator("figure.diagram svg")
    expect(svg).to_have_count(1)
    expect(svg).to_contain_text('<img src=x onerror="window.__xss=1">')
    expect(svg).to_contain_text("<b>bold</b> & <a href=")
    expect(svg).to_contain_text("<i>go</i>")
    for tag in ("img", "b", "a", "i"):
        assert svg.locator(tag).count() == 0, tag
    assert page.evaluate("window.__xss") is None
    _clean(page, errors, "html labels")
