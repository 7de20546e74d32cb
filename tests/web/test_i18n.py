"""The gettext catalogues of the web pages: every interface string of the templates and
views is in the Chinese catalogue and translated, and each committed `.mo` says exactly what
its `.po` says (serving reads the `.mo`; nobody has to remember to compile)."""

from __future__ import annotations

from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from tests.conftest import ROOT

WEB = ROOT / "service" / "web"
CATALOGUES = WEB / "translations"
LANGS = ("zh", "en")


def _po(lang: str):
    with open(CATALOGUES / lang / "LC_MESSAGES" / "messages.po", "rb") as f:
        return read_po(f)


def _mo(lang: str):
    with open(CATALOGUES / lang / "LC_MESSAGES" / "messages.mo", "rb") as f:
        return read_mo(f)


def _strings() -> dict[str, str]:
    """Every message id used by the web package: id → first place it is used."""
    found: dict[str, str] = {}
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    keywords = {**DEFAULT_KEYWORDS, "_l": None}
    for filename, line, message, _comments, _ctx in extract_from_dir(
            str(WEB), method_map, keywords=keywords):
        msgid = message[0] if isinstance(message, tuple) else message
        found.setdefault(msgid, f"{filename}:{line}")
    return found


def test_every_string_is_in_the_chinese_catalogue_and_translated():
    strings = _strings()
    assert len(strings) > 100  # the extraction itself works
    zh = _po("zh")
    missing = {m: where for m, where in strings.items() if zh.get(m) is None}
    assert not missing, f"not in zh/messages.po (run pybabel extract/update): {missing}"
    untranslated = [m.id for m in zh if m.id and not m.string]
    assert not untranslated, f"untranslated in zh/messages.po: {untranslated}"
    fuzzy = [m.id for m in zh if m.id and m.fuzzy]
    assert not fuzzy, f"fuzzy (unchecked) translations in zh/messages.po: {fuzzy}"
    for m in zh:  # the placeholders survive translation
        if m.id and "%(" in m.id:
            assert sorted(_names(m.id)) == sorted(_names(m.string)), m.id
    en = _po("en")
    assert not [m for m in strings if en.get(m) is None], "en/messages.po is behind"


def _names(text: str) -> list[str]:
    import re

    return re.findall(r"%\((\w+)\)s", text)


def test_each_mo_matches_its_po():
    for lang in LANGS:
        po, mo = _po(lang), _mo(lang)
        expected = {m.id: m.string for m in po if m.id and m.string and not m.fuzzy}
        compiled = {m.id: m.string for m in mo if m.id}
        assert compiled == expected, f"{lang}: messages.mo is stale; run pybabel compile " \
                                     "-d service/web/translations"
