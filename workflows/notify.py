"""Notifications (消息): who is told, the outbox, and delivery by e-mail and webhook.

Three steps, each with one job:

1. **Who** (`recipients`): the people who hold a flow role on a case now, resolved the way
   the engine resolves who may act (`kernel.Roles`), but pointing at people rather than
   checking one person.
2. **The outbox** (`queue`): one `Notification` per person, plus one `Delivery` row per
   channel (e-mail, each webhook), written in the caller's transaction — the transaction of
   the event itself. Either the event and its notifications commit together or neither
   does. Each notification has an idempotency key (unique); writing it twice writes it
   once, so a retried timer never notifies twice.
3. **Delivery** (`Deliverer.deliver_due`): any node claims due deliveries the way
   `workflows.timers` claims timers (FOR UPDATE SKIP LOCKED on PostgreSQL, a conditional
   UPDATE with a row-count check on SQLite), sends each one with **no database transaction
   open** (network I/O may take seconds), then records the outcome in a short transaction
   that only counts if the claim is still ours. Failures back off exponentially and end as
   `failed` with the last error kept, visible in the API.

Delivery is at least once: a node that dies after sending and before recording leaves a
claim whose lease runs out; another node sends again, with the same idempotency key (the
e-mail's Message-ID and `X-Civflow-Idempotency-Key`, the webhook's `Idempotency-Key`), so
receivers can recognise the repeat.

This module imports no Flask: the scheduler, the CLI and the API all use it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from . import actors
from .access import HELD_ROLES
from .claims import claim_batch
from .db import Database
from .errors import NotFound
from .messages import msg
from .models import Case, Delivery, Notification, Person, RoleAssignment, Unit, unit_path_ids
from .spec import SYSTEM, FlowSpec
from .timers import node_name

log = logging.getLogger("civflow.notify")

NOTIFICATIONS = Notification.__table__
DELIVERIES = Delivery.__table__
PEOPLE = Person.__table__
ROLES = RoleAssignment.__table__
UNITS = Unit.__table__
CASES = Case.__table__

EMAIL, WEBHOOK = "email", "webhook"
PENDING, CLAIMED, SENT, FAILED = "pending", "claimed", "sent", "failed"
DELIVERY_STATUSES = (PENDING, CLAIMED, SENT, FAILED)
REMINDER, OVERDUE = "reminder", "overdue"  # notification kinds written by timers
DEFAULT_TZ = "Asia/Shanghai"
MAX_ERROR = 2000  # characters of last_error kept


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class NotifyConfig:
    """Where copies of notifications go. In-app notifications are always written; e-mail is
    off without an SMTP host, webhooks are off without a URL."""

    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_starttls: bool = False
    mail_from: str = "civflow@localhost"
    webhook_urls: tuple[str, ...] = ()
    webhook_secret: str | None = field(default=None, repr=False)
    timezone: str = DEFAULT_TZ  # how times are written in titles and bodies
    timeout: float = 10.0  # seconds, per SMTP conversation or webhook request
    max_attempts: int = 8  # then the delivery is `failed`
    backoff: dt.timedelta = dt.timedelta(seconds=30)  # × 2^(attempts-1) …
    backoff_cap: dt.timedelta = dt.timedelta(hours=1)  # … at most this

    @property
    def email_enabled(self) -> bool:
        return bool(self.smtp_host)

    @property
    def webhooks_enabled(self) -> bool:
        return bool(self.webhook_urls)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NotifyConfig:
        """Read CIVFLOW_SMTP_* , CIVFLOW_MAIL_FROM, CIVFLOW_WEBHOOK_* and CIVFLOW_TIMEZONE.

        A value that cannot be right (a port that is not a number, a webhook URL that is not
        http(s)) raises ValueError naming the variable, so a service does not start with a
        configuration that would fail every delivery.
        """
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = (env.get(name) or "").strip()
            return value or None

        port_text = get("CIVFLOW_SMTP_PORT") or "25"
        try:
            port = int(port_text)
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            raise ValueError(f"CIVFLOW_SMTP_PORT must be a port number, not {port_text!r}"
                             ) from None
        starttls = (get("CIVFLOW_SMTP_STARTTLS") or "0").lower()
        if starttls not in ("0", "1", "true", "false", "yes", "no"):
            raise ValueError(f"CIVFLOW_SMTP_STARTTLS must be 0 or 1, not {starttls!r}")
        urls = tuple(u.strip() for u in (get("CIVFLOW_WEBHOOK_URLS") or "").split(",")
                     if u.strip())
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"CIVFLOW_WEBHOOK_URLS: {url!r} is not an http(s) URL")
        tz = get("CIVFLOW_TIMEZONE") or DEFAULT_TZ
        ZoneInfo(tz)  # raises for an unknown zone
        config = cls(smtp_host=get("CIVFLOW_SMTP_HOST"), smtp_port=port,
                     smtp_user=get("CIVFLOW_SMTP_USER"),
                     smtp_password=get("CIVFLOW_SMTP_PASSWORD"),
                     smtp_starttls=starttls in ("1", "true", "yes"),
                     mail_from=get("CIVFLOW_MAIL_FROM") or cls.mail_from,
                     webhook_urls=urls, webhook_secret=get("CIVFLOW_WEBHOOK_SECRET"),
                     timezone=tz)
        if config.webhooks_enabled and not config.webhook_secret:
            log.warning("CIVFLOW_WEBHOOK_URLS is set without CIVFLOW_WEBHOOK_SECRET: "
                        "webhooks will be sent unsigned")
        return config


# --------------------------------------------------------------------------- who


def recipients(s: Session, case_row: Any, spec: FlowSpec, role_names: Iterable[str]
               ) -> list[int]:
    """The active people who hold each of `role_names` (flow roles) on the case now.

    - subject: the person assessed;
    - leader: the leaders of the nearest unit, from the case's unit up to the root, that has
      a leader other than the subject (a section chief's own case goes to the chief above);
    - unit_role R: holders of R in the case's unit or, with `inherit`, in the nearest unit
      above it that has holders;
    - group G: every holder of the group (a role assignment without a unit);
    - evaluator: the person's evaluators in the hierarchy (`actors.Org.evaluators`).

    `system` and unknown names are skipped. The result keeps first-seen order, deduplicated.
    """
    conn = s.connection()
    path = conn.execute(select(UNITS.c.path).where(UNITS.c.id == case_row.unit_id)).scalar()
    nearest_first = list(reversed(unit_path_ids(path or "")))
    out: dict[int, None] = {}
    for name in role_names:
        if name == SYSTEM or name not in spec.roles:
            continue
        role = spec.roles[name]
        if role.resolve == "subject":
            found = _active(conn, [case_row.subject_id])
        elif role.resolve == "leader":
            found = _nearest(conn, "leader", nearest_first, exclude=case_row.subject_id)
        elif role.resolve == "unit_role":
            units = nearest_first if role.inherit else nearest_first[:1]
            found = _nearest(conn, role.role, units)
        elif role.resolve == "evaluator":  # the hierarchy of who evaluates whom (actors.py)
            unit_roles, groups = actors.role_needs([role])
            org = actors.Org.read(s, {case_row.unit_id: path or ""}, unit_roles,
                                  groups).load_hosts(s, [role], [case_row.subject_id])
            found = org.holders(role, case_row.unit_id, case_row.tier, case_row.subject_id)
        elif role.resolve == "group":
            found = group_holders(s, role.group or "")
        else:
            found = []
        out.update(dict.fromkeys(found))
    return list(out)


# A group's active holders (role assignments without a unit, e.g. hr-office), the group a
# parameter `group`: read alone (`group_holders`) or joined into another read. Built once:
# building a statement costs more than running a small one.
HOLDERS = (select(ROLES.c.person_id).select_from(HELD_ROLES)
           .where(ROLES.c.role == bindparam("group"), ROLES.c.unit_id.is_(None)))
_GROUP_HOLDERS = HOLDERS.order_by(ROLES.c.person_id)


def group_holders(s: Session, group: str) -> list[int]:
    """The active holders of a group, in id order."""
    return list(s.connection().execute(_GROUP_HOLDERS, {"group": group}).scalars())


def _active(conn, person_ids: list[int]) -> list[int]:
    return list(conn.execute(select(PEOPLE.c.id).where(
        PEOPLE.c.id.in_(person_ids), PEOPLE.c.active.is_(True))).scalars())


def _nearest(conn, role: str | None, units_nearest_first: list[int],
             exclude: int | None = None) -> list[int]:
    """Active holders of `role` in the first unit of the list that has any (one query)."""
    if not units_nearest_first or not role:
        return []
    rows = conn.execute(
        select(ROLES.c.unit_id, ROLES.c.person_id).select_from(HELD_ROLES)
        .where(ROLES.c.role == role, ROLES.c.unit_id.in_(units_nearest_first))
        .order_by(ROLES.c.person_id)).all()
    by_unit: dict[int, list[int]] = {}
    for unit_id, person_id in rows:
        if person_id != exclude:
            by_unit.setdefault(unit_id, []).append(person_id)
    for unit_id in units_nearest_first:
        if by_unit.get(unit_id):
            return by_unit[unit_id]
    return []


# --------------------------------------------------------------------------- the outbox


def queue(s: Session, *, person_ids: Iterable[int], case_id: int | None, kind: str,
          title: str, body: str, key_prefix: str, now: dt.datetime,
          config: NotifyConfig) -> list[int]:
    """Write one notification per person (key `{key_prefix}:{person_id}`) and its deliveries,
    in the caller's transaction. A key that exists already is left alone (INSERT … ON
    CONFLICT DO NOTHING), and so are its deliveries. Returns the ids of new notifications.
    """
    people = list(dict.fromkeys(person_ids))
    if not people:
        return []
    conn = s.connection()
    rows = [{"key": f"{key_prefix}:{pid}", "person_id": pid, "case_id": case_id,
             "kind": kind, "title": title[:300], "body": body, "created_at": now,
             "read_at": None} for pid in people]
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = (insert(NOTIFICATIONS).values(rows)
            .on_conflict_do_nothing(index_elements=["key"])
            .returning(NOTIFICATIONS.c.id, NOTIFICATIONS.c.person_id))
    created = {person_id: nid for nid, person_id in conn.execute(stmt).all()}
    if not created:
        return []
    emails = {}
    if config.email_enabled:
        emails = dict(conn.execute(select(PEOPLE.c.id, PEOPLE.c.email).where(
            PEOPLE.c.id.in_(list(created)))).all())
    deliveries = []
    for person_id, nid in created.items():
        email = (emails.get(person_id) or "").strip()
        if email:
            deliveries.append((nid, EMAIL, email))
        deliveries += [(nid, WEBHOOK, url) for url in config.webhook_urls]
    if deliveries:
        conn.execute(DELIVERIES.insert(), [
            {"notification_id": nid, "channel": channel, "target": target[:500],
             "status": PENDING, "attempts": 0, "next_attempt_at": now}
            for nid, channel, target in deliveries])
    return [created[pid] for pid in people if pid in created]


# --------------------------------------------------------------------------- timer events


def on_timer_event(config: NotifyConfig | None = None,
                   clock: Callable[[], dt.datetime] = utcnow
                   ) -> Callable[[Session, Any, Any, Any], None]:
    """The `TimerWorker(on_event=…)` hook: reminders and overdue notices, in the timer's
    own transaction, keyed by the timer so that a retried timer never notifies twice.

    `clock` stamps the notifications (pass the engine's clock where time is controlled).
    """
    config = config or NotifyConfig()
    tz = ZoneInfo(config.timezone)

    def hook(s: Session, timer: Any, case: Any, cf: Any) -> None:
        spec: FlowSpec = cf.spec
        state = spec.states.get(case.state)
        if state is None:
            return
        payload = timer.payload or {}
        deadline = case.deadline_at or (timer.due_at if timer.kind == "deadline" else None)
        when = local_time(deadline, tz) if deadline else None
        what = f"{spec.title.zh}「{state.label.zh}」"
        if timer.kind == "deadline":
            roles = state.actor
            kind = OVERDUE
            title = f"已逾期：{what}已于 {when} 截止" if when else f"已逾期：{what}"
        else:  # reminder, repeat
            roles = tuple(payload.get("notify") or state.actor)
            kind = REMINDER
            message = payload.get("message") or {}
            if message.get("zh"):
                title = message["zh"]
            elif when:
                title = f"提醒：{what}将于 {when} 截止"
            else:
                title = f"提醒：{what}待办理"
        people = recipients(s, case, spec, roles)
        if not people:
            log.info("timer %s (case %s, %s): nobody holds %s", timer.id, case.id,
                     timer.kind, ", ".join(roles) or "no role")
            return
        body = _body(s, case, spec, state.label.zh, when, (payload.get("message") or {}))
        queue(s, person_ids=people, case_id=case.id, kind=kind, title=title, body=body,
              key_prefix=f"timer:{timer.id}", now=clock(), config=config)

    return hook


def local_time(moment: dt.datetime, tz: ZoneInfo) -> str:
    """`2026-12-07 24:00` for the midnight that ends a day, as official notices write it."""
    local = moment.astimezone(tz)
    if (local.hour, local.minute) == (0, 0):
        return f"{(local - dt.timedelta(days=1)).date().isoformat()} 24:00"
    return local.strftime("%Y-%m-%d %H:%M")


def _body(s: Session, case: Any, spec: FlowSpec, state_label: str, when: str | None,
          message: Mapping[str, str]) -> str:
    subject = s.connection().execute(
        select(PEOPLE.c.name, UNITS.c.name.label("unit"))
        .join(UNITS, UNITS.c.id == case.unit_id)
        .where(PEOPLE.c.id == case.subject_id)).first()
    period = f"（{case.period_key}）" if case.period_key else ""
    lines = [f"事项：{spec.title.zh} #{case.id}{period}"]
    if subject:
        lines.append(f"对象：{subject.name}（{subject.unit}）")
    lines.append(f"环节：{state_label}")
    if when:
        lines.append(f"截止：{when}")
    if message.get("en"):
        lines += ["", message["en"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- delivery


@dataclass
class DeliveryResult:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0  # claimed by us, then lost (our lease ran out and another node took it)


@dataclass(frozen=True)
class Outgoing:
    """A claimed delivery with what it takes to send it."""

    id: int
    channel: str
    target: str
    attempts: int
    notification_id: int
    key: str
    person_id: int
    case_id: int | None
    kind: str
    title: str
    body: str
    created_at: dt.datetime

    def payload(self) -> dict[str, Any]:
        return {"id": self.notification_id, "key": self.key, "person_id": self.person_id,
                "case_id": self.case_id, "kind": self.kind, "title": self.title,
                "body": self.body, "created_at": self.created_at.isoformat()}


class DeliveryFailed(Exception):
    """A send that did not succeed; the message is what `last_error` keeps.

    `permanent`: trying again cannot help (the receiver refused the request itself: a 4xx
    other than 408/425/429, or a target that is not a URL); the delivery fails at once
    instead of retrying for hours."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


RETRYABLE_4XX = (408, 425, 429)  # timeout, too early, too many requests: worth retrying


CLAIMABLE = or_(
    and_(DELIVERIES.c.status == PENDING, DELIVERIES.c.next_attempt_at <= bindparam("now")),
    and_(DELIVERIES.c.status == CLAIMED, DELIVERIES.c.claim_until < bindparam("now")))


class Deliverer:
    """Claims due deliveries and sends them. One per process; any number of processes.

    The lease must outlast a batch of sends (`batch` × `timeout` at worst): a node that is
    still sending when its lease runs out may see another node send the same message again.
    """

    def __init__(self, db: Database, config: NotifyConfig, node: str | None = None,
                 clock: Callable[[], dt.datetime] = utcnow,
                 lease: dt.timedelta = dt.timedelta(minutes=5), batch: int = 20):
        self.db = db
        self.config = config
        self.node = node or node_name()
        self.clock = clock
        self.lease = lease
        self.batch = batch
        self._opener = urllib.request.build_opener(_NoRedirect)

    def deliver_due(self, now: dt.datetime | None = None) -> DeliveryResult:
        """Claim, send and record what is due at `now`, a batch at a time, until none is."""
        total = DeliveryResult()
        while True:
            ids = self.claim(now or self.clock())
            total.claimed += len(ids)
            for item in self._load(ids):
                outcome = self.send_and_record(item, now)
                setattr(total, outcome, getattr(total, outcome) + 1)
            if len(ids) < self.batch:
                return total

    def claim(self, now: dt.datetime) -> list[int]:
        with self.db.unit_of_work() as s:
            return claim_batch(s.connection(), DELIVERIES, CLAIMABLE,
                               (DELIVERIES.c.next_attempt_at, DELIVERIES.c.id), self.batch,
                               self.node, now, self.lease)

    def _load(self, ids: list[int]) -> list[Outgoing]:
        if not ids:
            return []
        n = NOTIFICATIONS
        with self.db.unit_of_work(write=False) as s:
            rows = s.connection().execute(
                select(DELIVERIES.c.id, DELIVERIES.c.channel, DELIVERIES.c.target,
                       DELIVERIES.c.attempts, n.c.id.label("notification_id"), n.c.key,
                       n.c.person_id, n.c.case_id, n.c.kind, n.c.title, n.c.body,
                       n.c.created_at)
                .join(n, n.c.id == DELIVERIES.c.notification_id)
                .where(DELIVERIES.c.id.in_(ids), DELIVERIES.c.claimed_by == self.node)
                .order_by(DELIVERIES.c.id)).all()
        return [Outgoing(**row._asdict()) for row in rows]

    def send_and_record(self, item: Outgoing, now: dt.datetime | None = None) -> str:
        """Send one claimed delivery (no transaction open), then record the outcome."""
        try:
            self.send(item)
        except Exception as exc:  # noqa: BLE001 - any failure to send is retried
            error = str(exc) if isinstance(exc, DeliveryFailed) \
                else f"{exc.__class__.__name__}: {exc}"
            return self.record_failure(item, now or self.clock(), error[:MAX_ERROR],
                                       permanent=getattr(exc, "permanent", False))
        return self.record_sent(item, now or self.clock())

    def send(self, item: Outgoing) -> None:
        if item.channel == EMAIL:
            self.send_email(item)
        elif item.channel == WEBHOOK:
            self.send_webhook(item)
        else:
            raise DeliveryFailed(f"unknown channel {item.channel!r}")

    # ------------------------------------------------------------------ channels

    def email_message(self, item: Outgoing) -> EmailMessage:
        cfg = self.config
        msg = EmailMessage()
        msg["From"] = cfg.mail_from
        msg["To"] = item.target
        msg["Subject"] = item.title
        msg["Date"] = format_datetime(item.created_at)
        msg["Message-ID"] = message_id(item.key, cfg.mail_from)
        msg["X-Civflow-Idempotency-Key"] = item.key
        msg.set_content(item.body or item.title, charset="utf-8")
        return msg

    def send_email(self, item: Outgoing) -> None:
        cfg = self.config
        if not cfg.smtp_host:
            raise DeliveryFailed("e-mail is not configured (CIVFLOW_SMTP_HOST)")
        msg = self.email_message(item)
        try:
            with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.timeout) as smtp:
                if cfg.smtp_starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if cfg.smtp_user:
                    smtp.login(cfg.smtp_user, cfg.smtp_password or "")
                smtp.send_message(msg, from_addr=parseaddr(cfg.mail_from)[1] or None,
                                  to_addrs=[item.target])
        except OSError as exc:  # smtplib.SMTPException is an OSError too
            raise DeliveryFailed(f"SMTP {cfg.smtp_host}:{cfg.smtp_port}: "
                                 f"{exc.__class__.__name__}: {exc}") from exc

    def webhook_request(self, item: Outgoing, timestamp: int | None = None
                        ) -> urllib.request.Request:
        body = json.dumps(item.payload(), ensure_ascii=False, separators=(",", ":"))
        ts = str(int(self.clock().timestamp()) if timestamp is None else timestamp)
        headers = {"Content-Type": "application/json", "Idempotency-Key": item.key,
                   "X-Civflow-Timestamp": ts, "User-Agent": "civflow-webhook"}
        if self.config.webhook_secret:
            headers["X-Civflow-Signature"] = sign(self.config.webhook_secret, ts, body)
        return urllib.request.Request(item.target, data=body.encode("utf-8"),
                                      headers=headers, method="POST")

    def send_webhook(self, item: Outgoing) -> None:
        if urlsplit(item.target).scheme not in ("http", "https"):
            raise DeliveryFailed(f"{redact(item.target)} is not an http(s) URL", permanent=True)
        req = self.webhook_request(item)
        try:
            with self._opener.open(req, timeout=self.config.timeout) as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:
            detail = exc.read(200).decode("utf-8", "replace").strip()
            raise DeliveryFailed(f"webhook {redact(item.target)} answered HTTP {exc.code}"
                                 + (f": {detail}" if detail else ""),
                                 permanent=400 <= exc.code < 500
                                 and exc.code not in RETRYABLE_4XX) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryFailed(f"webhook {redact(item.target)}: "
                                 f"{reason.__class__.__name__}: {reason}") from exc
        if not 200 <= status < 300:
            raise DeliveryFailed(f"webhook {redact(item.target)} answered HTTP {status}")

    # ------------------------------------------------------------------ outcomes

    def record_sent(self, item: Outgoing, now: dt.datetime) -> str:
        with self.db.unit_of_work() as s:
            res = s.connection().execute(
                update(DELIVERIES).where(DELIVERIES.c.id == item.id,
                                         DELIVERIES.c.status == CLAIMED,
                                         DELIVERIES.c.claimed_by == self.node)
                .values(status=SENT, sent_at=now, attempts=item.attempts + 1,
                        last_error=None, claimed_by=None, claim_until=None))
        return "sent" if res.rowcount == 1 else "skipped"

    def record_failure(self, item: Outgoing, now: dt.datetime, error: str,
                       permanent: bool = False) -> str:
        attempts = item.attempts + 1
        give_up = permanent or attempts >= self.config.max_attempts
        with self.db.unit_of_work() as s:
            res = s.connection().execute(
                update(DELIVERIES).where(DELIVERIES.c.id == item.id,
                                         DELIVERIES.c.status == CLAIMED,
                                         DELIVERIES.c.claimed_by == self.node)
                .values(status=FAILED if give_up else PENDING, attempts=attempts,
                        last_error=error, claimed_by=None, claim_until=None,
                        next_attempt_at=now if give_up else now + self.backoff(attempts)))
        if res.rowcount != 1:
            return "skipped"
        log.warning("delivery %s (%s, notification %s): %s (attempt %s%s)", item.id,
                    item.channel, item.key, error, attempts, ", giving up" if give_up else "")
        return "failed" if give_up else "retried"

    def backoff(self, attempts: int) -> dt.timedelta:
        """The wait after the `attempts`-th failure: 30 s, 1 min, 2 min, … at most 1 h."""
        return min(self.config.backoff * 2 ** max(attempts - 1, 0), self.config.backoff_cap)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer that is not 2xx: a failure, never a POST turned into a GET."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def sign(secret: str, timestamp: str, body: str) -> str:
    """`sha256=` + hex HMAC-SHA256 of `{timestamp}.{body}` with the shared secret."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.{body}".encode(), hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def message_id(key: str, mail_from: str) -> str:
    """A Message-ID that is the same for every send of one notification."""
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "civflow.localhost"
    return f"<civflow.{hashlib.sha256(key.encode('utf-8')).hexdigest()[:32]}@{domain}>"


def redact(url: str) -> str:
    """A webhook URL without credentials or query (they often hold tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "…" if parts.query else "", ""))


# --------------------------------------------------------------------------- read side (API)


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    total: int
    extra: dict[str, Any] = field(default_factory=dict)


NOTIFICATION_COLUMNS = (NOTIFICATIONS.c.id, NOTIFICATIONS.c.key, NOTIFICATIONS.c.case_id,
                        NOTIFICATIONS.c.kind, NOTIFICATIONS.c.title, NOTIFICATIONS.c.body,
                        NOTIFICATIONS.c.created_at, NOTIFICATIONS.c.read_at)


def _notification(row: Any) -> dict[str, Any]:
    out = dict(row._mapping)
    out["read"] = row.read_at is not None
    return out


def list_notifications(db: Database, person_id: int, *, unread: bool | None = None,
                       page: int = 1, per_page: int = 20) -> Page:
    """A person's notifications, newest first; `extra["unread"]` counts all unread ones."""
    mine = NOTIFICATIONS.c.person_id == person_id
    q = select(*NOTIFICATION_COLUMNS).where(mine)
    if unread is True:
        q = q.where(NOTIFICATIONS.c.read_at.is_(None))
    elif unread is False:
        q = q.where(NOTIFICATIONS.c.read_at.is_not(None))
    with db.unit_of_work(write=False) as s:
        conn = s.connection()
        total = conn.execute(select(func.count()).select_from(q.subquery())).scalar_one()
        unread_count = conn.execute(select(func.count()).select_from(NOTIFICATIONS).where(
            mine, NOTIFICATIONS.c.read_at.is_(None))).scalar_one()
        rows = conn.execute(q.order_by(NOTIFICATIONS.c.created_at.desc(),
                                       NOTIFICATIONS.c.id.desc())
                            .limit(per_page).offset((page - 1) * per_page)).all()
    return Page([_notification(r) for r in rows], total, {"unread": unread_count})


def mark_read(db: Database, person_id: int, notification_id: int, now: dt.datetime
              ) -> dict[str, Any]:
    """Mark one of the person's notifications read (again: keeps the first read time).

    Someone else's notification is NotFound, exactly like one that does not exist."""
    where = (NOTIFICATIONS.c.id == notification_id, NOTIFICATIONS.c.person_id == person_id)
    with db.unit_of_work() as s:
        conn = s.connection()
        conn.execute(update(NOTIFICATIONS).where(*where, NOTIFICATIONS.c.read_at.is_(None))
                     .values(read_at=now))
        row = conn.execute(select(*NOTIFICATION_COLUMNS).where(*where)).first()
    if row is None:
        raise NotFound(msg("notify.notification_does_not_exist", notification_id=notification_id))
    return _notification(row)


def mark_all_read(db: Database, person_id: int, now: dt.datetime) -> int:
    """Mark every unread notification of the person read; returns how many there were."""
    with db.unit_of_work() as s:
        return s.connection().execute(
            update(NOTIFICATIONS).where(NOTIFICATIONS.c.person_id == person_id,
                                        NOTIFICATIONS.c.read_at.is_(None))
            .values(read_at=now)).rowcount


def list_deliveries(db: Database, *, status: str | None = None, channel: str | None = None,
                    page: int = 1, per_page: int = 20) -> Page:
    """Deliveries for administrators, the ones due or retried last first; `extra["counts"]`
    has the number per status (failures visible at a glance)."""
    d, n = DELIVERIES, NOTIFICATIONS
    conds = []
    if status:
        conds.append(d.c.status == status)
    if channel:
        conds.append(d.c.channel == channel)
    q = (select(d.c.id, d.c.notification_id, n.c.key.label("notification_key"),
                n.c.person_id, n.c.case_id, n.c.kind, n.c.title, d.c.channel, d.c.target,
                d.c.status, d.c.attempts, d.c.last_error, d.c.next_attempt_at, d.c.sent_at,
                n.c.created_at)
         .join(n, n.c.id == d.c.notification_id).where(*conds))
    with db.unit_of_work(write=False) as s:
        conn = s.connection()
        total = conn.execute(select(func.count()).select_from(d).where(*conds)).scalar_one()
        counts = dict.fromkeys(DELIVERY_STATUSES, 0)
        counts.update(conn.execute(select(d.c.status, func.count()).group_by(d.c.status)).all())
        rows = conn.execute(q.order_by(d.c.next_attempt_at.desc(), d.c.id.desc())
                            .limit(per_page).offset((page - 1) * per_page)).all()
    items = []
    for r in rows:
        item = dict(r._mapping)
        if item["channel"] == WEBHOOK:
            item["target"] = redact(item["target"])
        items.append(item)
    return Page(items, total, {"counts": counts})
