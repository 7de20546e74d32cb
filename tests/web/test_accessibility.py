"""Basics of accessibility, checked on the rendered pages: every visible input has a label
(`<label for>` or `aria-label`), ids are unique, there is a skip link; and the colour pairs
of the stylesheet have a contrast of at least 4.5:1 (WCAG AA for normal text)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from workflows.engine import Actor

from .conftest import ROOT

CSS = ROOT / "service" / "web" / "static" / "civflow.css"
FLOW = "regular-assessment"


class _Inputs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.controls: list[dict[str, str]] = []
        self.labels: set[str] = set()
        self.ids: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "label" and a.get("for"):
            self.labels.add(a["for"])
        if tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.controls.append({"tag": tag, **a})


def _check(html: str, url: str) -> None:
    p = _Inputs()
    p.feed(html)
    unlabelled = [c for c in p.controls
                  if c.get("id") not in p.labels and not c.get("aria-label")
                  and c.get("type") not in ("submit", "button")]
    assert not unlabelled, f"{url}: inputs without a label: {unlabelled}"
    repeated = sorted({i for i in p.ids if p.ids.count(i) > 1})
    assert not repeated, f"{url}: ids used twice: {repeated}"
    assert 'class="skip" href="#main"' in html and 'id="main"' in html, url


def test_every_input_of_every_page_has_a_label(web, engine, org):
    own = engine.start_case(FLOW, org.s1, period_key="2026-11").id
    other = engine.start_case(FLOW, org.s2, period_key="2026-11").id
    engine.fire(other, "submit", Actor.person(org.s2), data={"summary": "小结"})
    engine.fire(other, "evaluate", Actor.person(org.l1), data={"grade": "较好"})
    engine.fire(other, "accept", Actor.person(org.s2))
    _check(web.get("/login").get_data(as_text=True), "/login")
    web.login("s1")
    for url in ("/home", "/notifications", f"/cases/{own}"):
        r = web.get(url)
        assert r.status_code == 200
        _check(r.get_data(as_text=True), url)
    r = web.post(f"/cases/{own}/actions/submit", {"version": "1"})  # with errors shown
    _check(r.get_data(as_text=True), "submit with errors")
    web.login("c1")
    for url in ("/queue", f"/cases/{other}",
                f"/queue/bulk?flow={FLOW}&state=approval&trigger=approve"):
        r = web.get(url)
        assert r.status_code == 200
        _check(r.get_data(as_text=True), url)


def _luminance(hex_colour: str) -> float:
    rgb = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_the_palette_is_readable():
    css = CSS.read_text(encoding="utf-8")
    v = dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})", css))
    pairs = [("fg", "card"), ("fg", "bg"), ("muted", "card"), ("muted", "bg"),
             ("link", "card"), ("link", "bg"), ("danger", "card"), ("danger", "err-bg"),
             ("primary-fg", "primary"), ("primary", "card"), ("fg", "ok-bg"),
             ("fg", "info-bg"), ("fg", "err-bg")]
    low = {f"{a} on {b}": round(contrast(v[a], v[b]), 2) for a, b in pairs
           if contrast(v[a], v[b]) < 4.5}
    assert not low, f"contrast below 4.5:1: {low}"
    # The header: white and its pale text on the dark blue band.
    for fg in ("#ffffff", "#d7e3f1", "#c8d6e8"):
        assert contrast(fg, "#12365f") >= 4.5, fg
