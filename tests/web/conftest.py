"""Fixtures for the web pages: a Flask test client that logs in through the login form, and
for the browser journeys a live server on a free port with the demo bureau, driven by
Debian's Chromium through Playwright (never a downloaded browser).

- `web`: the test client of the `api` fixture (the small `org` of tests/conftest.py) with
  `login(name)` and `csrf()` helpers.
- `live`: the app served from a thread (werkzeug `make_server`) on the `db_url` database
  (SQLite and PostgreSQL), set up as `civflow demo` does: the shipped flows, the demo
  bureau, its accounts (password civflow-demo) and its year of history, all on a controlled
  clock stopped at `NOW` (so the history and the deadlines are the same on every run).
- `browser`: one headless Chromium per session; `page` / `phone`: a fresh context at desktop
  size or at 390 × 844 (a phone). `shot(page, name)` saves `tests/screenshots/<name>.png`.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import PASSWORD, ROOT, Clock, cst
from workflows.calendar import WorkCalendar
from workflows.db import Database
from workflows.engine import Engine
from workflows.models import Case, Person

CHROMIUM = os.environ.get("CIVFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = ROOT / "tests" / "screenshots"
DEMO_PASSWORD = "civflow-demo"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
NOW = cst(2026, 11, 26, 10, 0)  # a Thursday; November's cases are open


# --------------------------------------------------------------------------- test client


@dataclass
class WebClient:
    """The Flask test client, logged in through the login form like a browser."""

    client: object
    org: object

    def login(self, name: str, password: str = PASSWORD):
        page = self.client.get("/login")
        token = CSRF_FIELD.search(page.get_data(as_text=True)).group(1)
        r = self.client.post("/login", data={"username": name, "password": password,
                                             "csrf_token": token})
        assert r.status_code == 302, r.get_data(as_text=True)
        return r

    def csrf(self) -> str:
        with self.client.session_transaction() as s:
            return s["csrf"]

    def get(self, url: str, **kw):
        return self.client.get(url, **kw)

    def post(self, url: str, data: dict | None = None, csrf: bool = True, **kw):
        data = dict(data or {})
        if csrf:
            data.setdefault("csrf_token", self.csrf())
        return self.client.post(url, data=data, **kw)


@pytest.fixture
def web(api) -> WebClient:
    return WebClient(api.client, api.org)


# --------------------------------------------------------------------------- live server


@dataclass
class Live:
    url: str
    engine: Engine
    clock: Clock
    people: dict[str, int]  # person code → id

    def person(self, code: str) -> int:
        return self.people[code]

    def case_of(self, code: str, flow: str, period: str | None = None) -> int:
        """The id of a person's case of a flow (and period)."""
        with self.engine.db.unit_of_work(write=False) as s:
            q = select(Case.id).where(Case.subject_id == self.people[code],
                                      Case.flow_id == flow)
            if period:
                q = q.where(Case.period_key == period)
            return s.execute(q).scalar_one()


def seed_demo(db_url: str, now) -> tuple[Engine, Clock]:
    """What `civflow demo` makes, on a controlled clock: the shipped flows, the demo bureau
    with its accounts and facts, and its year of history up to `now`."""
    from workflows import demo

    db = Database(db_url)
    calendar = WorkCalendar.load(ROOT / "definitions")
    clock = Clock(now)
    engine = Engine(db, clock=clock, calendar=calendar)
    for f in sorted((ROOT / "definitions").glob("*.yaml")):
        if f.name != "calendar.yaml":
            engine.publish(f.read_text(encoding="utf-8"), str(f))
    demo.load(db, now=now, calendar=calendar)
    return engine, clock


@pytest.fixture
def live(db_url) -> Iterator[Live]:
    from werkzeug.serving import make_server

    from service.app import create_app

    engine, clock = seed_demo(db_url, NOW)
    app = create_app(db_url, config={"SECRET_KEY": "web-tests"}, engine=engine)
    with engine.db.unit_of_work(write=False) as s:
        people = dict(s.execute(select(Person.code, Person.id)).all())
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Live(f"http://127.0.0.1:{server.server_port}", engine, clock, people)
    finally:
        server.shutdown()
        thread.join()
        engine.db.dispose()


# --------------------------------------------------------------------------- browser


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
                    "(apt-get install chromium fonts-noto-cjk; .ci/run installs it)",
                    pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need the playwright package: "
                    "pip install -e '.[test]'", pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    yield context.new_page()
    context.close()


@pytest.fixture
def phone(browser):
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN",
                                  is_mobile=True, has_touch=True, device_scale_factor=2)
    yield context.new_page()
    context.close()


def shot(page, name: str) -> Path:
    """Save a full-page screenshot to tests/screenshots/ (gitignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def login(page, live: Live, username: str, password: str = DEMO_PASSWORD) -> None:
    page.goto(f"{live.url}/login")
    page.get_by_label(re.compile("用户名|Username")).fill(username)
    page.get_by_label(re.compile("密码|Password")).fill(password)
    page.get_by_role("button", name=re.compile("^(登录|Log in)$")).click()
    page.wait_for_url(re.compile(r"/home$"))


def no_sideways_scroll(page) -> bool:
    """The page fits the viewport's width (no horizontal scrolling on a phone)."""
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
