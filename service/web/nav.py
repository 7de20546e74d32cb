"""The navigation bar: which entries a signed-in person sees.

An entry names a view endpoint and who sees it. An entry whose endpoint is not registered
yet is shown greyed out as "coming" (即将提供) — the process-owner pages (流程管理, 台账统计)
start that way and light up once their views exist under the same endpoint names.
To add a page to the bar, append a `NavItem` to `ITEMS` (see docs/web.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, g, request, url_for
from flask_babel import lazy_gettext as _l

from workflows.access import COMMITTEE, LEADER, Viewer


def everyone(_v: Viewer) -> bool:
    return True


def approvers(v: Viewer) -> bool:
    """Anyone holding a role (leader, committee, a group, owner, admin) has a queue."""
    return bool(v.assignments)


def owners(v: Viewer) -> bool:
    return v.is_owner or v.is_admin


def ledger_readers(v: Viewer) -> bool:
    """The ledger pages (台账统计): owners and admins, and leaders and committee members for
    their units (the ledger API's rule)."""
    return v.sees_all or bool(v.paths(LEADER, COMMITTEE))


@dataclass(frozen=True)
class NavItem:
    endpoint: str
    label: Any  # a lazy gettext string
    visible: Callable[[Viewer], bool] = everyone
    # Other endpoints that mark this entry as the current page.
    also: tuple[str, ...] = ()


ITEMS: list[NavItem] = [
    NavItem("web.home", _l("My to-dos"), also=("web.case",)),
    NavItem("web.queue", _l("Approval queue"), approvers, also=("web.bulk", "web.bulk_post")),
    NavItem("web.notifications", _l("Notifications")),
    NavItem("web.flows", _l("Flows"), owners,      # 流程管理: the process-owner pages
            also=("web.flow_version", "web.flow_upload", "web.flow_upload_post")),
    NavItem("web.start_case", _l("Start a case"), owners,  # 发起事项
            also=("web.start_case_post",)),
    NavItem("web.ledger", _l("Ledger"), ledger_readers,  # 台账统计
            also=("web.ledger_cases", "web.eligibility", "web.contact_points")),
]


def entries() -> list[dict[str, Any]]:
    """The bar for the current viewer: label, url (None while the page is coming), current."""
    viewer: Viewer | None = g.get("viewer")
    if viewer is None:
        return []
    out = []
    for item in ITEMS:
        if not item.visible(viewer):
            continue
        ready = item.endpoint in current_app.view_functions
        out.append({"label": item.label, "url": url_for(item.endpoint) if ready else None,
                    "current": request.endpoint in (item.endpoint, *item.also)})
    return out


def init_app(app: Flask) -> None:
    app.jinja_env.globals["nav_entries"] = entries
