"""Staff pages (本人): the home page — my to-dos with their due dates and my cases — and
my notifications (消息).

The to-dos are the engine's queue narrowed to the viewer's own cases (the steps where the
person assessed acts: summary, weekly records, feedback); approvers get a line pointing at
their queue. Notifications are `workflows.notify`'s list, as in `/api/v1/notifications`.
"""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from marshmallow import ValidationError

from workflows.queries import CaseFilter

from .. import auth
from ..api.notifications import NotificationQuery
from . import bp, wants_fragment
from .i18n import lang
from .nav import approvers

HOME_LIMIT = 50
NOTIFICATIONS_PER_PAGE = 20


@bp.get("/home")
def home():
    eng, viewer = auth.engine(), auth.viewer()
    me = viewer.person_id
    todo, todo_total = eng.queue(viewer, CaseFilter(subject_id=me, per_page=HOME_LIMIT), lang())
    mine, mine_total = eng.list_cases(viewer, CaseFilter(subject_id=me, per_page=HOME_LIMIT,
                                                         sort="-created_at"), lang())
    waiting = 0
    if approvers(viewer):  # the approval queue's count: their own cases are left out there
        _rows, waiting = eng.queue(viewer, CaseFilter(not_subject=me, per_page=1), lang())
    return render_template("home.html", todo=todo, todo_total=todo_total, mine=mine,
                           mine_total=mine_total, waiting=waiting, limit=HOME_LIMIT)


@bp.get("/notifications")
def notifications():
    """The API's `NotificationQuery` reads the page and the unread filter (`unread=1`)."""
    given = {k: v for k, v in request.args.items() if k in ("page", "unread") and v}
    try:
        args = NotificationQuery().load(given)
    except ValidationError:
        args = NotificationQuery().load({})
    page, unread_only = args["page"], args.get("unread") is True
    found = auth.door().notifications.inbox(viewer=auth.viewer(),
                                           unread=True if unread_only else None, page=page,
                                           per_page=NOTIFICATIONS_PER_PAGE)
    pages = max(1, -(-found.total // NOTIFICATIONS_PER_PAGE))
    return render_template("notifications.html", items=found.items, total=found.total,
                           unread=found.extra["unread"], page=page, pages=pages,
                           unread_only=unread_only)


@bp.post("/notifications/<int:notification_id>/read")
def notification_read(notification_id: int):
    item = auth.door().notifications.mark_read(viewer=auth.viewer(),
                                               notification_id=notification_id)
    if wants_fragment():
        return render_template("_notification.html", n=item)
    return redirect(url_for("web.notifications"))


@bp.post("/notifications/read-all")
def notifications_read_all():
    n = auth.door().notifications.mark_all_read(viewer=auth.viewer())
    flash(_("%(n)s notification(s) marked read.", n=n), "success")
    return redirect(url_for("web.notifications"))
