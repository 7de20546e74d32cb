"""Notifications (消息): the caller's in-app list with read/unread, and — for admins — the
deliveries by e-mail and webhook with their failures.

Nobody reads another person's notifications: someone else's is 404, exactly like one that
does not exist. The outbox and the delivery workers live in `workflows.notify`.
"""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from workflows import notify

from ..auth import door, viewer
from .schemas import PageQuery

blp = Blueprint("notifications", __name__, url_prefix="/api/v1/notifications",
                description="Notifications (消息): reminders and notices for the caller; "
                            "delivery status for admins")


# --------------------------------------------------------------------------- schemas


class NotificationQuery(PageQuery):
    unread = fields.Boolean(metadata={"description": "true: unread only; false: read only"})


class NotificationOut(Schema):
    id = fields.Integer(required=True)
    key = fields.String(required=True, metadata={
        "description": "Idempotency key: the same for every copy (e-mail, webhook)"})
    case_id = fields.Integer(allow_none=True)
    kind = fields.String(required=True, metadata={"description": "reminder | overdue | …"})
    title = fields.String(required=True)
    body = fields.String(required=True)
    created_at = fields.DateTime(required=True)
    read_at = fields.DateTime(allow_none=True)
    read = fields.Boolean(required=True)


class NotificationList(Schema):
    items = fields.List(fields.Nested(NotificationOut), required=True)
    total = fields.Integer(required=True, metadata={"description": "Matching the filter"})
    unread = fields.Integer(required=True, metadata={
        "description": "All of the caller's unread notifications, whatever the filter"})
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True)


class ReadAllOut(Schema):
    marked = fields.Integer(required=True, metadata={"description": "Newly marked read"})
    unread = fields.Integer(required=True)


class DeliveryQuery(PageQuery):
    status = fields.String(validate=validate.OneOf(notify.DELIVERY_STATUSES), metadata={
        "description": "pending (waiting, or retrying after a failure) | claimed (being "
                       "sent) | sent | failed (gave up; see last_error)"})
    channel = fields.String(validate=validate.OneOf([notify.EMAIL, notify.WEBHOOK]))


class DeliveryOut(Schema):
    id = fields.Integer(required=True)
    notification_id = fields.Integer(required=True)
    notification_key = fields.String(required=True)
    person_id = fields.Integer(required=True)
    case_id = fields.Integer(allow_none=True)
    kind = fields.String(required=True)
    title = fields.String(required=True)
    channel = fields.String(required=True, metadata={"description": "email | webhook"})
    target = fields.String(required=True, metadata={
        "description": "The address, or the webhook URL without credentials and query"})
    status = fields.String(required=True)
    attempts = fields.Integer(required=True)
    last_error = fields.String(allow_none=True)
    next_attempt_at = fields.DateTime(required=True)
    sent_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime(required=True)


class DeliveryCounts(Schema):
    pending = fields.Integer(required=True)
    claimed = fields.Integer(required=True)
    sent = fields.Integer(required=True)
    failed = fields.Integer(required=True)


class DeliveryList(Schema):
    items = fields.List(fields.Nested(DeliveryOut), required=True)
    total = fields.Integer(required=True)
    counts = fields.Nested(DeliveryCounts, required=True,
                           metadata={"description": "All deliveries by status"})
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True)


# --------------------------------------------------------------------------- views


@blp.route("")
class Notifications(MethodView):
    @blp.arguments(NotificationQuery, location="query")
    @blp.response(200, NotificationList)
    def get(self, args):
        """The caller's notifications, newest first, with the number still unread."""
        page = door().notifications.inbox(viewer=viewer(), unread=args.get("unread"),
                                         page=args["page"], per_page=args["per_page"])
        return {"items": page.items, "total": page.total, "unread": page.extra["unread"],
                "page": args["page"], "per_page": args["per_page"]}


@blp.route("/<int:notification_id>/read")
class NotificationRead(MethodView):
    @blp.response(200, NotificationOut)
    def post(self, notification_id: int):
        """Mark one of the caller's notifications read (repeating it changes nothing)."""
        return door().notifications.mark_read(viewer=viewer(),
                                              notification_id=notification_id)


@blp.route("/read-all")
class NotificationsReadAll(MethodView):
    @blp.response(200, ReadAllOut)
    def post(self):
        """Mark all of the caller's notifications read."""
        return {"marked": door().notifications.mark_all_read(viewer=viewer()), "unread": 0}


@blp.route("/deliveries")
class Deliveries(MethodView):
    @blp.arguments(DeliveryQuery, location="query")
    @blp.response(200, DeliveryList)
    def get(self, args):
        """E-mail and webhook deliveries with attempts and the last error (admins only)."""
        page = door().notifications.deliveries(viewer=viewer(), status=args.get("status"),
                                               channel=args.get("channel"),
                                               page=args["page"], per_page=args["per_page"])
        return {"items": page.items, "total": page.total, "counts": page.extra["counts"],
                "page": args["page"], "per_page": args["per_page"]}
