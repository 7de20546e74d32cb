"""The process owners' pages (流程管理) and the ledger pages (台账统计) through the Flask client:
who may open them, the version page with its diagram text and counts, validating with the
problems shown by line, saving and publishing (new, identical, stale), and the exports the
pages link to. Both databases.
"""

from __future__ import annotations

import datetime as dt
import io
import re

import pytest
from openpyxl import load_workbook

from service.api.flows import MAX_SOURCE
from service.web import charts
from tests.conftest import REGULAR, ROOT
from tests.test_ledger import NOW, build
from workflows import contact_points as cp
from workflows import facts
from workflows.engine import PUBLISHED

from .test_accessibility import _check, contrast

FLOW = "regular-assessment"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
SOURCE = REGULAR.read_text(encoding="utf-8")
PAGES = ["/flows", f"/flows/{FLOW}/versions/1", "/flows/upload", "/ledger", "/ledger/cases",
         "/ledger/eligibility", "/ledger/contact-points"]
LEDGER_PAGES = PAGES[3:]


def text(r) -> str:
    return r.get_data(as_text=True)


def ok(r, status=200) -> str:
    assert r.status_code == status, text(r)[:3000]
    return text(r)


def english(web) -> None:
    """Switch the session to English (the pages are Chinese by default)."""
    assert web.post("/lang", {"lang": "en", "next": "/flows"}).status_code == 302


def versions(engine) -> list[tuple[int, str]]:
    return [(v.version, v.status) for v in engine.versions(FLOW)]


def changed(description: str) -> str:
    """The shipped definition with another description: new content, a new version."""
    out, n = re.subn(r"(?m)^description: >-\n(  .*\n)+", f"description: {description}\n",
                     SOURCE)
    assert n == 1
    return out


def broken() -> tuple[str, int]:
    """The shipped definition with `to: feedbak`, and the line that holds it."""
    source = SOURCE.replace("to: feedback", "to: feedbak", 1)
    line = next(n for n, t in enumerate(source.splitlines(), 1) if "feedbak" in t)
    return source, line


@pytest.fixture
def cases(web, engine, org, db):
    """The ledger tests' months (2025-12, 2026-10, 2026-11) on a clock at 2026-12-15."""
    engine.clock = lambda: NOW
    return build(engine, org, db)


# --------------------------------------------------------------------------- access


def test_every_page_answers_an_owner(web, cases):
    web.login("owner")
    for url in PAGES:
        page = ok(web.get(url))
        assert 'class="coming"' not in page  # both nav entries are links now
        assert 'href="/flows"' in page and 'href="/ledger"' in page
    r = web.get(f"/flows/{FLOW}/versions/1/source")
    assert r.status_code == 200 and r.mimetype == "application/yaml"
    assert r.headers["Content-Disposition"] == f'attachment; filename="{FLOW}-v1.yaml"'
    assert text(r) == SOURCE


def test_staff_get_the_403_page_and_change_nothing(web, engine, cases):
    web.login("s1")
    for url in [*PAGES, f"/flows/{FLOW}/versions/1/source"]:
        page = ok(web.get(url), 403)
        assert "<h1>" in page and "href=\"/flows\"" not in page  # no owner entries in the nav
    for data in ({"do": "publish", "source": changed("x")}, {"do": "validate", "source": SOURCE}):
        ok(web.post("/flows/upload", data), 403)
    ok(web.post(f"/flows/{FLOW}/versions/1/publish"), 403)
    assert versions(engine) == [(1, PUBLISHED)]


def test_admins_read_the_flows_but_only_owners_publish(web, engine, cases):
    web.login("admin")
    for url in PAGES:
        ok(web.get(url))
    upload = ok(web.get("/flows/upload"))
    assert 'value="validate"' in upload and 'value="publish"' not in upload
    ok(web.post("/flows/upload", {"do": "validate", "source": SOURCE}))
    ok(web.post("/flows/upload", {"do": "publish", "source": changed("admin")}), 403)
    ok(web.post("/flows/upload", {"do": "draft", "source": changed("admin")}), 403)
    assert versions(engine) == [(1, PUBLISHED)]


def test_leaders_read_the_ledger_of_their_unit_only(web, cases):
    web.login("l1")
    for url in LEDGER_PAGES:
        ok(web.get(url))
    ok(web.get("/flows"), 403)
    page = ok(web.get("/ledger/cases?period=2026-11"))
    assert "测试s1" in page and "测试t1" not in page  # SEC1's cases, not SEC2's
    assert '<option value="{}"'.format(web.org.units["SEC2"]) not in page  # no other unit


def test_a_post_without_the_csrf_token_stores_nothing(web, engine, cases):
    web.login("owner")
    ok(web.post("/flows/upload", {"do": "publish", "source": changed("no token")}, csrf=False),
       403)
    ok(web.post(f"/flows/{FLOW}/versions/1/publish", csrf=False), 403)
    assert versions(engine) == [(1, PUBLISHED)]


# --------------------------------------------------------------------------- flows


def test_flows_list_and_version_page(web, cases):
    web.login("owner")
    english(web)
    page = ok(web.get("/flows"))
    assert "Regular assessment" in page and "Current version: 1" in page
    assert f'href="/flows/{FLOW}/versions/1"' in page
    assert re.search(r'data-label="Cases">\s*14\s*<', page)  # the fixture's 14 cases

    page = ok(web.get(f"/flows/{FLOW}/versions/1"))
    # The diagram text, with the cases per state (2026-11: 1 summary, 1 evaluation, …).
    diagram = re.search(r'<pre class="mermaid" id="diagram">(.*?)</pre>', page, re.S).group(1)
    assert diagram.startswith("stateDiagram-v2")
    assert "summary : Self summary (1)" in diagram and "approved : Approved (10)" in diagram
    assert "summary --&gt; evaluation : Submit summary" in diagram
    assert page.count("stateDiagram-v2") == 2  # also as text in <details>
    assert "vendor/mermaid.min.js" in page and "owner.js" in page
    # Metadata, the states with both labels and counts, the source link.
    assert engine_hash(web) in page
    assert re.search(r"<td data-label=\"中文\" lang=\"zh-CN\">个人小结</td>\s*"
                     r"<td data-label=\"English\" lang=\"en\">Self summary</td>", page)
    assert f'href="/flows/{FLOW}/versions/1/source"' in page
    assert "Publish version" not in page  # already published


def engine_hash(web) -> str:
    return web.client.application.extensions["civflow"].version(FLOW, 1).content_hash


def test_an_unknown_version_is_the_404_page(web, cases):
    web.login("owner")
    ok(web.get(f"/flows/{FLOW}/versions/9"), 404)
    ok(web.get("/flows/nope/versions/1"), 404)


# --------------------------------------------------------------------------- uploading


def test_validate_lists_problems_by_line_and_stores_nothing(web, engine, cases):
    web.login("owner")
    english(web)
    source, line = broken()
    page = ok(web.post("/flows/upload", {"do": "validate", "source": source,
                                         "filename": "broken.yaml"}), 422)
    assert "problem(s) in the definition; nothing was stored" in page
    first = re.search(r'<li id="problem-1" class="problem">(.*?)</li>', page, re.S).group(1)
    assert f'data-line="{line}">Line {line}</a>' in first
    assert "unknown state &#39;feedbak&#39; (did you mean &#39;feedback&#39;?)" in first
    # The lines around it, numbered, the problem's own line marked.
    marked = re.search(r'<span class="src-line marked"><span class="ln" aria-hidden="true">'
                       r'(\d+)</span>(.*?)\n', first)
    assert marked.group(1) == str(line) and "to: feedbak" in marked.group(2)
    assert f'<span class="ln" aria-hidden="true">{line - 2}</span>' in first
    # The text comes back to be fixed; nothing was stored.
    assert "to: feedbak" in re.search(r'<textarea id="source".*?</textarea>', page, re.S).group(0)
    assert versions(engine) == [(1, PUBLISHED)]


def test_validate_a_good_definition(web, engine, cases):
    web.login("owner")
    english(web)
    page = ok(web.post("/flows/upload", {"do": "validate", "source": SOURCE}))
    assert "The definition is valid." in page and "5 steps, 8 actions" in page
    assert "Identical content is already stored as version 1 (published)" in page
    page = ok(web.post("/flows/upload", {"do": "validate", "source": changed("新的说明")}))
    assert "New content" in page
    assert versions(engine) == [(1, PUBLISHED)]


def test_bad_forms_are_refused_beside_their_fields(web, engine, cases):
    web.login("owner")
    english(web)
    page = ok(web.post("/flows/upload", {"do": "validate", "source": ""}), 422)
    assert 'id="source-error"' in page and 'aria-invalid="true"' in page
    page = ok(web.post("/flows/upload", {"do": "validate", "source": "  "}), 422)
    assert 'id="problem-1"' in page  # blank text: the validator's own problem
    page = ok(web.post("/flows/upload", {"do": "publish", "source": SOURCE,
                                         "filename": "x" * 300}), 422)
    assert 'id="filename-error"' in page
    page = ok(web.post("/flows/upload", {
        "do": "validate", "source": "", "file": (io.BytesIO(b"flow: \xff\xfe x"),
                                                 "latin.yaml")},
        content_type="multipart/form-data"), 422)
    assert 'id="file-error"' in page and "not UTF-8" in page
    page = ok(web.post("/flows/upload", {
        "do": "validate", "file": (io.BytesIO(b"#" * (MAX_SOURCE * 4 + 1)), "big.yaml")},
        content_type="multipart/form-data"), 422)
    assert 'id="file-error"' in page and "too large" in page
    page = ok(web.post("/flows/upload", {"do": "validate", "source": "#" * (MAX_SOURCE + 1)}),
              422)
    assert 'id="source-error"' in page
    ok(web.post("/flows/upload", {"do": "delete", "source": SOURCE}), 422)
    assert versions(engine) == [(1, PUBLISHED)]


def test_publish_creates_a_version_then_identical_content_changes_nothing(web, engine, cases):
    web.login("owner")
    english(web)
    source = changed("第二版")
    r = web.post("/flows/upload", {"do": "publish", "source": source, "filename": "v2.yaml"})
    assert r.status_code == 302 and r.headers["Location"] == f"/flows/{FLOW}/versions/2"
    assert versions(engine) == [(1, PUBLISHED), (2, PUBLISHED)]
    assert engine.flow(FLOW).version == 2
    page = ok(web.get(r.headers["Location"]))
    assert "Version 2 of Regular assessment is published" in page
    assert "测试owner" in page  # published by
    assert "第二版" in page

    # The same text again: nothing new. Version 1's text: published already, not current.
    r = web.post("/flows/upload", {"do": "publish", "source": source})
    assert r.headers["Location"] == f"/flows/{FLOW}/versions/2"
    assert "Identical content is already stored as version 2" in ok(web.get(r.headers["Location"]))
    r = web.post("/flows/upload", {"do": "publish", "source": SOURCE})
    assert r.headers["Location"] == f"/flows/{FLOW}/versions/1"
    page = ok(web.get(r.headers["Location"]))
    assert "version 2 is newer and stays the one new cases start on" in page
    assert versions(engine) == [(1, PUBLISHED), (2, PUBLISHED)]


def test_a_file_upload_saved_as_draft_then_published_from_its_page(web, engine, cases):
    web.login("owner")
    english(web)
    r = web.post("/flows/upload", {"do": "draft", "source": "", "file": (
        io.BytesIO(("\ufeff" + changed("草稿")).encode("utf-8")), "draft.yaml")},
        content_type="multipart/form-data")
    assert r.headers["Location"] == f"/flows/{FLOW}/versions/2"
    assert versions(engine) == [(1, PUBLISHED), (2, "draft")]
    page = ok(web.get(r.headers["Location"]))
    assert "Saved as draft version 2" in page and "Publish version 2" in page
    assert "draft.yaml" in page

    r = web.post(f"/flows/{FLOW}/versions/2/publish")
    assert r.headers["Location"] == f"/flows/{FLOW}/versions/2"
    assert "Version 2 of Regular assessment is published" in ok(web.get(r.headers["Location"]))
    assert versions(engine) == [(1, PUBLISHED), (2, PUBLISHED)]
    r = web.post(f"/flows/{FLOW}/versions/2/publish")  # twice: nothing changes
    assert "already the current version: nothing changed" in ok(web.get(r.headers["Location"]))


def test_a_stale_draft_says_so_and_publishing_it_keeps_the_newer_version(web, engine, cases):
    web.login("owner")
    english(web)
    web.post("/flows/upload", {"do": "draft", "source": changed("旧草稿")})
    web.post("/flows/upload", {"do": "publish", "source": changed("新版本")})
    assert versions(engine) == [(1, PUBLISHED), (2, "draft"), (3, PUBLISHED)]
    flows = ok(web.get("/flows"))
    assert "older than the current version" in flows
    page = ok(web.get(f"/flows/{FLOW}/versions/2"))
    assert "This draft is older than the current version 3" in page
    r = web.post(f"/flows/{FLOW}/versions/2/publish")
    page = ok(web.get(r.headers["Location"]))
    assert "version 3 is newer: new cases keep starting on version 3" in page
    assert engine.flow(FLOW).version == 3


def test_start_a_new_version_from_a_stored_one(web, cases):
    web.login("owner")
    page = ok(web.get(f"/flows/upload?flow={FLOW}&version=1"))
    area = re.search(r'<textarea id="source"[^>]*>\n(.*?)</textarea>', page, re.S).group(1)
    assert area.startswith("# 平时考核") and "flow: regular-assessment" in area
    assert 'value="regular-assessment.yaml"' in page


# --------------------------------------------------------------------------- ledger


def test_statistics_page_draws_charts_with_tables(web, cases):
    web.login("owner")
    english(web)
    page = ok(web.get(f"/ledger?flow={FLOW}&period_from=2026-10&period_to=2026-12"))
    # Figures: 13 cases, 9 closed (69.2 %), 1 overdue.
    assert re.search(r'<span class="figure">13</span>', page)
    assert re.search(r'<span class="figure">69.2%</span>', page)
    rates = re.search(r'<svg class="chart" id="rates-chart".*?</svg>', page, re.S).group(0)
    assert '<title id="rates-chart-title">' in rates and "<desc" in rates
    assert "2026-10 · completion 100%" in rates and "2026-11 · overdue 10%" in rates
    assert "2026-12" in rates  # a period of the range without cases still has its label
    # Grades: the latest graded period of the range (2026-11), pools against their limits.
    grades = re.search(r'<svg class="chart" id="grades-chart".*?</svg>', page, re.S).group(0)
    assert 'Grades against the quota <span class="period">2026-11</span>' in page
    assert ">部机关 · Staff</text>" in grades and "好 3 / limit 3" in grades
    assert '<a class="chip" href="/ledger?grade_period=2026-10' in page
    # The numbers below it, the 机关's staff pool: 8 cases, 3 好, 3 较好, 1 一般, 0 较差,
    # 1 ungraded, limit 3.
    assert re.search(r"<th scope=\"row\">部机关 · Staff</th>" +
                     "".join(rf"<td class=\"num\">{n}</td>\s*" for n in (8, 3, 3, 1, 0, 1, 3)),
                     page)
    page = ok(web.get(f"/ledger?flow={FLOW}&period_from=2026-10&period_to=2026-12"
                      "&grade_period=2026-10"))
    assert 'Grades against the quota <span class="period">2026-10</span>' in page
    assert re.search(r"<th scope=\"row\">部机关 · Staff</th><td class=\"num\">3</td>", page)


def test_ledger_filter_errors_show_beside_the_field(web, cases):
    web.login("owner")
    page = ok(web.get(f"/ledger?flow={FLOW}&period=2026-13"), 422)
    assert 'id="f-period-error"' in page and "2026-13" in page
    page = ok(web.get(f"/ledger/cases?flow={FLOW}&period_from=2026-12&period_to=2026-10"), 422)
    assert 'id="f-period_to-error"' in page
    ok(web.get("/ledger?flow=nope"), 404)


def test_export_links_answer_csv_and_xlsx(web, cases):
    web.login("owner")
    seen = set()
    for url in (f"/ledger?flow={FLOW}&period=2026-11", f"/ledger/cases?flow={FLOW}&period=2026-11",
                "/ledger/contact-points?year=2026"):
        page = ok(web.get(url))
        links = [h.replace("&amp;", "&") for h in re.findall(r'<a class="button secondary" '
                                                              r'href="([^"]+)" download>', page)]
        assert links, url
        for link in links:
            r = web.get(link)
            assert r.status_code == 200, (link, text(r)[:500])
            if "format=csv" in link:
                assert r.mimetype == "text/csv" and r.data.startswith(b"\xef\xbb\xbf")
            else:
                assert r.mimetype == XLSX
                load_workbook(io.BytesIO(r.data))  # a real workbook
            seen.add(link.split("?")[0])
    assert seen == {"/api/v1/ledger/grades", "/api/v1/ledger/cases",
                    "/api/v1/ledger/good-counts", "/api/v1/contact-points"}
    r = web.get(f"/api/v1/ledger/cases?flow={FLOW}&period=2026-11&format=csv")
    assert r.data.decode("utf-8-sig").count("\r\n") == 11  # header and the month's 10 cases


def test_ledger_table_pages_and_filters(web, cases):
    web.login("owner")
    page = ok(web.get(f"/ledger/cases?flow={FLOW}&period=2026-11&state=approved"))
    assert page.count('<td data-label="') // 8 == 6  # six approved cases, 8 cells a row
    assert f'href="/cases/{cases["s1"]}"' in page
    page = ok(web.get(f"/ledger/cases?flow={FLOW}&per_page=5&page=2"))
    assert "2 / 3" in page or "第 2 页" in page or "Page 2 of 3" in page


def test_eligibility_list_page(web, engine, org, db, cases):
    engine.publish((ROOT / "definitions" / "rank-promotion.yaml").read_text(encoding="utf-8"),
                   "rank-promotion.yaml")
    with db.unit_of_work() as s:
        facts.add_rank(s, org.s1, "二级主任科员", dt.date(2022, 1, 1), by=org.chief)
    web.login("l1")
    english(web)
    page = ok(web.get("/ledger/eligibility?date=2026-03-02"))
    assert "people eligible on 2026-03-02" in page
    row = re.search(r"<tr>\s*<td data-label=\"Person\">测试s1.*?</tr>", page, re.S).group(0)
    assert "二级主任科员" in row and "since 2022-01-01" in row
    assert "一级主任科员" in row  # the next rank on the ladder, judged
    assert "测试t1" not in page  # SEC2: not the leader of SEC1's to see
    assert "no current rank on record" in page  # s2 and the others
    r = web.get("/api/v1/ledger/eligibility?flow=rank-promotion&date=2026-03-02&format=csv")
    assert re.search(r'href="/api/v1/ledger/eligibility\?[^"]*format=csv', page)
    assert r.status_code == 200 and r.mimetype == "text/csv"
    ok(web.get("/ledger/eligibility?date=2026-02-30"), 422)


def test_contact_point_score_sheets_page(web, org, db, cases):
    with db.unit_of_work() as s:
        cp.put_sheet(s, "SEC1", 2026, {"items": [{"item": "台账管理", "score": 18, "max": 20},
                                                  {"item": "周记实", "score": 27, "max": 30}],
                                        "raised": True}, by=org.ids["owner"], now=NOW)
        cp.put_sheet(s, "SEC2", 2026, {"score": 50}, by=org.ids["owner"], now=NOW)
    web.login("owner")
    english(web)
    page = ok(web.get("/ledger/contact-points?year=2026"))
    rows = re.findall(r"<tr>(.*?)</tr>", page.split("<tbody>")[1], re.S)
    assert ["干部二科" in rows[0], "干部一科" in rows[1]] == [True, True]  # 50 before 45
    assert '1 <small class="muted">/ 2</small>' in rows[0]
    assert ">45.0<" in rows[1] and "台账管理 18.0/20.0" in rows[1] and "周记实 27.0/30.0" in rows[1]
    assert "“excellent” ratio raised" in rows[1]
    web.login("l2")
    page = ok(web.get("/ledger/contact-points?year=2026"))
    assert "干部二科" in page and "干部一科" not in page  # their own unit's sheet only
    ok(web.get("/ledger/contact-points?year=1800"), 422)


def test_pages_have_labels_and_unique_ids(web, cases):
    web.login("owner")
    source, _line = broken()
    pages = {url: text(web.get(url)) for url in [*PAGES, f"/ledger?flow={FLOW}&period=2026-11"]}
    pages["upload with problems"] = text(web.post("/flows/upload", {"do": "validate",
                                                                    "source": source}))
    pages["ledger with errors"] = text(web.get("/ledger?period=2026-13"))
    for url, html in pages.items():
        _check(html, url)
        assert "<svg" not in html or 'role="img"' in html


def test_chart_colours_are_readable_on_white():
    css = (ROOT / "service" / "web" / "static" / "owner.css").read_text(encoding="utf-8")
    fills = dict(re.findall(r"^\.(g\d|bar-done|bar-late) \{ fill: (#[0-9a-f]{6})", css, re.M))
    assert set(fills) == {"g0", "g1", "g2", "g3", "g4", "bar-done", "bar-late"}
    low = {k: round(contrast(v, "#ffffff"), 2) for k, v in fills.items()
           if contrast(v, "#ffffff") < 4.5}
    assert not low, low


# --------------------------------------------------------------------------- charts


def test_rate_chart_geometry():
    chart = charts.rate_chart(
        [{"period": "2026-10", "total": 4, "completion_rate": 1.0, "overdue_rate": 0.25},
         {"period": "2026-11", "total": 0, "completion_rate": None, "overdue_rate": None}],
        {"completion": "done", "overdue": "late", "none": "none"})
    done, late = chart.rects  # no bars for the empty period
    assert done.css == "bar-done" and late.css == "bar-late"
    assert done.h == pytest.approx(4 * late.h)
    assert done.y + done.h == pytest.approx(late.y + late.h)  # both stand on the axis
    assert [t.text for t in chart.texts if t.css == "none"] == ["none"]


def test_grade_chart_puts_the_limit_line_at_the_limit():
    pools = [{"label": "A", "size": 5, "graded": {"好": 3, "较好": 1}, "ungraded": 1, "limit": 2,
              "value": "好", "over": True},
             {"label": "B", "size": 10, "graded": {"好": 1}, "ungraded": 0, "limit": 4,
              "value": "好", "over": False}]
    chart = charts.grade_chart(pools, ["好", "较好"], {"ungraded": "u", "limit": "limit"})
    good_a, other_a, ungraded_a, good_b = chart.rects
    assert (good_a.css, other_a.css, ungraded_a.css) == ("g0", "g1", "gu")
    assert good_a.w == pytest.approx(3 * good_b.w)
    line_a, line_b = chart.lines
    assert line_a.css == "limit over" and line_b.css == "limit"
    assert line_a.x1 - good_a.x == pytest.approx(2 * good_b.w)  # at 2 cases
    assert charts.percent(0.6923) == "69.2%" and charts.percent(1.0) == "100%"
    assert charts.percent(None) == "—"
    assert charts.grade_order(["较好", "好"], "好") == ["好", "较好"]
