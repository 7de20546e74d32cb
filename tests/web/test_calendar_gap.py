"""Issue 14.10: the years the working-day calendar does not cover are loud where deadlines
are shown, on SQLite and PostgreSQL.

chinesecalendar 1.11.0 knows 2004–2026, and the State Council's 2027 notice is not out
here: 2027-01-01 counts as a working day. A December case's deadline (5 working days after
the month) falls in January 2027 and may be a day early — the API says so
(`deadline_uncertain`), the case page, the to-dos and the queue mark it, and the owner's
pages carry a banner naming the file to edit. Entering the year in `calendar.yaml` (as
docs/calendar.md says) moves the deadline and lifts the marks.

The 2027 dates used below are test data (a New Year's Day off, which every notice has
given), not the notice.
"""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import ROOT, Clock, cst
from workflows.calendar import WorkCalendar
from workflows.engine import Engine

MARK = "节假日未收录"
BANNER = "2027 年节假日安排尚未收录"


@pytest.fixture
def folder(tmp_path):
    """A definitions folder holding the shipped (empty) calendar file."""
    shutil.copy2(ROOT / "definitions" / "calendar.yaml", tmp_path / "calendar.yaml")
    return tmp_path


@pytest.fixture
def engine(db, folder):
    """Overrides tests/conftest.py's: on a clock in late December, with the folder's
    calendar."""
    return Engine(db, clock=Clock(cst(2026, 12, 28, 10)),
                  calendar=WorkCalendar.load(folder))


def _page(client, url: str) -> str:
    r = client.get(url)
    assert r.status_code == 200, r.status_code
    return r.get_data(as_text=True)


def test_a_deadline_in_an_uncovered_year_is_marked_until_the_year_is_entered(
        api, web, engine, org, folder):
    december = engine.start_case("regular-assessment", org.s1, period_key="2026-12")
    november = engine.start_case("regular-assessment", org.s2, period_key="2026-11")
    # 5 working days after 31 December, 1 January counted: 1, 4, 5, 6, 7 January.
    assert december.deadline_at == cst(2027, 1, 8)
    api_case = api.get("s1", f"/api/v1/cases/{december.id}").json
    assert api_case["deadline_uncertain"] is True
    assert api.get("s2", f"/api/v1/cases/{november.id}").json["deadline_uncertain"] is False
    listed = {c["id"]: c["deadline_uncertain"]
              for c in api.get("owner", "/api/v1/cases").json["items"]}
    assert listed == {december.id: True, november.id: False}
    queue = {c["id"]: c["deadline_uncertain"] for c in api.get("s1", "/api/v1/queue").json["items"]}
    assert queue == {december.id: True}

    web.login("s1")  # the person: the mark on the to-do and the case page, no banner
    home = _page(web, "/home")
    assert MARK in home and BANNER not in home
    assert MARK in _page(web, f"/cases/{december.id}")
    owner = web.client.application.test_client()
    page = type(web)(owner, org)
    page.login("owner")  # the process owner: the banner, naming the file to edit
    assert MARK not in _page(owner, f"/cases/{november.id}").replace(BANNER, "")
    for url in ("/flows", "/ledger", "/home"):
        text = _page(owner, url)
        assert BANNER in text and str(folder / "calendar.yaml") in text, url
    queue_page = _page(owner, "/queue")
    assert BANNER in queue_page

    # The admin enters the year (docs/calendar.md): holidays, make-up days, `years`.
    (folder / "calendar.yaml").write_text(
        "holidays: [2027-01-01]\nworkdays: []\nyears: [2027]\n", encoding="utf-8")
    engine.calendar = WorkCalendar.load(folder)  # what a restart does
    again = engine.start_case("regular-assessment", org.s3, period_key="2026-12")
    assert again.deadline_at == cst(2027, 1, 9)  # 4, 5, 6, 7, 8 January: a day later
    assert api.get("s3", f"/api/v1/cases/{again.id}").json["deadline_uncertain"] is False
    assert BANNER not in _page(owner, "/flows")
    web.login("s3")
    assert MARK not in _page(web, f"/cases/{again.id}")


def test_the_banner_looks_a_quarter_ahead(api, web, engine):
    """In September 2026 the next quarter ends in December: no banner yet."""
    engine.clock.now = cst(2026, 9, 15, 10)
    web.login("owner")
    assert BANNER not in _page(web, "/flows")
    engine.clock.now = cst(2026, 10, 15, 10)  # January 2027 is within the quarter ahead
    assert BANNER in _page(web, "/flows")
