"""The demo organisation: a municipal bureau with three divisions and 30 accounts.

`people.csv` next to this file is the data, in the ordinary import format (`civflow
import-people`): 示范市人力资源和社会保障局 with 公务员管理处, 考核奖惩处 and 工资福利处, each
with a chief (处长, `leaderN`), deputies and staff. Every account gets the password
`civflow-demo`. `facts.csv` holds the facts the rules read, and `history.py` replays a year
of cases through the engine (regular assessment month by month, a dispatch under way, a
promotion candidate in public notice) so that every flow can be tried at once.

Loading is idempotent: an organisation that is already there is left alone, only accounts
that still have no password get one, facts are loaded when none is there, and the history is
replayed only when no demo person has a case yet.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from workflows.accounts import hash_password
from workflows.calendar import WorkCalendar
from workflows.db import Database
from workflows.errors import ImportFailed
from workflows.facts import import_facts
from workflows.models import AnnualResult, Person, RoleAssignment, Unit, User
from workflows.org import import_people, read_rows

from . import history

PEOPLE_CSV = Path(__file__).with_name("people.csv")
# Last years' annual results, exams, training, a sanction and a commendation, so that the
# annual assessment and promotion rules have something to read at once.
FACTS_CSV = Path(__file__).with_name("facts.csv")
PASSWORD = "civflow-demo"
BUREAU = "RSJ"  # the top unit's code: its presence means the demo organisation is loaded
TIER_LABELS = {"chief": "正职", "deputy": "副职", "staff": "一般干部"}


@dataclass(frozen=True)
class DemoResult:
    people_created: int = 0
    units_created: int = 0
    accounts_created: int = 0
    passwords_set: int = 0
    facts_added: int = 0
    history_cases: int = 0  # cases replayed by `history.seed`
    history_records: int = 0  # their history records

    @property
    def changed(self) -> bool:
        return any((self.people_created, self.units_created, self.accounts_created,
                    self.passwords_set, self.facts_added, self.history_cases))


@dataclass(frozen=True)
class Account:
    username: str
    name: str
    unit: str
    roles: str
    tier: str


def usernames() -> list[str]:
    rows, errors = read_rows(PEOPLE_CSV.read_text(encoding="utf-8"))
    if errors:
        raise ImportFailed(errors)
    return [r.username for r in rows if r.username]


def is_loaded(db: Database) -> bool:
    with db.unit_of_work(write=False) as s:
        return s.execute(select(Unit.id).where(Unit.code == BUREAU)).first() is not None


def has_units(db: Database) -> bool:
    with db.unit_of_work(write=False) as s:
        return s.execute(select(Unit.id).limit(1)).first() is not None


def load(db: Database, *, with_history: bool = True, now: dt.datetime | None = None,
         calendar: WorkCalendar | None = None) -> DemoResult:
    """Import the demo organisation unless it is there, give every demo account that has no
    password the demo password, load the facts, and replay the year of history up to `now`
    (the wall clock by default) unless `with_history` is false. The flows must be published
    first; those that are not are left out of the history. Raises `ImportFailed` when the
    file clashes with the database (for example a username already taken by another
    person)."""
    result = DemoResult()
    if not is_loaded(db):
        report = import_people(db, PEOPLE_CSV.read_text(encoding="utf-8"))
        result = DemoResult(report.people_created, report.units_created, report.users_created)
    names = usernames()
    with db.unit_of_work() as s:
        missing = s.execute(select(User).where(User.username.in_(names),
                                               User.password_hash.is_(None))).scalars().all()
        if missing:
            hashed = hash_password(PASSWORD)  # Argon2 is slow on purpose: hash once
            for user in missing:
                user.password_hash = hashed
    facts_added = _load_facts(db)
    replayed = history.HistoryResult()
    if with_history:
        replayed = history.seed(db, person_codes(), now=now, calendar=calendar)
    return DemoResult(result.people_created, result.units_created, result.accounts_created,
                      len(missing), facts_added, replayed.cases, replayed.records)


def person_codes() -> list[str]:
    rows, errors = read_rows(PEOPLE_CSV.read_text(encoding="utf-8"))
    if errors:
        raise ImportFailed(errors)
    return [r.person_code for r in rows if r.person_code]


def _load_facts(db: Database) -> int:
    """The demo people's facts, once: nothing when any of them already has a result."""
    codes = person_codes()
    with db.unit_of_work(write=False) as s:
        known = s.execute(select(AnnualResult.id)
                          .join(Person, Person.id == AnnualResult.person_id)
                          .where(Person.code.in_(codes)).limit(1)).first()
    if known:
        return 0
    return import_facts(db, FACTS_CSV.read_text(encoding="utf-8"), by=None).rows


def accounts(db: Database) -> list[Account]:
    """The demo accounts as they are in the database, in the file's order."""
    names = usernames()
    with db.unit_of_work(write=False) as s:
        rows = s.execute(
            select(User.username, Person.id, Person.name, Person.tier, Unit.name)
            .join(Person, Person.id == User.person_id).join(Unit, Unit.id == Person.unit_id)
            .where(User.username.in_(names))).all()
        roles: dict[int, list[str]] = {}
        for pid, role in s.execute(select(RoleAssignment.person_id, RoleAssignment.role)
                                   .where(RoleAssignment.person_id.in_([r[1] for r in rows]))
                                   .order_by(RoleAssignment.role)):
            roles.setdefault(pid, []).append(role)
    by_name = {r[0]: r for r in rows}
    return [Account(u, by_name[u][2], by_name[u][4], ", ".join(roles.get(by_name[u][1], []))
                    or "staff", TIER_LABELS.get(by_name[u][3], by_name[u][3]))
            for u in names if u in by_name]


def table(accounts_: list[Account]) -> str:
    """A plain text table; CJK characters count as two columns so the columns line up."""
    head = ("USERNAME", "NAME", "UNIT", "ROLE", "TIER")
    rows = [head] + [(a.username, a.name, a.unit, a.roles, a.tier) for a in accounts_]
    widths = [max(_width(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c + " " * (w - _width(c)) for c, w in zip(r, widths, strict=True))
                     .rstrip() for r in rows)


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
