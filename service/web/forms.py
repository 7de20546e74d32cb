"""Forms of a transition, built from the flow definition, and the way back from HTML.

`widgets()` turns a transition's `requires` and `accepts` into inputs: labels from the
definition, a required mark, the HTML type of each field type, enum values as choices, and
a table of rows for a list field (weekly records 周记实, indicators 个性指标) with its
sub-fields as columns. Each input's name is the field's error path in the engine's
`FieldErrors` (`weekly_records.0.content`), so a message lands beside its input.

`parse()` only undoes the HTML encoding — strings to the JSON shapes the API receives
(rows of a list, booleans, person ids); checking the values is the engine's marshmallow
schema's job (`workflows.forms`), the one the API uses. Blank inputs are left out, so a
missing required field reads "is required", as over the API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from flask_babel import gettext as _
from werkzeug.datastructures import MultiDict

from workflows.spec import FieldSpec, FlowSpec, TransitionSpec

from .i18n import label

HTML_TYPES = {"text": "text", "int": "number", "decimal": "text", "date": "date",
              "person": "number"}
MULTILINE_FROM = 201  # text fields longer than this get a text area
BLANK_ROWS = 1  # empty rows offered below the entered ones in a list field


@dataclass
class Widget:
    """One input of a form, or (for a list of records) a table of them."""

    name: str
    path: str  # the form name and the error path
    type: str
    label: str
    required: bool = False
    choices: list[tuple[str, str]] = field(default_factory=list)
    max_length: int | None = None
    min: Any = None
    max: Any = None
    step: str | None = None
    html_type: str = "text"
    multiline: bool = False
    rows: int = 3
    columns: list[Widget] = field(default_factory=list)  # list of records: the sub-fields
    max_items: int | None = None
    hint: str = ""

    @property
    def is_list(self) -> bool:
        return self.type == "list"


def _widget(f: FieldSpec, path: str, required: bool,
            choices: tuple[str, ...] | None = None) -> Widget:
    w = Widget(name=f.name, path=path, type=f.type, label=label(f.label, f.name),
               required=required, max_length=f.max_length, min=f.min, max=f.max,
               html_type=HTML_TYPES.get(f.type, "text"), max_items=f.max_items)
    if f.type == "enum":
        w.choices = [(v, v) for v in (f.values if choices is None else choices)]
    elif f.type == "bool":
        w.choices = [("true", _("Yes")), ("false", _("No"))]
    elif f.type == "text":
        w.multiline = f.max_length is None or f.max_length >= MULTILINE_FROM
        w.rows = 3 if (f.max_length or 4000) <= 1000 else 6
    elif f.type == "decimal":
        w.hint = _("a number") + (f" ({f.places} " + _("decimal places") + ")"
                                  if f.places is not None else "")
    elif f.type == "int":
        w.step = "1"
    elif f.type == "person":
        w.hint = _("a person's id")
    if f.type == "list":
        if f.record:
            w.columns = [_widget(sub, sub.name, False) for sub in f.record]
        elif f.item is not None:
            w.columns = [_widget(f.item, "", True)]
    return w


def widgets(spec: FlowSpec, t: TransitionSpec) -> list[Widget]:
    """The inputs of a transition: required fields first, then the accepted ones."""
    out = [_widget(spec.fields[n], n, True, t.choices(spec.fields[n])) for n in t.requires]
    out += [_widget(spec.fields[n], n, False, t.choices(spec.fields[n])) for n in t.accepts]
    return out


def comment_widget(t: TransitionSpec) -> Widget:
    """The comment (意见/理由) every action may carry; required by `comment: required`."""
    required = t.comment == "required"
    return Widget(name="comment", path="comment", type="text",
                  label=_("Reason") if required else _("Comment"), required=required,
                  max_length=4000, multiline=True, rows=3)


def summary(prefix: str, ws: list[Widget], errors: dict[str, list[str]]
            ) -> list[tuple[str | None, str, list[str]]]:
    """The errors of a form for the list above it: (input id, what, messages)."""
    by_path = {w.path: w for w in ws}
    out = []
    for path, messages in errors.items():
        parts = path.split(".")
        w = by_path.get(parts[0])
        if w is None:
            out.append((None, path, messages))
            continue
        what = w.label
        if len(parts) >= 2 and parts[1].isdigit():
            what += " · " + _("Row %(n)s", n=int(parts[1]) + 1)
            col = next((c for c in w.columns if len(parts) > 2 and c.name == parts[2]), None)
            if col is not None:
                what += " · " + col.label
        out.append((f"{prefix}-{path.replace('.', '-')}", what, messages))
    return out


# --------------------------------------------------------------------------- HTML → data

ROW = re.compile(r"^(?P<field>[A-Za-z][\w-]*)\.(?P<index>\d{1,4})(?:\.(?P<sub>[A-Za-z][\w-]*))?$")


def _scalar(f: FieldSpec, raw: str) -> Any:
    """A non-blank form string in the shape the API sends (the schema checks the value)."""
    if f.type == "bool":
        return {"true": True, "false": False}.get(raw, raw)
    if f.type == "person":
        return int(raw) if raw.strip().isdigit() and len(raw.strip()) < 12 else raw
    if f.type == "text":
        return raw.replace("\r\n", "\n")
    return raw.strip()


@dataclass
class Parsed:
    """The data to send, and how each list row sent maps back to the row on the page."""

    data: dict[str, Any]
    row_of: dict[str, dict[int, int]]  # field → {index sent: index on the page}

    def page_path(self, path: str) -> str:
        """An error path of the data sent, as the input's name on the page."""
        parts = path.split(".")
        if len(parts) >= 2 and parts[0] in self.row_of and parts[1].isdigit():
            parts[1] = str(self.row_of[parts[0]].get(int(parts[1]), int(parts[1])))
        return ".".join(parts)

    def page_errors(self, errors: dict[str, list[str]]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for path, messages in errors.items():
            out.setdefault(self.page_path(path), []).extend(messages)
        return out


def parse(spec: FlowSpec, t: TransitionSpec | None, form: MultiDict) -> Parsed:
    """The transition's fields from a submitted form; other keys are ignored."""
    data: dict[str, Any] = {}
    row_of: dict[str, dict[int, int]] = {}
    if t is None:
        return Parsed(data, row_of)
    names = list(t.requires) + list(t.accepts)
    rows: dict[str, dict[int, dict[str, str]]] = {}
    for key in form:
        m = ROW.match(key)
        if m and m["field"] in names:
            rows.setdefault(m["field"], {}).setdefault(int(m["index"]), {})[m["sub"] or ""] = \
                form.get(key, "")
    for name in names:
        f = spec.fields[name]
        if f.type != "list":
            raw = form.get(name, "")
            if raw.strip():
                data[name] = _scalar(f, raw)
            continue
        sent: list[Any] = []
        mapping: dict[int, int] = {}
        for index in sorted(rows.get(name, {})):
            cells = rows[name][index]
            if f.record:
                subs = {s.name: s for s in f.record}
                item = {k: _scalar(subs[k], v) for k, v in cells.items()
                        if k in subs and v.strip()}
                if not item:
                    continue  # an empty row is no row
            else:
                raw = cells.get("", "")
                if not raw.strip():
                    continue
                assert f.item is not None
                item = _scalar(f.item, raw)
            mapping[len(sent)] = index
            sent.append(item)
        if sent:
            data[name] = sent
            row_of[name] = mapping
    return Parsed(data, row_of)


def values_for_page(parsed: Parsed) -> dict[str, Any]:
    """What was entered, keyed like the inputs, to show again beside the errors."""
    out: dict[str, Any] = {}
    for name, value in parsed.data.items():
        if isinstance(value, list):
            page_rows: dict[int, Any] = {}
            for i, item in enumerate(value):
                page_rows[parsed.row_of[name][i]] = item
            out[name] = [page_rows.get(i) for i in range(max(page_rows) + 1)] if page_rows \
                else []
        else:
            out[name] = value
    return out
