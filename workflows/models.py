"""SQLAlchemy tables. The schema itself is owned by Alembic (`workflows/migrations`).

Names follow the domain: units (单位) form a tree kept as a materialised path so that a
subtree or the ancestors of a unit are one indexed query; cases (考核/晋升/选派 事项) carry
a version counter for optimistic locking and the head of their history hash chain.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql import text

JSONType = JSON().with_variant(JSONB(), "postgresql")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TIERS = ("chief", "deputy", "staff")  # 正职 / 副职 / 一般干部: pools for 同级竞技
ORG_ROLES = ("leader", "committee", "process_owner", "admin")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator):
    """Timestamps are aware and in UTC on both databases (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime given; civflow stores aware UTC timestamps")
            value = value.astimezone(dt.UTC)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Unit(Base):
    """单位 / 部门. `path` is `/1/4/9/`: the ids from the root down to this unit."""

    __tablename__ = "units"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))
    path: Mapped[str] = mapped_column(String(1000), index=True, default="/")

    def ancestor_ids(self) -> list[int]:
        return unit_path_ids(self.path)


def unit_path_ids(path: str) -> list[int]:
    return [int(p) for p in path.strip("/").split("/") if p]


class Person(Base):
    """公务员. `tier` is the pool of 同级人员; rank and its date feed promotion rules."""

    __tablename__ = "people"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), index=True)
    tier: Mapped[str] = mapped_column(String(16), default="staff")
    rank: Mapped[str | None] = mapped_column(String(64))
    rank_since: Mapped[dt.date | None] = mapped_column(Date)
    post: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    email: Mapped[str | None] = mapped_column(String(254))  # for e-mail notifications


class RoleAssignment(Base):
    """A person holds a role in a unit (leader, committee, …); unit NULL = a named group."""

    __tablename__ = "role_assignments"
    __table_args__ = (
        UniqueConstraint("person_id", "unit_id", "role"),
        Index("uq_role_assignments_group", "person_id", "role", unique=True,
              postgresql_where=text("unit_id IS NULL"), sqlite_where=text("unit_id IS NULL")),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"), index=True)
    role: Mapped[str] = mapped_column(String(64))


class User(Base):
    """A login, linked to the person it acts as."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class FlowVersion(Base):
    """An immutable published version of a flow definition."""

    __tablename__ = "flow_versions"
    __table_args__ = (
        UniqueConstraint("flow_id", "version"),
        UniqueConstraint("flow_id", "content_hash"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    flow_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(String(500))
    source: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="published")  # draft | published
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    published_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    published_by: Mapped[int | None] = mapped_column(ForeignKey("people.id"))


class Case(Base):
    """One run of a flow for one person (and one period, for periodic flows)."""

    __tablename__ = "cases"
    __table_args__ = (
        UniqueConstraint("flow_id", "subject_id", "period_key"),
        Index("ix_cases_flow_id_state", "flow_id", "state"),
        # Lists and the queue at a million cases (migration 0007, docs/BENCHMARKS.md).
        Index("ix_cases_updated_at_id", "updated_at", "id"),
        Index("ix_cases_deadline_at_id", "deadline_at", "id"),
        Index("ix_cases_open_due", "deadline_at", "state_entered_at", "id",
              postgresql_where=text("closed_at IS NULL"), sqlite_where=text("closed_at IS NULL")),
        Index("ix_cases_open_step", "version_id", "state", "unit_id",
              postgresql_where=text("closed_at IS NULL"), sqlite_where=text("closed_at IS NULL")),
        Index("ix_cases_claimed_by", "claimed_by", postgresql_where=text("claimed_by IS NOT NULL"),
              sqlite_where=text("claimed_by IS NOT NULL")),
        Index("ix_cases_flow_id_period_key", "flow_id", "period_key"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    flow_id: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(ForeignKey("flow_versions.id"))
    subject_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), index=True)
    tier: Mapped[str | None] = mapped_column(String(16))
    period_key: Mapped[str | None] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=1)
    history_seq: Mapped[int] = mapped_column(Integer, default=0)
    # The history seq of the record that entered the current state: timers armed in a
    # state carry it, and are dropped, not fired, once the case has moved on.
    state_visit: Mapped[int] = mapped_column(Integer, default=1)
    history_hash: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    state_entered_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    deadline_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # 认领: an approver reserves the current step; cleared when the state changes.
    claimed_by: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class HistoryRecord(Base):
    """Append-only audit record; `hash` chains it to the case's previous record."""

    __tablename__ = "case_history"
    __table_args__ = (
        UniqueConstraint("case_id", "seq"),
        # A key is used once per case. Most records carry none: they stay out of the index,
        # one index write fewer per action (migration 0014).
        Index("uq_case_history_case_id_idempotency_key", "case_id", "idempotency_key",
              unique=True, postgresql_where=text("idempotency_key IS NOT NULL"),
              sqlite_where=text("idempotency_key IS NOT NULL")),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    actor_role: Mapped[str] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(64))
    from_state: Mapped[str | None] = mapped_column(String(64))
    to_state: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    comment: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))  # what the key was used for
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class LoginThrottle(Base):
    """Failed logins per account (`account:NAME`) or address (`address:IP`); every node
    reads the same rows, so throttling holds across a cluster."""

    __tablename__ = "login_throttle"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    window_started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SecurityEvent(Base):
    """The audit of authentication: failed logins, lockouts, lifts, deactivations."""

    __tablename__ = "security_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    username: Mapped[str | None] = mapped_column(String(100))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    address: Mapped[str | None] = mapped_column(String(64))
    by: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class ApiToken(Base):
    """A bearer token or a browser session; only its SHA-256 is stored. Revocable."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # bearer | session
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Setting(Base):
    """Installation-wide values every node must share (e.g. the session signing key)."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Timer(Base):
    """A moment the scheduler must act at: a deadline, a reminder, an automatic
    transition, a repeating reminder. The database is the truth; APScheduler only ticks.

    A case's timer belongs to the state visit that armed it (`state_visit`). Once the case
    has moved on it is dropped, whatever `status` says until the ticker comes to it: the
    action that moves the case does not write to it (`timers.STALE`, `SHOWN_STATUS`)."""

    __tablename__ = "timers"
    __table_args__ = (
        Index("ix_timers_status_due_at", "status", "due_at"),
        Index("ix_timers_case_id_status", "case_id", "status"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    state_visit: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # deadline | reminder | auto | repeat
    action: Mapped[str | None] = mapped_column(String(64))  # the trigger to fire, if any
    due_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claim_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    fired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)


class Notification(Base):
    """An in-app notification (消息) for one person; e-mail and webhook copies are
    `Delivery` rows written in the same transaction (the outbox)."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_person_id_read_at", "person_id", "read_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)  # idempotency key
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    kind: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    read_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Delivery(Base):
    """One notification sent through one channel (email | webhook), at least once."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("notification_id", "channel", "target"),
        Index("ix_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    notification_id: Mapped[int] = mapped_column(ForeignKey("notifications.id"))
    channel: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|sent|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claim_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)


class CycleRun(Base):
    """A period of a cyclic flow that has been opened (one case per eligible person).
    The primary key makes opening a period happen once, however many nodes try."""

    __tablename__ = "cycle_runs"
    flow_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    period_key: Mapped[str] = mapped_column(String(16), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="opening")  # opening | done
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claim_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    opened_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    cases_opened: Mapped[int] = mapped_column(Integer, default=0)


class MigrationRun(Base):
    """A migration (迁移) of a flow's running cases from one version to a newer one: who ran
    it, the state mapping (old state → new state), when, and how many cases moved, were
    refused or were already moved. `status` is running until the last batch is done; a run
    interrupted half-way stays running and is resumed by running it again
    (`workflows.migrate.run`)."""

    __tablename__ = "migration_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    flow_id: Mapped[str] = mapped_column(String(64), index=True)
    from_version: Mapped[int] = mapped_column(Integer)
    to_version: Mapped[int] = mapped_column(Integer)
    mapping: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    by: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    # running | done | superseded (interrupted, then run again with another mapping)
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    moved: Mapped[int] = mapped_column(Integer, default=0)
    refused: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)


# --------------------------------------------------------------------------- person facts
# What the rules read about a person (rank history, annual results, sanctions, …). Written
# only through `workflows.facts`, which records every change in `fact_audit`.



FACT_GRADES = ("优秀", "称职", "基本称职", "不称职", "不定等次")
RESULT_SOURCES = ("manual", "import", "flow")


@dataclass(frozen=True)
class SanctionKind:
    """A kind of sanction that may be recorded: its category and the default months of its
    effect period on promotion (影响期); None: the effect has no end."""

    category: str
    months: int | None


# The sanctions a person's file may record, by category, with the default effect period on
# promotion (影响期). The months are stored on each row (a decision may set its own), so the
# rules read them from the row; what each kind does to an annual grade is a parameter of
# the annual flow (sanction_block). See docs/regulations.md.
SANCTION_CATEGORIES = ("政务处分", "党纪处分", "组织处理", "诫勉")
SANCTION_KINDS: dict[str, SanctionKind] = {
    # 《中华人民共和国公职人员政务处分法》(2020) 第八条: 处分期间 警告 6 个月, 记过 12, 记大过 18,
    # 降级、撤职 24; 第二十二条: 期间不得晋升职务、职级、衔级和级别. 开除: no end.
    "警告": SanctionKind("政务处分", 6),
    "记过": SanctionKind("政务处分", 12),
    "记大过": SanctionKind("政务处分", 18),
    "降级": SanctionKind("政务处分", 24),
    "撤职": SanctionKind("政务处分", 24),
    "开除": SanctionKind("政务处分", None),
    # 《中国共产党纪律处分条例》(2023), the articles on each 处分's effect: 警告 一年内、严重警告 一年半内不得
    # 在党内提升职务; 撤销党内职务 二年内不得担任相当或更高职务; 留党察看 (一年或二年) and
    # 恢复党员权利后二年内同上 — default 12 + 24 months, a 二年察看 is recorded with 48;
    # 开除党籍: no end. Named 党内警告 / 党内严重警告 to tell them from the 政务 警告.
    "党内警告": SanctionKind("党纪处分", 12),
    "党内严重警告": SanctionKind("党纪处分", 18),
    "撤销党内职务": SanctionKind("党纪处分", 24),
    "留党察看": SanctionKind("党纪处分", 36),
    "开除党籍": SanctionKind("党纪处分", None),
    # 《关于对党员领导干部进行组织处理的规定》(2021), 影响期 of each form: 调整职务 (调离
    # 岗位) 一年内不得提拔; 责令辞职、免职 一年内不得安排领导职务、二年内不得担任高于原任职务
    # 层次的职务; 降职 二年内不得提拔; 停职检查: 6 months (the period of the 停职; a parameter).
    "停职检查": SanctionKind("组织处理", 6),
    "调离岗位": SanctionKind("组织处理", 12),
    "调整职务": SanctionKind("组织处理", 12),
    "责令辞职": SanctionKind("组织处理", 24),
    "免职": SanctionKind("组织处理", 24),
    "降职": SanctionKind("组织处理", 24),
    # 《关于对党员领导干部进行诫勉的规定》(2019): 受到诫勉的，六个月内不得提拔或者重用.
    "诫勉": SanctionKind("诫勉", 6),
}


class RankHistory(Base):
    """One rank (职级) a person held from `since` until `until` (NULL: holds it now)."""

    __tablename__ = "rank_history"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    rank: Mapped[str] = mapped_column(String(64))
    since: Mapped[dt.date] = mapped_column(Date)
    until: Mapped[dt.date | None] = mapped_column(Date)
    note: Mapped[str | None] = mapped_column(Text)


class AnnualResult(Base):
    """A person's annual assessment grade (年度考核等次) of one year."""

    __tablename__ = "annual_results"
    __table_args__ = (UniqueConstraint("person_id", "year"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    year: Mapped[int] = mapped_column(Integer)
    grade: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16), default="manual")  # manual|import|flow
    note: Mapped[str | None] = mapped_column(Text)


class Sanction(Base):
    """A sanction (政务处分, 党纪处分, 组织处理 or 诫勉, `SANCTION_KINDS`); its effect period
    runs `effect_months` from `decided_on`, without end when NULL (开除党籍)."""

    __tablename__ = "sanctions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    decided_on: Mapped[dt.date] = mapped_column(Date)
    effect_months: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(Text)


class Investigation(Base):
    """A period under investigation (立案审查调查); open while `closed_on` is NULL."""

    __tablename__ = "investigations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    opened_on: Mapped[dt.date] = mapped_column(Date)
    closed_on: Mapped[dt.date | None] = mapped_column(Date)
    note: Mapped[str | None] = mapped_column(Text)


class ExamResult(Base):
    """An exam taken (e.g. 政治理论考试) and whether it was passed."""

    __tablename__ = "exam_results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    exam: Mapped[str] = mapped_column(String(100))
    taken_on: Mapped[dt.date] = mapped_column(Date)
    score: Mapped[Decimal | None] = mapped_column(Numeric(7, 2))
    passed: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str | None] = mapped_column(Text)


class TrainingHours(Base):
    """Training hours (学时) a person completed in one year."""

    __tablename__ = "training_hours"
    __table_args__ = (UniqueConstraint("person_id", "year"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    year: Mapped[int] = mapped_column(Integer)
    hours: Mapped[Decimal] = mapped_column(Numeric(7, 1))
    note: Mapped[str | None] = mapped_column(Text)


class TrainingRecord(Base):
    """One training a person took (培训记录): the course, its hours, the day it ended, who
    organised it, online (线上) or offline (线下). The yearly total is derived from these
    rows (plus a legacy `training_hours` total, see workflows/facts.py)."""

    __tablename__ = "training_records"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    course: Mapped[str] = mapped_column(String(200))
    hours: Mapped[Decimal] = mapped_column(Numeric(7, 1))
    taken_on: Mapped[dt.date] = mapped_column(Date)
    organiser: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))  # online | offline
    note: Mapped[str | None] = mapped_column(Text)


class Commendation(Base):
    """A commendation (嘉奖 / 记功 / 记二等功 / 通报表扬 / …)."""

    __tablename__ = "commendations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    decided_on: Mapped[dt.date] = mapped_column(Date)
    note: Mapped[str | None] = mapped_column(Text)


class Consequence(Base):
    """A consequence of a regular result (平时考核结果运用) for the hr office to act on:
    通报表扬 for 好, a 嘉奖 / 记功 candidacy, a 待岗学习 / 召回管理 review for 较差. Written by
    the regular assessment's approval (effect `record_consequences`) or by an admin."""

    __tablename__ = "consequences"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    period: Mapped[str | None] = mapped_column(String(16))  # the assessed period, 2026-07
    decided_on: Mapped[dt.date] = mapped_column(Date)
    note: Mapped[str | None] = mapped_column(Text)


class DispatchOutcome(Base):
    """The recorded result of a frontline dispatch (下沉一线 / 第一书记 任期考核结果): the grade
    of the term, and whether the sending unit proposed a commendation or priority for
    promotion. Written by the dispatch's approval (effect `record_dispatch_outcome`) or by an
    admin; promotion reads it (docs/rank-promotion.md)."""

    __tablename__ = "dispatch_outcomes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    post_type: Mapped[str | None] = mapped_column(String(64))  # 第一书记, 下沉社区 …
    receiving_unit: Mapped[str | None] = mapped_column(String(200))  # 村、社区
    term_start: Mapped[dt.date | None] = mapped_column(Date)
    term_end: Mapped[dt.date | None] = mapped_column(Date)
    grade: Mapped[str] = mapped_column(String(16))  # 优秀 / 称职 / 基本称职 / 不称职
    commendation_proposed: Mapped[bool] = mapped_column(Boolean, default=False)
    promotion_priority: Mapped[bool] = mapped_column(Boolean, default=False)
    decided_on: Mapped[dt.date] = mapped_column(Date)  # 审定备案 day
    note: Mapped[str | None] = mapped_column(Text)


class FactAudit(Base):
    """One change to a person fact: who, when, what, the row before and after (JSON)."""

    __tablename__ = "fact_audit"
    __table_args__ = (Index("ix_fact_audit_person_id_id", "person_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))  # NULL: the system
    action: Mapped[str] = mapped_column(String(16))  # create | update | delete | import | flow
    table_name: Mapped[str] = mapped_column(String(32))
    row_id: Mapped[int] = mapped_column(Integer)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class RankPositions(Base):
    """职数: the rank positions a unit may fill in one promotion round, per target rank.

    Set by admins per unit, rank and round (职数 differ by level of government and are set
    by each province, docs/domain.md §3), read by the `positions` rule on approval.
    """

    __tablename__ = "rank_positions"
    __table_args__ = (UniqueConstraint("unit_id", "rank", "round"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"))
    rank: Mapped[str] = mapped_column(String(64))
    round: Mapped[str] = mapped_column(String(32))
    positions: Mapped[int] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(Text)
    set_by: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    set_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ContactPointScore(Base):
    """考核联系点成绩单: a contact-point unit's year-end quality evaluation.

    `items` holds the score sheet lines ({item, score, max}); `score` their total as
    entered; `raised` marks the units whose annual 优秀 ratio is raised (seed document 3).
    """

    __tablename__ = "contact_point_scores"
    __table_args__ = (UniqueConstraint("unit_id", "year"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"))
    year: Mapped[int] = mapped_column(Integer)
    score: Mapped[Decimal | None] = mapped_column(Numeric(6, 2))
    items: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    raised: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str | None] = mapped_column(Text)
    set_by: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    set_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ContactPoint(Base):
    """考核联系点台账: a unit that is a contact point (联系点) of the regular assessment in one
    year, its liaison (联络员, the subject of its monthly reports), its targets (目标任务)
    and outcomes (成果形式 / 成效), each a list of short texts."""

    __tablename__ = "contact_points"
    __table_args__ = (UniqueConstraint("unit_id", "year"),
                      UniqueConstraint("year", "liaison_id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"))
    year: Mapped[int] = mapped_column(Integer)
    liaison_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    level: Mapped[str | None] = mapped_column(String(64))  # e.g. 市级 / 区级 / 特色
    targets: Mapped[list[str] | None] = mapped_column(JSONType)
    outcomes: Mapped[list[str] | None] = mapped_column(JSONType)
    note: Mapped[str | None] = mapped_column(Text)
    set_by: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    set_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
