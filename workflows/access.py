"""Who sees what: the viewer's roles from the organisation, and the rules built on them.

Acting is decided per transition by the engine (`kernel.Roles`). Seeing is decided here:
staff see their own cases; leaders and committee members see the cases of their unit and
its sub-units; process owners and admins see every case. The same rule exists twice, once
as a SQL condition for lists and once as a check for a single case, and the tests hold the
two together.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, false, or_, select, true
from sqlalchemy.orm import Session

from .errors import Forbidden
from .messages import msg
from .models import Case, Person, RoleAssignment, Unit

ADMIN, OWNER, LEADER, COMMITTEE = "admin", "process_owner", "leader", "committee"
CASES = Case.__table__
ROLES, PEOPLE = RoleAssignment.__table__, Person.__table__
# The one rule for whose role assignments count: those of active people (在职). Every role
# lookup (the viewer, the kernel's `Roles`, the queue through the viewer, notifications)
# selects from here, so deactivating a person drops all their roles at once and
# reactivating restores them — the assignment rows themselves are kept.
HELD_ROLES = ROLES.join(PEOPLE, and_(PEOPLE.c.id == ROLES.c.person_id,
                                     PEOPLE.c.active.is_(True)))


@dataclass(frozen=True)
class Viewer:
    """A signed-in person and every role assignment they hold: (role, unit_id, unit_path)."""

    person_id: int
    assignments: tuple[tuple[str, int | None, str | None], ...] = ()

    def holds(self, role: str) -> bool:
        return any(r == role for r, _u, _p in self.assignments)

    @property
    def is_admin(self) -> bool:
        return self.holds(ADMIN)

    @property
    def is_owner(self) -> bool:
        return self.holds(OWNER)

    @property
    def sees_all(self) -> bool:
        return self.is_admin or self.is_owner

    def paths(self, *roles: str) -> list[str]:
        return [p for r, _u, p in self.assignments if r in roles and p]

    def role_units(self) -> list[tuple[str, int | None]]:
        """The (role, unit_id) pairs `kernel.Roles` works with."""
        return [(r, u) for r, u, _p in self.assignments]


def load_viewer(s: Session, person_id: int) -> Viewer:
    rows = s.execute(
        select(ROLES.c.role, ROLES.c.unit_id, Unit.path).select_from(HELD_ROLES)
        .outerjoin(Unit, Unit.id == ROLES.c.unit_id)
        .where(ROLES.c.person_id == person_id)
        .order_by(ROLES.c.role, ROLES.c.unit_id)
    ).all()
    return Viewer(person_id, tuple((r, u, p) for r, u, p in rows))


def require(viewer: Viewer, role: str, doing: str) -> None:
    """Refuse unless the viewer holds `role` somewhere (process_owner, admin)."""
    if not viewer.holds(role):
        label = {ADMIN: msg("role.admin"), OWNER: msg("role.process_owner")}.get(role, role)
        raise Forbidden(msg("access.needs_role", doing=doing, label=label), rule=f"needs_{role}")


def visible_cases(viewer: Viewer, in_units: ColumnElement[bool] | None = None
                  ) -> ColumnElement[bool]:
    """SQL condition on `cases` joined with `units` for the cases the viewer may see.

    `in_units`, when given, is the condition "in the subtree of a unit where the viewer is
    leader or committee" on `cases.unit_id` alone (`queries.Subtrees`): then every branch
    of the OR has an index (subject, claimer, unit), which a LIKE on the joined unit path
    does not — with a million cases that branch made it a sequential scan."""
    if viewer.sees_all:
        return true()
    conds = [CASES.c.subject_id == viewer.person_id, CASES.c.claimed_by == viewer.person_id]
    if in_units is not None:
        conds.append(in_units)
    else:
        conds += [Unit.path.like(f"{p}%") for p in viewer.paths(LEADER, COMMITTEE)]
    return or_(*conds) if conds else false()


def can_see(viewer: Viewer, subject_id: int, claimed_by: int | None, unit_path: str) -> bool:
    """`visible_cases` for one case."""
    return (viewer.sees_all or subject_id == viewer.person_id
            or claimed_by == viewer.person_id
            or any(unit_path.startswith(p) for p in viewer.paths(LEADER, COMMITTEE)))


def check_can_start(viewer: Viewer, subject_id: int, home_path: str | None) -> None:
    """A case may be started by its subject, a leader above them, an owner or an admin.
    `home_path` is the path of the subject's own unit (read with the opening)."""
    if viewer.sees_all or subject_id == viewer.person_id:
        return
    if home_path is not None and any(home_path.startswith(p) for p in viewer.paths(LEADER)):
        return
    raise Forbidden(msg("access.starting_person_that_person", subject_id=subject_id), rule="start")
