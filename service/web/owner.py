"""Process owners' pages (流程管理): the flows and their versions (版本), one version with its
state diagram (状态图) and case counts, and uploading a definition — validate (校验, nothing
stored), save as a draft (草稿), publish (发布).

The same calls as `service/api/flows.py`: `Engine.versions`, `Engine.version`, `spec_of`,
`counts_by_state`, `workflows.diagram.mermaid`, `load_definition` (validate), `Engine.upload`
and `Engine.publish_version`, with the API's `SourceIn` schema for the text and its name.
A definition that does not validate comes back as `DefinitionInvalid` with its problems
(file, path, line, message): the page lists them with the lines of the source around each,
and a link that puts the cursor on that line of the text being edited.

Seeing these pages is for process owners and admins (`nav.owners`); uploading and
publishing, as over the API, for process owners only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import PurePath
from typing import Any

from flask import Response, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from marshmallow import ValidationError

from workflows import rules
from workflows.access import Viewer
from workflows.diagram import mermaid
from workflows.engine import PUBLISHED, PublishResult
from workflows.errors import DefinitionInvalid, FieldErrors, Forbidden
from workflows.messages import msg
from workflows.spec import FlowSpec, Label, RuleSpec, load_definition

from .. import auth
from ..api.flows import MAX_SOURCE, SourceIn, flows_out
from ..limits import large_body
from . import bp, words
from .i18n import label, lang
from .nav import owners

DEFAULT_FILENAME = "upload.yaml"
CONTEXT_LINES = 2  # source lines shown above and below a problem's line
ACTIONS = ("validate", "draft", "publish")


# --------------------------------------------------------------------------- access


def require_owner_pages(viewer: Viewer) -> None:
    """Reading flows and versions: process owners and admins (流程管理员, 系统管理员)."""
    if not owners(viewer):
        raise Forbidden(_("The flow pages are for process owners and admins."),
                        rule="needs_process_owner")


def require_publisher(viewer: Viewer) -> None:
    """Uploading and publishing: process owners only, as `POST /api/v1/flows` says."""
    if not viewer.is_owner:
        raise Forbidden(_("Uploading and publishing flow definitions needs the role "
                          "process owner (流程管理员)."), rule="needs_process_owner")


# --------------------------------------------------------------------------- reading


def current_versions() -> dict[str, int]:
    """Flow id → its current version: the latest published one, on which new cases start."""
    return {f["flow"]: f["current_version"] for f in flows_out(auth.engine().versions())
            if f["current_version"] is not None}


def _title(flow: str, stored: str) -> str:
    """The flow's title in the page language, from its current (published) version."""
    return label(auth.engine().flow(flow).spec.title, stored)


def flow_entries() -> list[dict[str, Any]]:
    """Every flow, its versions newest first, each with its number of cases."""
    eng = auth.engine()
    rows = eng.versions()
    ids = {(r.flow_id, r.version): r.id for r in rows}
    out = []
    for f in flows_out(rows):
        current = f["current_version"]
        versions = []
        for v in reversed(f["versions"]):
            counts = eng.counts_by_state(ids[(f["flow"], v["version"])])
            versions.append({**v, "current": v["version"] == current,
                             "stale": v["status"] != PUBLISHED and current is not None
                             and v["version"] < current,
                             "cases": sum(counts.values())})
        out.append({"flow": f["flow"], "title": _title(f["flow"], f["title"]) if current
                    else f["title"], "current": current, "versions": versions})
    return out


def _both(value: Label | None, fallback: str) -> dict[str, str]:
    return {"zh": value.zh if value else fallback, "en": (value.en or "") if value else ""}


def _brief(value: Any) -> str:
    """A small part of the definition (a deadline, a rule's parameters) as one line."""
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_brief(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_brief(v) for v in value) + "]"
    return str(value)


def state_rows(spec: FlowSpec, counts: dict[str, int]) -> list[dict[str, Any]]:
    """The states as the page's table: name, labels zh/en, who acts, deadline, cases."""
    docs = {d.get("name"): d for d in spec.document.get("states", []) if isinstance(d, dict)}
    return [{"name": s.name, "label": _both(s.label, s.name), "text": label(s.label, s.name),
             "actor": ", ".join(s.actor), "final": s.final, "initial": s.name == spec.initial,
             "deadline": _brief(docs.get(s.name, {}).get("deadline")) if s.deadline else "",
             "timers": len(s.timers), "count": counts.get(s.name, 0),
             # In words (本人; 期满后 5 个工作日), the key above kept for the tooltip.
             "actor_words": words.who(spec, s.actor),
             "deadline_words": words.deadline_words(spec, s.deadline) if s.deadline else "",
             "timer_words": [{"text": words.timer_words(spec, t),
                              "key": _brief(timer_docs(docs.get(s.name, {}))[i])
                              if i < len(timer_docs(docs.get(s.name, {}))) else t.kind}
                             for i, t in enumerate(s.timers)]}
            for s in spec.states.values()]


def timer_docs(doc: dict[str, Any]) -> list[Any]:
    """A state's timers as written in the definition (for the tooltips)."""
    found = doc.get("timers")
    return found if isinstance(found, list) else []


def transition_rows(spec: FlowSpec) -> list[dict[str, Any]]:
    """The transitions as the page's table: trigger, labels, from → to, by, data, rules."""
    def state(name: str) -> str:
        st = spec.states.get(name)
        return label(st.label, name) if st else name

    return [{"trigger": t.trigger, "label": _both(t.label, t.trigger),
             "from": [state(s) for s in t.sources], "to": state(t.dest), "by": ", ".join(t.by),
             "by_words": words.who(spec, t.by),
             "requires": list(t.requires), "accepts": list(t.accepts),
             "rules": [_named(r, rules.REGISTRY) for r in t.rules],
             "effects": [_named(r, rules.EFFECTS) for r in t.effects], "comment": t.comment}
            for t in spec.transitions]


def _named(rule: RuleSpec, registry: dict[str, rules.Rule]) -> dict[str, str]:
    """A rule or effect as the table shows it: its name and label, parameters folded."""
    impl = registry.get(rule.name)
    return {"name": rule.name, "label": impl.label if impl else "",
            "params": _brief(rule.params) if rule.params else ""}


def numbered(source: str) -> list[dict[str, Any]]:
    """Source lines as the page lists them: number and text."""
    return [{"n": n, "text": text, "marked": False}
            for n, text in enumerate(source.splitlines(), start=1)]


def _authors(version_id: int) -> dict[str, str | None]:
    """Who uploaded and who published a version, by name (the API's metadata has neither)."""
    return asdict(auth.door().reads.version_authors(version_id=version_id))


@bp.get("/flows")
def flows():
    require_owner_pages(auth.viewer())
    return render_template("owner/flows.html", flows=flow_entries(),
                           can_publish=auth.viewer().is_owner)


@bp.get("/flows/<flow>/versions/<int:version>")
def flow_version(flow: str, version: int):
    eng, viewer = auth.engine(), auth.viewer()
    require_owner_pages(viewer)
    row = eng.version(flow, version, with_source=True)
    spec = eng.spec_of(row.id)
    counts = {name: 0 for name in spec.states} | eng.counts_by_state(row.id)
    current = current_versions().get(flow)
    return render_template(
        "owner/version.html", row=row, spec=spec, title=label(spec.title, row.title),
        diagram=mermaid(spec, counts, lang()), states=state_rows(spec, counts),
        transitions=transition_rows(spec), total=sum(counts.values()), current=current,
        stale=row.status != PUBLISHED and current is not None and version < current,
        lines=numbered(row.source), authors=_authors(row.id),
        description=spec.description, can_publish=viewer.is_owner)


@bp.get("/flows/<flow>/versions/<int:version>/source")
def flow_source(flow: str, version: int):
    """The version's source text as it was uploaded, as a file."""
    require_owner_pages(auth.viewer())
    row = auth.engine().version(flow, version, with_source=True)
    suffix = PurePath(row.filename).suffix.lower()
    suffix = suffix if suffix in (".yaml", ".yml", ".json") else ".yaml"
    mimetype = "application/json" if suffix == ".json" else "application/yaml"
    return Response(row.source, mimetype=f"{mimetype}; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{row.flow_id}-v{row.version}{suffix}"'})


# --------------------------------------------------------------------------- publishing


def _published_message(result: PublishResult, was_draft: bool, current: int | None) -> tuple[
        str, str]:
    """What publishing did, in words, and the flash category: new, already published, or
    published but older than the current version (stale)."""
    v = result.version
    flow = label(auth.engine().spec_of(result.version_id).title, result.flow)
    if not was_draft:
        if current is not None and v < current:
            return _("Version %(v)s of %(flow)s was already published, but version "
                     "%(current)s is newer and stays the one new cases start on. To go back "
                     "to version %(v)s's content, change something (the description, say) "
                     "and publish it as a new version.", v=v, flow=flow, current=current), "info"
        return _("Version %(v)s of %(flow)s is already the current version: nothing "
                 "changed.", v=v, flow=flow), "info"
    if current is not None and v < current:
        return _("Version %(v)s of %(flow)s is published, but version %(current)s is newer: "
                 "new cases keep starting on version %(current)s.", v=v, flow=flow,
                 current=current), "info"
    return _("Version %(v)s of %(flow)s is published: new cases start on it; running cases "
             "stay on the version they started with.", v=v, flow=flow), "success"


def _publish(flow: str, version: int) -> tuple[str, str]:
    eng = auth.engine()
    before = eng.version(flow, version)
    result = eng.publish_version(flow, version, by=auth.viewer().person_id)
    return _published_message(result, before.status != PUBLISHED,
                              current_versions().get(flow))


@bp.post("/flows/<flow>/versions/<int:version>/publish")
def flow_publish(flow: str, version: int):
    require_publisher(auth.viewer())
    message, category = _publish(flow, version)
    flash(message, category)
    return redirect(url_for("web.flow_version", flow=flow, version=version))


# --------------------------------------------------------------------------- uploading


@dataclass
class Upload:
    """The upload form as it is shown again: the text, its name, and what went wrong."""

    source: str = ""
    filename: str = DEFAULT_FILENAME
    errors: dict[str, list[str]] = field(default_factory=dict)
    problems: list[dict[str, Any]] = field(default_factory=list)
    valid: dict[str, Any] | None = None
    message: str | None = None


def problem_items(exc: DefinitionInvalid, source: str) -> list[dict[str, Any]]:
    """The validator's problems with the source lines around each (numbered, the problem's
    own line marked), in the validator's order."""
    lines = source.splitlines()
    out = []
    for n, p in enumerate(exc.problems):
        snippet = []
        if p.line:
            first = max(1, p.line - CONTEXT_LINES)
            last = min(len(lines), p.line + CONTEXT_LINES)
            snippet = [{"n": i, "text": lines[i - 1], "marked": i == p.line}
                       for i in range(first, last + 1)]
        out.append({"id": f"problem-{n + 1}", "file": p.file, "path": p.path or "<root>",
                    "message": p.message, "line": p.line, "snippet": snippet})
    return out


def read_upload(form: Any, files: Any) -> Upload:
    """The text from the file input when one was chosen, else from the text area; the
    name from the file, else from the name field."""
    up = Upload(source=(form.get("source") or "").replace("\r\n", "\n"),
                filename=(form.get("filename") or "").strip() or DEFAULT_FILENAME)
    chosen = files.get("file")
    if chosen is not None and chosen.filename:
        raw = chosen.read(MAX_SOURCE * 4 + 1)  # a character is at most 4 bytes
        try:
            if len(raw) > MAX_SOURCE * 4:
                up.errors["file"] = [_("The file is too large: a definition has at most "
                                       "%(n)s characters.", n=MAX_SOURCE)]
            else:
                up.source = raw.decode("utf-8-sig").replace("\r\n", "\n")
        except UnicodeDecodeError:
            up.errors["file"] = [_("The file is not UTF-8 text; save it as UTF-8 and try "
                                   "again.")]
        up.filename = PurePath(chosen.filename).name or up.filename
    return up


def _checked(up: Upload) -> dict[str, Any] | None:
    """The API's `SourceIn` checks (not empty, at most MAX_SOURCE characters)."""
    try:
        return SourceIn().load({"source": up.source, "filename": up.filename})
    except ValidationError as exc:
        for k, v in exc.messages.items():
            up.errors[k] = v if isinstance(v, list) else [str(v)]
        return None


def render_upload(up: Upload, status: int = 200):
    return render_template("owner/upload.html", up=up, max_source=MAX_SOURCE,
                           can_publish=auth.viewer().is_owner), status


def _identical(spec: FlowSpec) -> Any:
    """The stored version with the same content, if there is one."""
    for row in auth.engine().versions(spec.flow):
        if row.content_hash == spec.content_hash:
            return row
    return None


@bp.get("/flows/upload")
def flow_upload():
    """The form, empty or with a stored version's text to start a new version from."""
    require_owner_pages(auth.viewer())
    up = Upload()
    base, number = request.args.get("flow"), request.args.get("version", "")
    if base and number.isdigit() and len(number) < 10:
        row = auth.engine().version(base, int(number), with_source=True)
        up.source = row.source
        up.filename = PurePath(row.filename).name or DEFAULT_FILENAME
    return render_upload(up)


@bp.post("/flows/upload")
@large_body
def flow_upload_post():
    eng, viewer = auth.engine(), auth.viewer()
    require_owner_pages(viewer)
    do = request.form.get("do", "")
    if do not in ACTIONS:
        raise FieldErrors({"do": [msg("field.choose_one", choices=list(ACTIONS))]})
    if do != "validate":
        require_publisher(viewer)
    up = read_upload(request.form, request.files)
    body = None if up.errors else _checked(up)
    if body is None:
        up.message = _("The form has errors; nothing was checked or stored.")
        return render_upload(up, 422)
    try:
        if do == "validate":
            spec = load_definition(body["source"], body["filename"])
        else:
            result = eng.upload(body["source"], body["filename"], by=viewer.person_id)
    except DefinitionInvalid as exc:
        up.problems = problem_items(exc, up.source)
        up.message = _("%(n)s problem(s) in the definition; nothing was stored.",
                       n=len(exc.problems))
        return render_upload(up, 422)
    if do == "validate":
        same = _identical(spec)
        up.valid = {"flow": spec.flow, "title": label(spec.title, spec.flow),
                    "states": len(spec.states), "transitions": len(spec.transitions),
                    "hash": spec.content_hash, "same": same,
                    "current": current_versions().get(spec.flow)}
        return render_upload(up)
    if do == "draft":
        title = label(eng.spec_of(result.version_id).title, result.flow)
        if result.created:
            flash(_("Saved as draft version %(v)s of %(flow)s. Nothing changes until it is "
                    "published.", v=result.version, flow=title), "success")
        else:
            flash(_("Identical content is already stored as version %(v)s (%(status)s) of "
                    "%(flow)s: nothing new was stored.", v=result.version,
                    status=status_text(result.status), flow=title), "info")
    else:
        message, category = _publish(result.flow, result.version)
        if not result.created:
            message = _("Identical content is already stored as version %(v)s: nothing new "
                        "was stored.", v=result.version) + " " + message
        flash(message, category)
    return redirect(url_for("web.flow_version", flow=result.flow, version=result.version))


def status_text(status: str) -> str:
    return _("published") if status == PUBLISHED else _("draft")
