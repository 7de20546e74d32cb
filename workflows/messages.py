"""Message codes (消息代码): every refusal, field error, reason and definition problem the
engine gives is a stable key with parameters, rendered in the reader's language.

`msg("quota.exceeded", value="好", limit=2, …)` returns a `Message`: a `str` whose text is
the log text — English words with a definition's labels as its own Chinese names, as
`str(exc)` has always read (logs, the CLI, tests) — and which carries `key` and `params` for
a reader: `render(m, "zh")` gives the Chinese, `render(m, "en")` the English with the
definition's English labels, `params_json(m)` the machine-readable parameters for the API.

The templates are gettext catalogues, the same tool as the web pages' interface strings:
`workflows/locale/<lang>/LC_MESSAGES/civflow.po` with the key as `msgid` and the template as
`msgstr` (`{name}` placeholders, `python-brace-format`), compiled to the `.mo` beside it
(`pybabel compile -D civflow -d workflows/locale`). `tests/test_messages.py` fails when a key
used in `workflows/` has no Chinese or English entry or a `.mo` is stale.

Parameters that are words of the domain render in the reader's language too: a definition
`Label` (`{zh, en}`), a nested `Message` (e.g. `msg("tier.staff")`), and lists of them
(a list joined with `、` in Chinese, `, ` in English; a tuple of sentences with `；` and
`; `). Everything else is formatted as given.
"""

from __future__ import annotations

import contextvars
import gettext
import re
from functools import cache
from pathlib import Path
from typing import Any

LANGS = ("zh", "en")  # the first is the default for a reader who does not say
DOMAIN = "civflow"
LOCALE = Path(__file__).with_name("locale")

# The reader's language while a page is rendered (the web sets it per request), so a Message
# placed in a template renders itself in that language (`__html__`).
reader_lang: contextvars.ContextVar[str] = contextvars.ContextVar("reader_lang",
                                                                   default=LANGS[0])


class Message(str):
    """A keyed message: `str` is its English text; `key` and `params` render it anew."""

    key: str
    params: dict[str, Any]

    def __new__(cls, key: str, params: dict[str, Any] | None = None) -> Message:
        params = dict(params or {})
        # The log text: English words, definition labels as the definition's own (Chinese)
        # names, as the log has always read; a reader gets `render(lang)`.
        self = super().__new__(cls, _format(key, params, "en", labels="zh"))
        self.key, self.params = key, params
        return self

    def render(self, lang: str) -> str:
        return _format(self.key, self.params, lang)

    def __html__(self) -> str:  # Jinja: a message in a page reads in the page's language
        from markupsafe import escape

        return str(escape(self.render(reader_lang.get())))

    def __reduce__(self):  # pickling (e.g. a session or a cache) keeps key and params
        return (Message, (self.key, self.params))


def msg(key: str, /, **params: Any) -> Message:
    """The message `key` with `params` (see the catalogues for the keys)."""
    return Message(key, params)


_CONSTANTS: dict[str, Message] = {}


def constant(key: str, /, **params: Any) -> Message:
    """A message given to a marshmallow validator as its `error`: marshmallow formats it
    into a plain `str`, so `from_marshmallow` finds it again by its English text."""
    m = Message(key, params)
    _CONSTANTS[str(m)] = m
    return m


def render(text: Any, lang: str) -> str:
    """`text` in `lang`: a Message renders from the catalogue, anything else as it is."""
    if isinstance(text, Message):
        return text.render(lang)
    if hasattr(text, "text") and callable(text.text):  # a definition Label
        return text.text(lang)
    return str(text)


def localize(value: Any, lang: str) -> Any:
    """A JSON-ready structure with every Message in it rendered in `lang` (e.g. the
    eligibility list's reasons for an API answer or an export)."""
    if isinstance(value, Message):
        return value.render(lang)
    if isinstance(value, dict):
        return {k: localize(v, lang) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [localize(v, lang) for v in value]
    return value


def params_json(text: Any) -> dict[str, Any]:
    """The parameters of a message, JSON-ready (labels as `{zh, en}`, nested messages as
    their key)."""
    if not isinstance(text, Message):
        return {}
    return {k: _json(v) for k, v in text.params.items()}


def key_of(text: Any) -> str | None:
    return text.key if isinstance(text, Message) else None


def known(key: str, lang: str) -> bool:
    return _catalogue(lang).get(key) is not None


def keys(lang: str) -> set[str]:
    return set(_catalogue(lang))


@cache
def _catalogue(lang: str) -> dict[str, str]:
    path = LOCALE / lang / "LC_MESSAGES" / f"{DOMAIN}.mo"
    try:
        with open(path, "rb") as f:
            t = gettext.GNUTranslations(f)
    except FileNotFoundError:
        return {}
    return {k: v for k, v in t._catalog.items() if isinstance(k, str) and k}  # type: ignore[attr-defined]


def _format(key: str, params: dict[str, Any], lang: str, labels: str | None = None) -> str:
    template = _catalogue(lang).get(key) or _catalogue("en").get(key)
    shown = {k: _word(v, lang, labels or lang) for k, v in params.items()}
    if template is None:  # a key without a template still says something (a test forbids it)
        return key + (f" {shown}" if shown else "")
    try:
        return template.format(**shown)
    except (KeyError, IndexError, ValueError):
        return f"{template} {shown}"


def _word(value: Any, lang: str, labels: str) -> Any:
    if isinstance(value, Message):
        return _format(value.key, value.params, lang, labels)
    if isinstance(value, tuple):  # a tuple holds sentences: "; " (English), "；" (Chinese)
        return ("；" if lang == "zh" else "; ").join(str(_word(v, lang, labels)) for v in value)
    if isinstance(value, list):
        return ("、" if lang == "zh" else ", ").join(str(_word(v, lang, labels)) for v in value)
    if hasattr(value, "text") and callable(getattr(value, "text", None)):  # Label
        return value.text(labels)
    return value


def _json(value: Any) -> Any:
    if isinstance(value, Message):
        return value.key
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if hasattr(value, "zh") and hasattr(value, "en"):
        return {"zh": value.zh, "en": value.en or value.zh}
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


# ------------------------------------------------------------------ marshmallow's messages

# marshmallow's own field and validator messages (what a schema says about a bad value),
# as keys: the English text marshmallow produces → key and the parameters in it.
_MARSHMALLOW: list[tuple[re.Pattern[str], str]] = [(re.compile(p), k) for p, k in [
    (r"Missing data for required field\.", "field.required"),
    (r"Field may not be null\.", "field.required"),
    (r"Unknown field\.", "field.unknown"),
    (r"Not a valid number\.", "field.not_number"),
    (r"Not a valid integer\.", "field.not_integer"),
    (r"Not a valid string\.", "field.not_string"),
    (r"Not a valid boolean\.", "field.not_boolean"),
    (r"Not a valid date\.", "field.not_date"),
    (r"Not a valid datetime\.", "field.not_datetime"),
    (r"Not a valid list\.", "field.not_list"),
    (r"Not a valid mapping type\.", "field.not_mapping"),
    (r"Not a valid email address\.", "field.not_email"),
    (r"Not a valid URL\.", "field.not_url"),
    (r"Invalid input type\.", "field.invalid_type"),
    (r"Invalid value\.", "field.invalid"),
    (r"Number too large\.", "field.too_large"),
    (r"Special numeric values \(nan or infinity\) are not permitted\.", "field.not_finite"),
    (r"String does not match expected pattern\.", "field.pattern"),
    (r"Must be greater than or equal to (?P<min>.+) and less than or equal to (?P<max>.+)\.",
     "field.between"),
    (r"Must be greater than or equal to (?P<min>.+)\.", "field.min"),
    (r"Must be less than or equal to (?P<max>.+)\.", "field.max"),
    (r"Must be greater than (?P<min>.+)\.", "field.above"),
    (r"Must be less than (?P<max>.+)\.", "field.below"),
    (r"Shorter than minimum length (?P<min>\d+)\.", "field.min_length"),
    (r"Longer than maximum length (?P<max>\d+)\.", "field.max_length"),
    (r"Length must be between (?P<min>\d+) and (?P<max>\d+)\.", "field.length_between"),
    (r"Length must be (?P<equal>\d+)\.", "field.length"),
    (r"Must be one of: (?P<choices>.+)\.", "field.one_of"),
    (r"must be one of: (?P<choices>.+)", "field.choose_one"),
    (r"(?P<input>.+) is not one of: (?P<choices>.+)", "field.not_one_of"),
]]


def from_marshmallow(text: Any) -> Any:
    """A marshmallow message as a Message (our own pass through unchanged); a text nobody
    mapped keeps its words under `field.other`, so it still reaches the reader."""
    if isinstance(text, Message) or not isinstance(text, str):
        return text
    if text in _CONSTANTS:
        return _CONSTANTS[text]
    for pattern, key in _MARSHMALLOW:
        m = pattern.fullmatch(text)
        if m:
            return Message(key, m.groupdict())
    return Message("field.other", {"text": text})


def field_messages(messages: Any, prefix: str = "") -> dict[str, list[Any]]:
    """marshmallow's nested `messages` as `{field.path: [Message, …]}`."""
    out: dict[str, list[Any]] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            out.update(field_messages(value, path))
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        out[prefix] = [from_marshmallow(m) for m in messages]
    elif isinstance(messages, list):
        for i, m in enumerate(messages):
            out.update(field_messages(m, f"{prefix}[{i}]"))
    else:
        out[prefix] = [from_marshmallow(str(messages))]
    return out
