"""The front door (统一入口): every way into `workflows/` from the service, in one place.

The service (API views, web pages, CLI) holds one `Engine`; its `door` attribute is a
`FrontDoor` with one small object per capability outside the case kernel (the kernel is
`Engine` itself: flows, cases, actions, the queue). Every method has one calling
convention:

- keyword arguments, with the `viewer` (who reads) or `actor` explicit wherever access
  applies; the access check is made here, not in the view;
- exactly one unit of work (`Database.unit_of_work`), opened and closed inside the method:
  no session goes in or comes out;
- a plain result: a dataclass, a dict of plain values, or a number; never an ORM row.

The exceptions say why where they are: logging in (`Accounts.login`) is several short
transactions by design (the throttle counts an attempt before the slow password hash and
settles it after), and loading the demo (`Demo.load`) replays a year of actions, each
committing on its own as it would have in the service.

A view is therefore: parse the request → one call here → map the errors
(`service.errors`). `tests/test_layers.py` checks that nothing in `service/` imports
`workflows.db`, `workflows.models` or SQLAlchemy, or opens a unit of work.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from . import accounts as acc
from . import backlog as backlog_
from . import contact_points as cp
from . import contact_register as reg
from . import eligibility as elig
from . import facts as facts_
from . import ledger as book
from . import notify, org, readouts
from . import positions as rank_positions
from .access import ADMIN, Viewer, load_viewer, require
from .calendar import WorkCalendar
from .db import Database, database_url, upgrade
from .errors import FieldErrors, NotFound
from .messages import msg
from .models import FlowVersion, Person, Unit
from .quotas import PoolFigures, PoolKey, Quota
from .spec import FlowSpec, TransitionSpec

if TYPE_CHECKING:
    from .engine import Engine

# What the service catches of the database (service/app.py maps them to 503 / 409), so
# that it need not import SQLAlchemy itself.
DatabaseError = DBAPIError
DatabaseBusy = OperationalError


def upgrade_schema(url: str | None = None) -> None:
    """Create the schema or upgrade it to the latest migration (civflow init-db)."""
    upgrade(url)


def shown_url(url: str | None = None) -> str:
    """The database URL as it may be printed: the password hidden."""
    from sqlalchemy.engine import make_url

    return make_url(database_url(url)).render_as_string(hide_password=True)


def open_engine(url: str | None = None, **kwargs: Any) -> Engine:
    """An `Engine` on the database at `url` ($CIVFLOW_DATABASE_URL, else civflow.db);
    `kwargs` go to `Engine` (clock, calendar)."""
    from .engine import Engine

    return Engine(Database(url), **kwargs)


class _Capability:
    """One capability: holds the engine (its database, clock and calendar)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @property
    def _db(self) -> Database:
        return self._engine.db

    def _now(self) -> dt.datetime:
        return self._engine.clock()

    def _spec(self, s: Session, flow: FlowSpec | str) -> FlowSpec:
        """The definition asked for: given, or the latest published version of the flow
        (NotFound when none is published), read in the caller's unit of work."""
        if isinstance(flow, FlowSpec):
            return flow
        eng = self._engine
        return eng.compiled(s, eng.flows.version_id(s, flow, None)).spec


# --------------------------------------------------------------------------- system


@dataclass(frozen=True)
class Health:
    dialect: str


class System(_Capability):
    """The database itself: health check, schema probe (worker), its URL."""

    def ping(self) -> Health:
        """One round trip to the database; raises the driver's error when it is down."""
        self._db.ping()
        return Health(self._db.dialect)

    def check_schema(self) -> None:
        """Fails (with the database's error) unless the schema is there: the timers table
        answers a query. The worker runs it before it starts."""
        with self._db.unit_of_work(write=False) as s:
            s.execute(text("SELECT id FROM timers WHERE 1 = 0"))

    def url(self) -> str:
        return shown_url(self._db.url)

    def dispose(self) -> None:
        self._db.dispose()


# --------------------------------------------------------------------------- accounts


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: dt.datetime
    user_id: int


@dataclass(frozen=True)
class SecurityEventOut:
    id: int
    at: dt.datetime
    kind: str
    username: str | None
    user_id: int | None
    address: str | None
    by: int | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class Account:
    id: int
    username: str
    person_id: int | None
    created: bool  # false: the account existed and got a new password


class Accounts(_Capability):
    """Accounts and authentication (账号与登录): tokens, sessions, lockouts, the security
    log, the cookie-signing secret. Token times use the wall clock, not the engine's."""

    def login(self, *, username: str, password: str, address: str | None,
              policy: acc.ThrottlePolicy, kind: str, ttl: dt.timedelta,
              now: dt.datetime) -> IssuedToken:
        """Check the password (throttled by name and address: `accounts.login`, several
        short transactions by design) and issue a token of `kind` (bearer or session)."""
        user = acc.login(self._db, username, password, address, policy, now)
        token, expires = acc.issue_token(self._db, user.id, kind, ttl, now)
        return IssuedToken(token, expires, user.id)

    def issue_token(self, *, username: str, kind: str, ttl: dt.timedelta,
                    now: dt.datetime) -> IssuedToken:
        """A token for an account without its password (the CLI's `civflow token`):
        NotFound for no such account, AuthFailed for a disabled one."""
        with self._db.unit_of_work() as s:
            user_id = acc.active_user_id(s, username)
            token, expires = acc.add_token(s, user_id, kind, ttl, now)
        return IssuedToken(token, expires, user_id)

    def sign_in(self, *, token: str, now: dt.datetime) -> acc.SignedIn:
        """Resolve a token and load its person's roles, in one read (AuthFailed says why
        not). An action's request signs in inside its own transaction instead
        (`Engine.fire_signed`)."""
        return self._db.run(lambda w: acc.sign_in(w.conn, token, now), write=False)

    def revoke(self, *, token_id: int, now: dt.datetime) -> None:
        acc.revoke_token(self._db, token_id, now)

    def lockouts(self, *, viewer: Viewer | None, now: dt.datetime) -> list[acc.Lockout]:
        """Failed-login counters and lockouts (登录锁定), locked first; admins only
        (`viewer` None: the CLI, on the host)."""
        if viewer is not None:
            require(viewer, ADMIN, "reading login lockouts")
        return acc.lockouts(self._db, now)

    def lift_lockout(self, *, viewer: Viewer | None, username: str | None = None,
                     address: str | None = None, now: dt.datetime) -> acc.Lockout | None:
        """Lift a lockout (解除锁定); admins only (`viewer` None: the CLI, on the host)."""
        if viewer is not None:
            require(viewer, ADMIN, "lifting a login lockout")
        return acc.lift_lockout(self._db, username=username, address=address,
                                by=(viewer.person_id or None) if viewer else None, now=now)

    def security_events(self, *, viewer: Viewer, page: int = 1, per_page: int = 50,
                        username: str | None = None, kind: str | None = None
                        ) -> tuple[list[SecurityEventOut], int]:
        """The security log (安全日志), newest first, with the total; admins only."""
        require(viewer, ADMIN, "reading the security log")
        rows, total = acc.security_events(self._db, page=page, per_page=per_page,
                                          username=username, kind=kind)
        return [SecurityEventOut(r.id, r.at, r.kind, r.username, r.user_id, r.address, r.by,
                                 r.detail) for r in rows], total

    def secret(self) -> str:
        """The session-signing secret kept in the database (made on first use)."""
        return acc.shared_secret(self._db)

    def create_user(self, *, username: str, password: str, person_code: str | None = None
                    ) -> Account:
        """Create an account, or set the password of an existing one (civflow create-user)."""
        user, created = acc.create_user(self._db, username, password, person_code)
        return Account(user.id, user.username, user.person_id, created)


# --------------------------------------------------------------------------- organisation


@dataclass(frozen=True)
class UnitOut:
    """A unit (单位): `path` is `/1/4/9/`, the ids from the root down to it."""

    id: int
    code: str
    name: str
    parent_id: int | None
    path: str


def unit_out(u: Unit) -> UnitOut:
    return UnitOut(u.id, u.code, u.name, u.parent_id, u.path)


class Organisation(_Capability):
    """The organisation (组织): units, people, role assignments, CSV import. Reading is
    for every signed-in person; changing for admins."""

    def units(self) -> list[UnitOut]:
        return [unit_out(u) for u in org.list_units(self._db)]

    def unit(self, *, unit_id: int) -> UnitOut:
        return unit_out(org.get_unit(self._db, unit_id))

    def create_unit(self, *, viewer: Viewer, code: str, name: str,
                    parent_id: int | None = None) -> UnitOut:
        require(viewer, ADMIN, "creating a unit")
        return unit_out(org.create_unit(self._db, code, name, parent_id))

    def people(self, *, filters: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        return org.people(self._db, filters)

    def person(self, *, person_id: int) -> dict[str, Any]:
        return org.get_person(self._db, person_id)

    def viewer(self, *, code: str) -> Viewer:
        """What the person with `code` may see and do (the CLI acts as someone by code)."""
        with self._db.unit_of_work(write=False) as s:
            pid = s.execute(select(Person.id).where(Person.code == code)).scalar()
            if pid is None:
                raise NotFound(msg("account.person_unknown", code=code))
            return load_viewer(s, pid)

    def person_id(self, *, code: str) -> int:
        """The id of the person with `code` (the CLI names people by code); NotFound."""
        with self._db.unit_of_work(write=False) as s:
            pid = s.execute(select(Person.id).where(Person.code == code)).scalar()
        if pid is None:
            raise NotFound(msg("account.person_unknown", code=code))
        return pid

    def create_person(self, *, viewer: Viewer, code: str, unit_id: int,
                      **values: Any) -> dict[str, Any]:
        require(viewer, ADMIN, "creating a person")
        return org.create_person(self._db, code, unit_id, **values)

    def update_person(self, *, viewer: Viewer, person_id: int, changes: dict[str, Any],
                      now: dt.datetime) -> dict[str, Any]:
        """Change a person; deactivating one releases their claims (the engine's)."""
        require(viewer, ADMIN, "changing a person")
        return org.update_person(self._db, person_id, changes, by=viewer.person_id or None,
                                 now=now, release_claims=self._engine.release_claims_of)

    def roles(self, **filters: Any) -> list[dict[str, Any]]:
        return org.roles(self._db, **filters)

    def add_role(self, *, viewer: Viewer, person_id: int, role: str,
                 unit_id: int | None = None) -> dict[str, Any]:
        require(viewer, ADMIN, "assigning a role")
        return org.add_role(self._db, person_id, role, unit_id)

    def remove_role(self, *, viewer: Viewer, assignment_id: int) -> None:
        require(viewer, ADMIN, "removing a role")
        org.remove_role(self._db, assignment_id)

    def import_people(self, *, viewer: Viewer | None, text: str,
                      progress: Callable[[int, int], Any] | None = None) -> org.ImportReport:
        """Import the organisation from CSV, all rows or none; admins (`viewer` None: the
        CLI, on the host)."""
        if viewer is not None:
            require(viewer, ADMIN, "importing the organisation")
        return org.import_people(self._db, text, progress)

    def person_names(self, *, ids: list[int | None]) -> dict[int, str]:
        """Person id → name, for the ids given."""
        return readouts.person_names(self._db, ids)


# --------------------------------------------------------------------------- facts


class Facts(_Capability):
    """Person facts (人员信息) the rules read: writing, the audit and imports are for
    admins; reading for those who may see the person (`facts.read`)."""

    def read(self, *, viewer: Viewer, person_id: int) -> facts_.PersonFacts:
        return facts_.read(self._db, viewer, person_id)

    def create(self, *, viewer: Viewer, kind: str, person_id: int,
               values: dict[str, Any]) -> dict[str, Any]:
        require(viewer, ADMIN, f"adding a {kind} fact")
        return facts_.create(self._db, kind, person_id, values, viewer.person_id)

    def change(self, *, viewer: Viewer, kind: str, fact_id: int,
               changes: dict[str, Any]) -> dict[str, Any]:
        require(viewer, ADMIN, f"changing a {kind} fact")
        return facts_.change(self._db, kind, fact_id, changes, viewer.person_id)

    def remove(self, *, viewer: Viewer, kind: str, fact_id: int) -> None:
        require(viewer, ADMIN, f"deleting a {kind} fact")
        facts_.remove(self._db, kind, fact_id, viewer.person_id)

    def audit(self, *, viewer: Viewer, person_id: int, page: int = 1, per_page: int = 50
              ) -> tuple[list[dict[str, Any]], int]:
        require(viewer, ADMIN, "reading the audit of facts")
        return facts_.audit_entries(self._db, person_id, page, per_page)

    def import_csv(self, *, viewer: Viewer, text: str) -> facts_.ImportReport:
        require(viewer, ADMIN, "importing facts")
        return facts_.import_facts(self._db, text, viewer.person_id)

    def import_xlsx(self, *, viewer: Viewer, base64_data: str) -> facts_.ImportReport:
        """Import the first sheet of an XLSX workbook, sent base64-encoded."""
        require(viewer, ADMIN, "importing facts")
        try:
            data = base64.b64decode(base64_data, validate=True)
        except ValueError:  # binascii.Error, or text that is not ASCII at all
            raise FieldErrors({"xlsx": [msg("frontdoor.xlsx_not_base64")]}) from None
        return facts_.import_facts_xlsx(self._db, data, viewer.person_id)


# --------------------------------------------------------------------------- ledger


@dataclass(frozen=True)
class Statistics:
    states: dict[str, Any]
    rates: dict[str, Any]
    grades: dict[str, Any] | None  # None: the flow has no quota


@dataclass(frozen=True)
class LedgerPage:
    rows: list[dict[str, Any]]
    total: int


class Ledger(_Capability):
    """The ledger (台账) and statistics of a flow, over the cases the viewer may see.

    `flow` is a flow id (its latest published version) or a definition already in hand;
    `scope` is the unit and periods (unit_id, period, period_from, period_to)."""

    def _read(self, fn: Callable[..., Any], viewer: Viewer, flow: FlowSpec | str,
              *args: Any, **kwargs: Any) -> Any:
        with self._db.unit_of_work(write=False) as s:
            return fn(s, viewer, self._spec(s, flow), *args, **kwargs)

    def spec(self, *, flow: str) -> FlowSpec:
        """The latest published version of a flow (NotFound when none is)."""
        with self._db.unit_of_work(write=False) as s:
            return self._spec(s, flow)

    def state_counts(self, *, viewer: Viewer, flow: FlowSpec | str, lang: str = "zh",
                     **scope: Any) -> dict[str, Any]:
        return self._read(book.state_counts, viewer, flow, **scope, lang=lang)

    def rates(self, *, viewer: Viewer, flow: FlowSpec | str, **scope: Any) -> dict[str, Any]:
        return self._read(book.rates, viewer, flow, **scope, now=self._now())

    def grade_distribution(self, *, viewer: Viewer, flow: FlowSpec | str, lang: str = "zh",
                           **scope: Any) -> dict[str, Any]:
        return self._read(book.grade_distribution, viewer, flow, **scope, lang=lang)

    def statistics(self, *, viewer: Viewer, flow: FlowSpec | str, lang: str = "zh",
                   **scope: Any) -> Statistics:
        """The statistics page's numbers in one read: states, rates, and the grades
        against the quota when the flow has one."""
        with self._db.unit_of_work(write=False) as s:
            spec = self._spec(s, flow)
            states = book.state_counts(s, viewer, spec, **scope, lang=lang)
            rates = book.rates(s, viewer, spec, **scope, now=self._now())
            grades = book.grade_distribution(s, viewer, spec, **scope, lang=lang) \
                if book.quota_of(spec) else None
        return Statistics(states, rates, grades)

    def good_counts(self, *, viewer: Viewer, flow: FlowSpec | str, year: int,
                    unit_id: int | None = None) -> dict[str, Any]:
        return self._read(book.good_counts, viewer, flow, year, unit_id=unit_id)

    def cases(self, *, viewer: Viewer, flow: FlowSpec | str, lang: str = "zh",
              page: int | None = None, per_page: int = 50, max_rows: int | None = None,
              **scope: Any) -> LedgerPage:
        """The ledger's rows: one page (`page`), or every row (`page` None) unless there
        are more than `max_rows` (FieldErrors on `period`: narrow the query)."""
        with self._db.unit_of_work(write=False) as s:
            spec = self._spec(s, flow)
            total = book.ledger_total(s, viewer, spec, **scope)
            if page is None and max_rows is not None and total > max_rows:
                raise FieldErrors({"period": [
                    msg("frontdoor.too_many_rows", total=total, max_rows=max_rows)]})
            paging = {} if page is None else {"limit": per_page,
                                              "offset": (page - 1) * per_page}
            rows = book.ledger_rows(s, viewer, spec, **scope, now=self._now(), lang=lang,
                                    **paging)
        return LedgerPage(rows, total)

    def eligibility(self, *, viewer: Viewer, flow: FlowSpec | str, on: dt.date,
                    unit_id: int | None = None) -> dict[str, Any]:
        """The eligibility list (任职资格名单) on a date."""
        return self._read(elig.eligibility_list, viewer, flow, on, unit_id=unit_id)

    def pool_usage(self, *, flow: str, quota: Quota, cases: list[Any]
                   ) -> tuple[dict[int, PoolKey], dict[PoolKey, PoolFigures]]:
        """Each case's quota pool and each pool's figures (`readouts.pool_usage`)."""
        return readouts.pool_usage(self._db, flow, quota, cases)


# --------------------------------------------------------------------------- contact points


class ContactPoints(_Capability):
    """The contact-point score sheets (考核联系点成绩单) and register (联系点台账).
    Writing is for admins and process owners; reading for them and for leaders and
    committee members of the unit or a unit above it."""

    def scoreboard(self, *, viewer: Viewer, year: int, flow: FlowSpec | str,
                   unit_id: int | None = None, weekly_field: str = cp.WEEKLY_FIELD
                   ) -> dict[str, Any]:
        cp.require_reader(viewer)
        eng = self._engine
        with self._db.unit_of_work(write=False) as s:
            spec = self._spec(s, flow)
            specs = {vid: c.spec for vid, c in eng.all_flows(s).items()}
            return cp.scoreboard(s, viewer, year, spec, unit_id=unit_id, specs=specs,
                                 weekly_field=weekly_field, tz=eng.calendar.tz)

    def set_sheet(self, *, viewer: Viewer, unit_code: str, year: int,
                  values: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        return cp.set_sheet(self._db, viewer, unit_code, year, values, self._now())

    def remove_sheet(self, *, viewer: Viewer, unit_code: str, year: int) -> None:
        cp.remove_sheet(self._db, viewer, unit_code, year)

    def import_sheets(self, *, viewer: Viewer, text: str) -> cp.ImportReport:
        return cp.import_csv(self._db, viewer, text, self._now())

    def register(self, *, viewer: Viewer, year: int, unit_id: int | None = None
                 ) -> list[dict[str, Any]]:
        """The year's contact points with the figures of their monthly reports."""
        with self._db.unit_of_work(write=False) as s:
            return reg.entries(s, viewer, year, unit_id)

    def entry(self, *, viewer: Viewer, entry_id: int) -> dict[str, Any]:
        with self._db.unit_of_work(write=False) as s:
            return reg.entry(s, viewer, entry_id)

    def add_entry(self, *, viewer: Viewer, values: Mapping[str, Any]) -> dict[str, Any]:
        return reg.create(self._db, viewer, values, self._now())

    def change_entry(self, *, viewer: Viewer, entry_id: int,
                     changes: Mapping[str, Any]) -> dict[str, Any]:
        return reg.change(self._db, viewer, entry_id, changes, self._now())

    def remove_entry(self, *, viewer: Viewer, entry_id: int) -> None:
        reg.remove(self._db, viewer, entry_id)


# --------------------------------------------------------------------------- positions


class Positions(_Capability):
    """Rank positions (职数) against the published rank-promotion flow's ladder."""

    def _promotion(self, s: Session) -> FlowSpec | None:
        try:
            return self._spec(s, rank_positions.FLOW)
        except NotFound:
            return None  # no promotion flow published: no ladder to check ranks against

    def read(self, *, viewer: Viewer, **filters: Any) -> list[dict[str, Any]]:
        with self._db.unit_of_work(write=False) as s:
            return rank_positions.list_positions(s, viewer, self._promotion(s), **filters)

    def put(self, *, viewer: Viewer, unit_code: str, rank: Any, round: Any, positions: Any,
            note: Any = None) -> tuple[dict[str, Any], bool]:
        rank_positions.require_writer(viewer, "setting rank positions (职数)")
        with rank_positions.writing(self._db) as s:
            return rank_positions.set_positions(
                s, self._promotion(s), rank_positions.unit_by_code(s, unit_code), rank,
                round, positions, note, by=viewer.person_id, now=self._now())

    def remove(self, *, viewer: Viewer, unit_code: str, rank: str, round: str) -> None:
        rank_positions.require_writer(viewer, "deleting rank positions (职数)")
        with self._db.unit_of_work() as s:
            rank_positions.delete_positions(s, self._promotion(s), unit_code, rank, round)

    def import_csv(self, *, viewer: Viewer, text: str) -> rank_positions.ImportReport:
        rank_positions.require_writer(viewer, "importing rank positions (职数)")
        with rank_positions.writing(self._db, rank_positions.import_clash()) as s:
            return rank_positions.import_rows(s, self._promotion(s), text,
                                              by=viewer.person_id, now=self._now())


# --------------------------------------------------------------------------- notifications


class Notifications(_Capability):
    """A person's notifications (站内通知), and the deliveries (admins)."""

    def inbox(self, *, viewer: Viewer, unread: bool | None = None, page: int = 1,
             per_page: int = 20) -> notify.Page:
        return notify.list_notifications(self._db, viewer.person_id, unread=unread,
                                         page=page, per_page=per_page)

    def mark_read(self, *, viewer: Viewer, notification_id: int) -> dict[str, Any]:
        return notify.mark_read(self._db, viewer.person_id, notification_id, self._now())

    def mark_all_read(self, *, viewer: Viewer) -> int:
        return notify.mark_all_read(self._db, viewer.person_id, self._now())

    def deliveries(self, *, viewer: Viewer, status: str | None = None,
                   channel: str | None = None, page: int = 1, per_page: int = 20
                   ) -> notify.Page:
        require(viewer, ADMIN, "listing notification deliveries")
        return notify.list_deliveries(self._db, status=status, channel=channel, page=page,
                                      per_page=per_page)

    def deliverer(self, *, config: notify.NotifyConfig, node: str) -> notify.Deliverer:
        """The e-mail and webhook deliverer of this process (the scheduler runs it)."""
        return notify.Deliverer(self._db, config, node=node, clock=self._engine.clock)


# --------------------------------------------------------------------------- reads


@dataclass(frozen=True)
class VersionAuthors:
    created_by: str | None
    published_by: str | None


class Reads(_Capability):
    """Small reads the pages and metrics need beside the engine's case reads."""

    def backlog(self, *, now: dt.datetime) -> backlog_.Backlog:
        """Due timers and deliveries not yet done (the metrics' backlog gauges)."""
        return backlog_.read_backlog(self._db, now)

    def delegates(self, *, case_row: Any, spec: FlowSpec, steps: list[TransitionSpec],
                  exclude: list[int]) -> list[tuple[int, str]]:
        """Who a case may be delegated to (转办), nearest first."""
        return readouts.delegates(self._db, case_row, spec, steps, exclude)

    def version_authors(self, *, version_id: int) -> VersionAuthors:
        """Who uploaded and who published a flow version, by name."""
        with self._db.unit_of_work(write=False) as s:
            found = s.execute(
                select(FlowVersion.created_by, FlowVersion.published_by)
                .where(FlowVersion.id == version_id)).first()
            if found is None:
                raise NotFound(msg("engine.flow_version_does_not", version_id=version_id))
            wanted = [i for i in found if i is not None]
            names = dict(s.execute(select(Person.id, Person.name)
                                   .where(Person.id.in_(wanted))).all()) if wanted else {}
        created, published = found
        return VersionAuthors(names.get(created) if created else None,
                              names.get(published) if published else None)


# --------------------------------------------------------------------------- demo


class Demo(_Capability):
    """The demo bureau (`workflows.demo`): organisation, accounts, facts and a year of
    history. Loading is many transactions (the history replays actions one by one)."""

    def load(self, *, with_history: bool = True, now: dt.datetime | None = None,
             calendar: WorkCalendar | None = None) -> Any:
        """Load what is missing (`demo.load`); the history on `calendar`, else the shipped
        one (`demo.history.default_calendar`)."""
        from . import demo

        return demo.load(self._db, with_history=with_history, now=now, calendar=calendar)

    def is_loaded(self) -> bool:
        from . import demo

        return demo.is_loaded(self._db)

    def has_units(self) -> bool:
        from . import demo

        return demo.has_units(self._db)

    def accounts(self) -> list[Any]:
        from . import demo

        return demo.accounts(self._db)


# --------------------------------------------------------------------------- the door


class FrontDoor:
    """Every capability outside the case kernel, on one engine (`Engine.door`)."""

    def __init__(self, engine: Engine) -> None:
        self.system = System(engine)
        self.accounts = Accounts(engine)
        self.org = Organisation(engine)
        self.facts = Facts(engine)
        self.ledger = Ledger(engine)
        self.contact_points = ContactPoints(engine)
        self.positions = Positions(engine)
        self.notifications = Notifications(engine)
        self.reads = Reads(engine)
        self.demo = Demo(engine)
