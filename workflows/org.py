"""The organisation: units (a tree), people, role assignments, user accounts; CSV import.

Who may act on a case is decided from these rows (see `kernel.Roles`). The import is all or
nothing: every row is checked first and the file is written in one transaction only when
no row is bad, so a personnel office never ends up with half a reorganisation.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .accounts import revoke_all
from .db import Database
from .errors import ActionNotAllowed, FieldErrors, ImportFailed, NotFound
from .facts import out_of_range
from .messages import msg
from .models import ORG_ROLES, TIERS, Person, RoleAssignment, SecurityEvent, Unit, User

# Columns of the people CSV (UTF-8, header row required; BOM tolerated for Excel files).
COLUMNS = ("unit_code", "unit_name", "parent_unit_code", "person_code", "name", "tier",
           "rank", "rank_since", "post", "roles", "username")
REQUIRED = ("unit_code",)
GROUP_PREFIX = "group:"


# --------------------------------------------------------------------------- single rows


def add_unit(s: Session, code: str, name: str, parent: Unit | None = None) -> Unit:
    unit = Unit(code=code, name=name, parent_id=parent.id if parent else None, path="/")
    s.add(unit)
    s.flush()
    unit.path = f"{parent.path if parent else '/'}{unit.id}/"
    return unit


def add_person(s: Session, code: str, name: str, unit: Unit, tier: str = "staff",
               rank: str | None = None, rank_since: dt.date | None = None,
               post: str | None = None) -> Person:
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {', '.join(TIERS)}")
    person = Person(code=code, name=name, unit_id=unit.id, tier=tier, rank=rank,
                    rank_since=rank_since, post=post)
    s.add(person)
    s.flush()
    return person


def assign_role(s: Session, person: Person, role: str, unit: Unit | None = None) -> bool:
    """Give `person` a role in `unit` (a named group when `unit` is None). True if new."""
    exists = s.execute(select(RoleAssignment.id).where(
        RoleAssignment.person_id == person.id, RoleAssignment.role == role,
        RoleAssignment.unit_id.is_(None) if unit is None
        else RoleAssignment.unit_id == unit.id)).first()
    if exists:
        return False
    s.add(RoleAssignment(person_id=person.id, unit_id=unit.id if unit else None, role=role))
    return True


# --------------------------------------------------------------------------- CSV import


@dataclass(frozen=True)
class ImportReport:
    rows: int
    units_created: int
    people_created: int
    people_updated: int
    roles_added: int
    users_created: int


@dataclass
class _Row:
    line: int
    unit_code: str
    unit_name: str
    parent_code: str
    person_code: str
    name: str
    tier: str
    rank: str | None
    rank_since: dt.date | None
    post: str | None
    roles: list[tuple[str, bool]]  # (role, is_group)
    username: str


def read_rows(text: str) -> tuple[list[_Row], list[tuple[int, str]]]:
    """Parse and check every row on its own; return (rows, errors as (line, message))."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    errors: list[tuple[int, str]] = []
    if not header:
        return [], [(1, "the file is empty; the first line must name the columns")]
    unknown = [h for h in header if h not in COLUMNS]
    missing = [c for c in REQUIRED if c not in header]
    if unknown:
        errors.append((1, msg("org.unknown_column_columns_are", unknown=list(unknown),
                              COLUMNS=list(COLUMNS))))
    if missing:
        errors.append((1, msg("org.missing_column", missing=list(missing))))
    if errors:
        return [], errors
    rows: list[_Row] = []
    for raw in reader:
        line = reader.line_num
        if None in raw:
            errors.append((line, msg("org.more_value_than_there", n_value=len(raw[None]))))
            continue
        v = {k.strip(): (val or "").strip() for k, val in raw.items() if k}
        if not any(v.values()):
            continue
        problems = []
        if not v.get("unit_code"):
            problems.append(msg("org.unit_code_empty"))
        person_code, name = v.get("person_code", ""), v.get("name", "")
        if person_code and not name:
            problems.append(msg("org.person_needs_name"))
        if name and not person_code:
            problems.append(msg("org.person_needs_person_code"))
        tier = v.get("tier") or "staff"
        if person_code and tier not in TIERS:
            problems.append(msg("org.tier_not_one", tier=tier, TIERS=list(TIERS)))
        since = None
        if v.get("rank_since"):
            try:
                since = dt.date.fromisoformat(v["rank_since"])
            except ValueError:
                problems.append(msg("org.rank_since_not_date", rank_since=v['rank_since']))
            else:
                if out_of_range(since):
                    problems.append(msg("org.rank_since", value=out_of_range(since)))
        roles: list[tuple[str, bool]] = []
        for part in filter(None, (p.strip() for p in v.get("roles", "").split(";"))):
            if part.startswith(GROUP_PREFIX) and len(part) > len(GROUP_PREFIX):
                roles.append((part[len(GROUP_PREFIX):], True))
            elif part in ORG_ROLES:
                roles.append((part, False))
            else:
                problems.append(msg("org.role_not_one_name", part=part, ORG_ROLES=list(ORG_ROLES),
                                    GROUP_PREFIX=GROUP_PREFIX))
        if (roles or v.get("username")) and not person_code:
            problems.append(msg("org.roles_username_need_person"))
        if problems:
            errors.extend((line, p) for p in problems)
            continue
        rows.append(_Row(line, v["unit_code"], v.get("unit_name", ""),
                         v.get("parent_unit_code", ""), person_code, name, tier,
                         v.get("rank") or None, since, v.get("post") or None, roles,
                         v.get("username", "")))
    return rows, errors


def _cross_check(s: Session, rows: list[_Row]) -> list[tuple[int, str]]:
    """Checks across rows and against the database: units, parents, duplicates."""
    errors: list[tuple[int, str]] = []
    existing_units = {code for (code,) in s.execute(select(Unit.code))}
    defined: dict[str, tuple[int, str, str]] = {}
    for r in rows:
        first = defined.get(r.unit_code)
        if first is None:
            if r.unit_code not in existing_units and not r.unit_name:
                errors.append((r.line, msg("org.unit_new_needs_unit", r_unit_code=r.unit_code)))
            if r.parent_code and r.parent_code not in existing_units \
                    and r.parent_code not in defined:
                errors.append((r.line, msg("org.parent_unit_not_defined",
                                           r_parent_code=r.parent_code)))
            if r.parent_code == r.unit_code:
                errors.append((r.line, msg("org.unit_cannot_own_parent")))
            defined[r.unit_code] = (r.line, r.unit_name, r.parent_code)
        else:
            line, name, parent = first
            if r.unit_name and name and r.unit_name != name:
                errors.append((r.line, msg("org.unit_named_on_line", r_unit_code=r.unit_code,
                                           name=name, line=line)))
            if r.parent_code and parent and r.parent_code != parent:
                errors.append((r.line, msg("org.unit_has_parent_on", r_unit_code=r.unit_code,
                                           parent=parent, line=line)))
    seen_people: dict[str, int] = {}
    seen_users: dict[str, int] = {}
    for r in rows:
        if r.person_code:
            if r.person_code in seen_people:
                errors.append((r.line, msg("org.person_already_on_line",
                                           r_person_code=r.person_code,
                                           value=seen_people[r.person_code])))
            seen_people.setdefault(r.person_code, r.line)
        if r.username:
            if r.username in seen_users:
                errors.append((r.line, msg("org.username_already_on_line", r_username=r.username,
                                           value=seen_users[r.username])))
            seen_users.setdefault(r.username, r.line)
    if seen_users:
        taken = {u: c for u, c in s.execute(
            select(User.username, Person.code).outerjoin(Person, Person.id == User.person_id)
            .where(User.username.in_(list(seen_users))))}
        has_user = {c: u for c, u in s.execute(
            select(Person.code, User.username).join(User, User.person_id == Person.id)
            .where(Person.code.in_(list(seen_people))))}
        for username, line in seen_users.items():
            code = next(r.person_code for r in rows if r.line == line)
            if username in taken and taken[username] != code:
                errors.append((line, msg("org.username_belongs_another_person", username=username)))
            elif code in has_user and has_user[code] != username:
                errors.append((line, msg("org.person_already_has_username", code=code,
                                         value=has_user[code])))
    return sorted(errors)


def import_people(db: Database, text: str,
                  progress: Callable[[int, int], Any] | None = None) -> ImportReport:
    """Import units, people, roles and accounts from CSV text; all rows or none.

    Raises `ImportFailed` listing every bad row by line number; nothing is written then.
    Existing units and people (by code) are updated, not duplicated.
    """
    rows, errors = read_rows(text)
    with db.unit_of_work() as s:
        errors = sorted(errors + _cross_check(s, rows))
        if errors:
            raise ImportFailed(errors)
        return _write(s, rows, progress)


def _write(s: Session, rows: list[_Row], progress) -> ImportReport:
    units = {u.code: u for u in s.execute(select(Unit)).scalars()}
    codes = [r.person_code for r in rows if r.person_code]
    people = {p.code: p for p in s.execute(select(Person).where(Person.code.in_(codes)))
              .scalars()}
    ids = [p.id for p in people.values()]
    held = set(tuple(r) for r in s.execute(select(RoleAssignment.person_id, RoleAssignment.unit_id,
                                RoleAssignment.role)
                         .where(RoleAssignment.person_id.in_(ids))))
    usernames = {u for (u,) in s.execute(select(User.username).where(
        User.username.in_([r.username for r in rows if r.username])))}
    counts = dict(units=0, created=0, updated=0, roles=0, users=0)
    total = len(rows)
    for i, r in enumerate(rows, 1):
        unit = units.get(r.unit_code)
        if unit is None:
            unit = add_unit(s, r.unit_code, r.unit_name, units.get(r.parent_code))
            units[r.unit_code] = unit
            counts["units"] += 1
        elif r.unit_name and unit.name != r.unit_name:
            unit.name = r.unit_name
        if not r.person_code:
            continue
        person = people.get(r.person_code)
        if person is None:
            person = add_person(s, r.person_code, r.name, unit, r.tier, r.rank,
                                r.rank_since, r.post)
            people[r.person_code] = person
            counts["created"] += 1
        else:
            person.name, person.unit_id, person.tier = r.name, unit.id, r.tier
            person.rank = r.rank or person.rank
            person.rank_since = r.rank_since or person.rank_since
            person.post = r.post or person.post
            counts["updated"] += 1
        for role, is_group in r.roles:
            key = (person.id, None if is_group else unit.id, role)
            if key not in held:
                held.add(key)
                s.add(RoleAssignment(person_id=key[0], unit_id=key[1], role=role))
                counts["roles"] += 1
        if r.username and r.username not in usernames:
            usernames.add(r.username)
            s.add(User(username=r.username, person_id=person.id))
            counts["users"] += 1
        if progress and (i % 500 == 0 or i == total):
            progress(i, total)
    s.flush()
    return ImportReport(total, counts["units"], counts["created"], counts["updated"],
                        counts["roles"], counts["users"])


# --------------------------------------------------------------------------- reads
# What the API's organisation endpoints read and change, one unit of work each.


def list_units(db: Database) -> list[Unit]:
    with db.unit_of_work(write=False) as s:
        return list(s.execute(select(Unit).order_by(Unit.id)).scalars())


def get_unit(db: Database, unit_id: int) -> Unit:
    with db.unit_of_work(write=False) as s:
        return get_or_404(s, Unit, unit_id)


def get_person(db: Database, person_id: int) -> dict[str, Any]:
    with db.unit_of_work(write=False) as s:
        return person_out(s, get_or_404(s, Person, person_id))


def people(db: Database, args: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    with db.unit_of_work(write=False) as s:
        return list_people(s, args)


def roles(db: Database, **filters: Any) -> list[dict[str, Any]]:
    with db.unit_of_work(write=False) as s:
        return list_roles(s, **filters)


def get_or_404(s: Session, model: type, key: int):
    row = s.get(model, key)
    if row is None:
        what = msg({Unit: "org.unit", Person: "org.person"}.get(model, "org.role_assignment"))
        raise NotFound(msg("org.does_not_exist", what=what, key_=key))
    return row


PERSON_KEYS = ("id", "code", "name", "unit_id", "tier", "rank", "rank_since", "post", "active")


def person_out(s: Session, p: Person, unit_name: str | None = None) -> dict[str, Any]:
    if unit_name is None:
        unit_name = s.execute(select(Unit.name).where(Unit.id == p.unit_id)).scalar_one()
    return {**{k: getattr(p, k) for k in PERSON_KEYS}, "unit_name": unit_name}


def list_people(s: Session, args: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    conds = []
    if args.get("unit_id") is not None:
        path = get_or_404(s, Unit, args["unit_id"]).path
        conds.append(Unit.path.startswith(path, autoescape=True))
    if args.get("q"):
        conds.append(Person.name.icontains(args["q"], autoescape=True)
                     | Person.code.icontains(args["q"], autoescape=True))
    if args.get("active") is not None:
        conds.append(Person.active == args["active"])
    base = select(Person, Unit.name).join(Unit, Unit.id == Person.unit_id).where(*conds)
    total = s.execute(select(func.count()).select_from(base.subquery())).scalar_one()
    rows = s.execute(base.order_by(Person.code, Person.id)
                     .limit(args["per_page"]).offset((args["page"] - 1) * args["per_page"]))
    return [person_out(s, p, unit_name) for p, unit_name in rows], total


def list_roles(s: Session, person_id: int | None = None, unit_id: int | None = None,
               role: str | None = None) -> list[dict[str, Any]]:
    q = (select(RoleAssignment, Person.name, Unit.name)
         .join(Person, Person.id == RoleAssignment.person_id)
         .outerjoin(Unit, Unit.id == RoleAssignment.unit_id)
         .order_by(RoleAssignment.id))
    if person_id is not None:
        q = q.where(RoleAssignment.person_id == person_id)
    if unit_id is not None:
        q = q.where(RoleAssignment.unit_id == unit_id)
    if role is not None:
        q = q.where(RoleAssignment.role == role)
    return [role_out(r, person_name, unit_name) for r, person_name, unit_name in s.execute(q)]


def role_out(r: RoleAssignment, person_name: str, unit_name: str | None) -> dict[str, Any]:
    return {"id": r.id, "person_id": r.person_id, "person_name": person_name, "role": r.role,
            "unit_id": r.unit_id, "unit_name": unit_name}


# --------------------------------------------------------------------------- writes


@contextmanager
def writing(db: Database, duplicate: FieldErrors) -> Iterator[Session]:
    """A unit of work whose unique-constraint failure (a parallel request took the code
    after our check) is reported as `duplicate`, never as a 500."""
    try:
        with db.unit_of_work() as s:
            yield s
    except IntegrityError:
        raise duplicate from None


def taken(field: str, message: str) -> FieldErrors:
    return FieldErrors({field: [message]})


def create_unit(db: Database, code: str, name: str, parent_id: int | None) -> Unit:
    duplicate = taken("code", msg("org.unit_code_taken", code=code))
    with writing(db, duplicate) as s:
        parent = get_or_404(s, Unit, parent_id) if parent_id is not None else None
        if s.execute(select(Unit.id).where(Unit.code == code)).first():
            raise duplicate
        return add_unit(s, code, name, parent)


def create_person(db: Database, code: str, unit_id: int, **values: Any) -> dict[str, Any]:
    duplicate = taken("code", msg("org.person_code_taken", code=code))
    with writing(db, duplicate) as s:
        unit = get_or_404(s, Unit, unit_id)
        if s.execute(select(Person.id).where(Person.code == code)).first():
            raise duplicate
        return person_out(s, add_person(s, code, unit=unit, **values))


def update_person(db: Database, person_id: int, changes: dict[str, Any],
                  by: int | None = None, now: dt.datetime | None = None,
                  release_claims: Callable[[Session, int, int | None], int] | None = None
                  ) -> dict[str, Any]:
    """Change a person; `by` is the admin doing it (recorded with a deactivation).

    Deactivating (`active: false`, 停用) takes effect at once: every token and browser
    session of their account is revoked in the same transaction, logging in is refused,
    and their role assignments stop counting everywhere (`access.HELD_ROLES`). Reactivating
    restores the roles; the revoked tokens stay revoked — the person logs in again.
    `release_claims` (the engine's `release_claims_of`) gives back the steps they had
    claimed, in the same transaction, so that no case waits for someone who is gone."""
    now = now or dt.datetime.now(dt.UTC)
    with db.unit_of_work() as s:
        person = get_or_404(s, Person, person_id)
        if "unit_id" in changes:
            get_or_404(s, Unit, changes["unit_id"])
        switched = "active" in changes and changes["active"] != person.active
        if switched and not changes["active"]:
            _keep_an_admin(s, person_id)
        for key, value in changes.items():
            setattr(person, key, value)
        if switched:
            revoked = revoke_all(s, person_id, now) if not person.active else 0
            released = release_claims(s, person_id, by) \
                if release_claims and not person.active else 0
            user = s.execute(select(User.id, User.username)
                             .where(User.person_id == person_id)).first()
            s.add(SecurityEvent(at=now, kind="reactivated" if person.active else "deactivated",
                                username=user.username if user else None,
                                user_id=user.id if user else None, by=by,
                                detail={"person_id": person_id, "person_code": person.code,
                                        "tokens_revoked": revoked,
                                        "claims_released": released}))
        s.flush()
        return person_out(s, person)


def _keep_an_admin(s: Session, person_id: int, assignment_id: int | None = None) -> None:
    """Refuse to leave no active admin (系统管理员): nobody could manage the organisation.

    Every admin assignment and its holder is locked before counting: two admins removing
    (or deactivating) each other at the same moment would otherwise both see two and leave
    none. Locking the people rows too makes the second one wait for, and then read, the
    first one's `active`."""
    admins = s.execute(select(RoleAssignment.id, RoleAssignment.person_id, Person.active)
                       .join(Person, Person.id == RoleAssignment.person_id)
                       .where(RoleAssignment.role == "admin")
                       .order_by(RoleAssignment.id).with_for_update()).all()
    mine = [a for a in admins if a.person_id == person_id and a.active]
    if not mine or (assignment_id is not None and assignment_id not in {a.id for a in mine}):
        return  # not an admin that counts now
    others = {a.person_id for a in admins if a.active and a.person_id != person_id}
    if assignment_id is not None and len(mine) > 1:
        return  # they stay admin through another assignment
    if not others:
        raise ActionNotAllowed(msg("org.last_admin_only_active"))


def add_role(db: Database, person_id: int, role: str, unit_id: int | None) -> dict[str, Any]:
    where = (msg("org.in_unit", unit_id=unit_id) if unit_id is not None
             else msg("org.as_group"))
    duplicate = taken("role", msg("org.role_held", person_id=person_id, role=role, where=where))
    with writing(db, duplicate) as s:
        person = get_or_404(s, Person, person_id)
        unit = get_or_404(s, Unit, unit_id) if unit_id is not None else None
        if not assign_role(s, person, role, unit):
            raise duplicate
        s.flush()
        row = s.execute(select(RoleAssignment).where(
            RoleAssignment.person_id == person_id, RoleAssignment.role == role,
            RoleAssignment.unit_id.is_(None) if unit is None
            else RoleAssignment.unit_id == unit.id)).scalar_one()
        return role_out(row, person.name, unit.name if unit else None)


def remove_role(db: Database, assignment_id: int) -> None:
    with db.unit_of_work() as s:
        row = get_or_404(s, RoleAssignment, assignment_id)
        if row.role == "admin":
            _keep_an_admin(s, row.person_id, assignment_id)
        s.delete(row)
