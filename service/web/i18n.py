"""Languages (语言): Chinese by default, English by a switch kept in the session.

Interface strings are gettext messages (`_()` in templates and code) with the catalogues in
`translations/<lang>/LC_MESSAGES/messages.po`; the compiled `.mo` files are committed beside
them, so serving needs no build step. The message ids are English; the Chinese catalogue
translates every one (a test holds the catalogue and the templates together). Names that
come from a flow definition — flow titles, states, actions, fields — are not in the
catalogue: a definition carries its own `{zh, en}` labels and `label()` picks one.

After changing a string: `pybabel extract -F service/web/babel.cfg -k _l --no-location -o /tmp/messages.pot .`,
`pybabel update -N -i /tmp/messages.pot -d service/web/translations`, translate, then
`pybabel compile -d service/web/translations` (see docs/web.md).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from flask import Flask, current_app, session
from flask_babel import Babel

from workflows import notify
from workflows.messages import reader_lang, render
from workflows.spec import Label

LANGS = ("zh", "en")  # the first is the default
LANG_NAMES = {"zh": "中文", "en": "English"}
HTML_LANG = {"zh": "zh-CN", "en": "en"}
TRANSLATIONS = Path(__file__).with_name("translations")


def lang() -> str:
    """The page language: the session's choice, else Chinese."""
    chosen = session.get("lang")
    return chosen if chosen in LANGS else LANGS[0]


def label(value: Label | str | None, fallback: str = "") -> str:
    """A definition label in the page language (`{zh, en}`; English falls back to zh)."""
    if value is None:
        return fallback
    if isinstance(value, Label):
        return value.text(lang())
    return str(value)


def text(value: Any) -> str:
    """An engine message (a keyed `Message`, or a refusal) in the page language; the
    place to turn one into text that outlives the request (a flash, a stored form)."""
    if hasattr(value, "text") and callable(value.text) and not isinstance(value, str):
        return value.text(lang())
    return render(value, lang())


def set_reader_lang() -> None:
    """Messages placed in a template render themselves in the page language."""
    reader_lang.set(lang())


def local_time(moment: dt.datetime | None, with_time: bool = True) -> str:
    """A moment in the engine's time zone (Asia/Shanghai by default), `YYYY-MM-DD HH:MM`;
    a deadline at the midnight that ends a day reads `2026-12-07 24:00`, as in the
    notifications and in official notices (not as the next day's 00:00)."""
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    calendar = current_app.extensions["civflow"].calendar
    if with_time:
        return notify.local_time(moment, calendar.tz)
    return calendar.local(moment).strftime("%Y-%m-%d")


def init_app(app: Flask) -> None:
    Babel(app, locale_selector=lambda: lang(), default_locale=LANGS[0],
          default_translation_directories=str(TRANSLATIONS))
    app.jinja_env.filters["label"] = label
    app.jinja_env.filters["local_time"] = local_time
    app.jinja_env.filters["text"] = text

    @app.context_processor
    def _languages() -> dict[str, Any]:
        return {"lang": lang(), "html_lang": HTML_LANG[lang()], "langs": LANGS,
                "lang_names": LANG_NAMES}
