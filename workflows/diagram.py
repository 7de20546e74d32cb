"""A flow drawn as a mermaid `stateDiagram-v2` (状态图), as text: pure, no I/O.

State names follow `spec.NAME` (letters, digits, '_' and '-'), but mermaid's state ids
cannot hold '-' (its lexer reads an id as `[^:\\n\\s\\-\\{]+`), and some words are keywords
there (`state`, `note`, `class`, `default`, `accTitle`, …: checked against mermaid 11's
parser). Such names get a safe id; each state's label, shown beside it, still names it.
Labels are cleaned of what would end or derail a mermaid line (`;`, `:`, line breaks, and
"direction LR", which mermaid reads as a layout statement anywhere on a line), and of what
mermaid would draw as HTML (`<`, `>`, `&` become its entity codes `#lt;`, `#gt;`, `#amp;`).
"""

from __future__ import annotations

import re

from .spec import FlowSpec

MERMAID_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# Words mermaid's state-diagram lexer takes as keywords where an id is expected
# (case-insensitive); each one, used as an id, fails to parse or loses its label.
KEYWORDS = {"state", "note", "class", "classdef", "scale", "statediagram", "acctitle",
            "accdescr", "default"}
_LABEL_SWAPS = str.maketrans({":": "：", ";": "；", "\r": " ", "\n": " "})
_MARKUP = str.maketrans({"&": "#amp;", "<": "#lt;", ">": "#gt;"})
_DIRECTION = re.compile(r"(direction)(?=\s)", re.IGNORECASE)


def mermaid(spec: FlowSpec, counts: dict[str, int] | None = None, lang: str = "zh") -> str:
    """The flow as mermaid text: `[*] --> initial`, each state with its label (and its
    number of cases when `counts` is given), every transition `a --> b : label`, and
    `final --> [*]` for each final state."""
    ids = state_ids(list(spec.states))
    lines = ["stateDiagram-v2", f"    [*] --> {ids[spec.initial]}"]
    for name, state in spec.states.items():
        label = state.label.text(lang)
        if counts is not None:
            label = f"{label} ({counts.get(name, 0)})"
        lines.append(f"    {ids[name]} : {_clean(label)}")
    for t in spec.transitions:
        for source in t.sources:
            lines.append(f"    {ids[source]} --> {ids[t.dest]} : {_clean(t.label.text(lang))}")
    for name, state in spec.states.items():
        if state.final:
            lines.append(f"    {ids[name]} --> [*]")
    return "\n".join(lines) + "\n"


def state_ids(names: list[str]) -> dict[str, str]:
    """A mermaid id for each state name: the name itself when mermaid can read it, else a
    close, unique variant (`regular-review` → `regular_review`, `state` → `s_state`)."""
    ids: dict[str, str] = {}
    used: set[str] = set()
    for name in names:  # names that are fine keep themselves, whatever comes later
        if _usable(name):
            ids[name] = name
            used.add(name)
    for name in names:
        if name in ids:
            continue
        base = name.replace("-", "_")
        if not _usable(base):
            base = f"s_{base}"
        candidate, n = base, 2
        while candidate in used:
            candidate, n = f"{base}_{n}", n + 1
        ids[name] = candidate
        used.add(candidate)
    return ids


def _usable(name: str) -> bool:
    return bool(MERMAID_ID.match(name)) and name.lower() not in KEYWORDS


def _clean(text: str) -> str:
    # A zero-width space after "direction" keeps mermaid from reading "direction LR" in a
    # label as a layout statement (its lexer looks for that anywhere on a line).
    text = _DIRECTION.sub("\\1\u200b", text.translate(_LABEL_SWAPS))
    # mermaid draws labels as HTML: `<`, `>` and `&` go as its entity codes (`#lt;`), which
    # it turns into the characters themselves, never into markup.
    text = text.translate(_MARKUP)
    return " ".join(text.split()) or "-"
