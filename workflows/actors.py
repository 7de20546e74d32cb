"""Who acts on a case (办理人): one resolution of a flow's roles to people, used by the
engine (may this person act? can anybody act at the next step?), by the queue (which cases
does this person evaluate?) and by the stuck-case listing (which open cases can nobody act
on?). See docs/definitions.md, "Roles and who acts".

The organisation it reads: units form a tree (materialised path), people have a home unit
and a tier (正职 chief / 副职 deputy / 一般干部 staff), role assignments are (person, role,
unit); only active people count.

`resolve: evaluator` — who evaluates whom (评鉴人), from the case's unit U and the subject's
tier (both recorded on the case when it starts):

1. 本单位: holders of `leader` on U whose home unit is U and whose tier is above the
   subject's in the role's tier order — 一般干部 by their 处室负责人, 副职 by the 正职, and at
   the bureau, 领导班子成员 by the 主要负责人 (the bureau's chief holding `leader` there);
2. 分管领导: if there is none, holders of `leader` on U whose home unit is above U — a deputy
   bureau head given `leader` on the division he is in charge of (so 处室正职 by the 分管领导);
3. the role's fallback, if there is still none: `escalate: unit_above` — the holders of
   `leader` on the nearest unit above U that has one; `group: NAME` — the group's members.

Nobody is their own evaluator, and nobody grades someone of their own or a higher tier in
their own unit. The resolution depends only on (unit, tier) and the subject, which is what
lets the queue and the stuck listing express it as `(cases.unit_id, cases.tier) IN (...)`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    String,
    and_,
    any_,
    bindparam,
    cast,
    false,
    literal,
    null,
    or_,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from .errors import NoActor
from .messages import msg
from .models import Case, Person, RoleAssignment, Unit, unit_path_ids
from .spec import SYSTEM, FlowSpec, RoleSpec

log = logging.getLogger("civflow.actors")

CASES = Case.__table__
ROLES = RoleAssignment.__table__
PEOPLE = Person.__table__
UNITS = Unit.__table__
LEADER = "leader"
FREE = ("subject", SYSTEM)  # resolutions that always have an actor: the person, the scheduler


def _in(column: Any, name: str, pg: bool, type_: Any = String) -> ColumnElement[bool]:
    """`column IN (:name…)`: `= ANY(:name)` with one array parameter on PostgreSQL (no
    statement rewriting per call), an expanding IN on SQLite."""
    if pg:
        return column == any_(bindparam(name, type_=ARRAY(type_)))
    return column.in_(bindparam(name, expanding=True))


def _dialect(s: Any) -> str:
    return s.dialect.name if hasattr(s, "dialect") else s.get_bind().dialect.name


# The organisation's and the dispatch hosts' statements are built once per shape: building
# them per action cost more than running them (the engine asks for them on most actions).
_STATEMENTS: dict[tuple, Any] = {}


def _holders_statement(pg: bool, by_unit: bool, by_group: bool) -> Any:
    key = ("holders", pg, by_unit, by_group)
    if key not in _STATEMENTS:
        conds = []
        if by_unit:
            conds.append(and_(_in(ROLES.c.role, "roles", pg),
                              _in(ROLES.c.unit_id, "units", pg, Integer)))
        if by_group:
            conds.append(and_(_in(ROLES.c.role, "groups", pg), ROLES.c.unit_id.is_(None)))
        _STATEMENTS[key] = (select(ROLES.c.person_id, ROLES.c.role, ROLES.c.unit_id,
                                   PEOPLE.c.unit_id, PEOPLE.c.tier)
                            .join(PEOPLE, PEOPLE.c.id == ROLES.c.person_id)
                            .where(PEOPLE.c.active.is_(True), or_(*conds)))
    return _STATEMENTS[key]


def _combined_statement(pg: bool, by_unit: bool, by_group: bool,
                        host_fields: tuple[str, ...]) -> Any:
    """The holders (tag `h`) and, per hosted role i, the subjects' hosts (tag `d<i>`, in
    case order), as one UNION ALL."""
    key = ("combined", pg, by_unit, by_group, host_fields)
    if key not in _STATEMENTS:
        h = _holders_statement(pg, by_unit, by_group)
        parts = [h.with_only_columns(literal("h", String).label("tag"), *h.selected_columns,
                                     literal(0, Integer).label("ord"))]
        for i, field_name in enumerate(host_fields):
            host = CASES.c.data[field_name].as_integer()
            parts.append(
                select(literal(f"d{i}", String), CASES.c.subject_id,
                       cast(null(), String), host, cast(null(), Integer),
                       cast(null(), String), CASES.c.id)
                .join(PEOPLE, PEOPLE.c.id == host)
                .where(CASES.c.flow_id == bindparam(f"flow{i}"),
                       _in(CASES.c.state, f"states{i}", pg),
                       PEOPLE.c.active.is_(True), PEOPLE.c.id != CASES.c.subject_id,
                       _in(CASES.c.subject_id, "subjects", pg, Integer)))
        union = union_all(*parts).subquery()
        _STATEMENTS[key] = select(union).order_by(union.c.tag, union.c.ord)
    return _STATEMENTS[key]


def _hosts_statement(pg: bool, host_field: str, by_subject: bool) -> Any:
    key = ("hosts", pg, host_field, by_subject)
    if key not in _STATEMENTS:
        host = CASES.c.data[host_field].as_integer()
        q = (select(CASES.c.subject_id, host).join(PEOPLE, PEOPLE.c.id == host)
             .where(CASES.c.flow_id == bindparam("flow"), _in(CASES.c.state, "states", pg),
                    PEOPLE.c.active.is_(True), PEOPLE.c.id != CASES.c.subject_id))
        if by_subject:
            q = q.where(_in(CASES.c.subject_id, "subjects", pg, Integer))
        _STATEMENTS[key] = q.order_by(CASES.c.id)
    return _STATEMENTS[key]


HostSource = tuple[str, tuple[str, ...], str]  # a hosted role's dispatch flow, states, field


def _source(role: RoleSpec) -> HostSource | None:
    if not role.dispatch_flow or not role.dispatch_host:
        return None
    return role.dispatch_flow, tuple(role.dispatch_states), role.dispatch_host


@dataclass(frozen=True)
class OrgNeeds:
    """What an `Org` must hold to resolve some roles on one case: the unit roles (on the
    case unit and its ancestors), the groups, and where the subject's dispatch host comes
    from for hosted evaluator roles. The kernel reads this much of the organisation along
    with the case (`Kernel.load_for_action`), so the role check and the next-actor check
    of an action cost no read of their own."""

    roles: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    hosted: frozenset[HostSource] = frozenset()

    @classmethod
    def of(cls, specs: Iterable[RoleSpec]) -> OrgNeeds:
        specs = list(specs)
        unit_roles, groups = role_needs(specs)
        return cls(frozenset(unit_roles), frozenset(groups),
                   frozenset(src for r in specs if (src := _source(r)) is not None))

    def __or__(self, other: OrgNeeds) -> OrgNeeds:
        return OrgNeeds(self.roles | other.roles, self.groups | other.groups,
                        self.hosted | other.hosted)

    def __le__(self, other: OrgNeeds) -> bool:
        return (self.roles <= other.roles and self.groups <= other.groups
                and self.hosted <= other.hosted)

    def __bool__(self) -> bool:
        return bool(self.roles or self.groups or self.hosted)


def action_needs(spec: FlowSpec, trigger: str) -> OrgNeeds:
    """The organisation an action by `trigger` asks about, from whichever state: the roles
    it may be done by (the role check) and those who act at the state it leads to (the
    next-actor check)."""
    needs = OrgNeeds()
    for t in spec.transitions:
        if t.trigger == trigger:
            names = [n for n in t.by if n != SYSTEM] + list(step_roles(spec, t.dest) or {})
            needs = needs | OrgNeeds.of(spec.roles[n] for n in names)
    return needs


def start_needs(spec: FlowSpec) -> OrgNeeds:
    """The organisation opening a case asks about: its evaluators (`check_evaluators`) and
    who acts at the first step (the next-actor check)."""
    first = step_roles(spec, spec.initial) or {}
    return OrgNeeds.of([*evaluator_roles(spec), *(spec.roles[n] for n in first)])


@dataclass(frozen=True)
class Holder:
    """One role assignment of an active person, with the person's home unit and tier."""

    person_id: int
    role: str
    unit_id: int | None  # None: a named group
    home_unit_id: int
    tier: str


class Org:
    """The role assignments that matter for some units (and the named groups), read once.

    `paths` maps unit id → list of unit ids root … unit (the unit's ancestors and itself).
    """

    def __init__(self, holders: Iterable[Holder], paths: dict[int, list[int]],
                 needs: OrgNeeds | None = None,
                 sources: dict[HostSource, dict[int, int | None]] | None = None):
        self.paths = paths
        self.hosts: dict[tuple[str, int], int] = {}  # (role, subject) → host (下沉一线)
        # Read along with a case: what was read (`covers`), and per host source the case
        # subject's host or None (`with_hosts` names them per role, `known_host` answers).
        self.needs, self.sources = needs, sources or {}
        self.by_unit: dict[tuple[str, int], list[Holder]] = defaultdict(list)
        self.groups: dict[str, list[int]] = defaultdict(list)
        for h in holders:
            if h.unit_id is None:
                self.groups[h.role].append(h.person_id)
            else:
                self.by_unit[(h.role, h.unit_id)].append(h)

    @classmethod
    def read(cls, s: Session, unit_paths: dict[int, str] | None = None,
             roles: Iterable[str] = (), groups: Iterable[str] = ()) -> Org:
        """One query: the assignments of active people on the given units and their
        ancestors (every unit when `unit_paths` is None) in `roles`, and the members of
        `groups`."""
        if unit_paths is None:
            unit_paths = dict(s.execute(select(UNITS.c.id, UNITS.c.path)).all())
        paths = {u: unit_path_ids(p) for u, p in unit_paths.items()}
        units = sorted({a for chain in paths.values() for a in chain})
        roles, groups = sorted(set(roles)), sorted(set(groups))
        by_unit, by_group = bool(roles and units), bool(groups)
        if not (by_unit or by_group):
            return cls([], paths)
        rows = s.execute(_holders_statement(_dialect(s) == "postgresql", by_unit, by_group),
                         {"roles": roles, "units": units, "groups": groups}).all()
        return cls([Holder(*r) for r in rows], paths)

    @classmethod
    def read_for(cls, s: Session, unit_paths: dict[int, str], specs: Iterable[RoleSpec],
                 subjects: Iterable[int]) -> Org:
        """`read` for what the roles `specs` need, and `load_hosts` for `subjects`, in one
        query (a UNION ALL) when a role has hosts: the next-actor check and the evaluator
        check of an action pay one round trip, not two."""
        specs = list(specs)
        hosted = [r for r in specs if r.dispatch_flow and r.dispatch_host]
        subjects = sorted(set(subjects))
        unit_roles, groups = role_needs(specs)
        paths = {u: unit_path_ids(p) for u, p in unit_paths.items()}
        units = sorted({a for chain in paths.values() for a in chain})
        roles, groups_ = sorted(unit_roles), sorted(groups)
        by_unit, by_group = bool(roles and units), bool(groups_)
        if not hosted or not subjects or not (by_unit or by_group):
            return cls.read(s, unit_paths, unit_roles, groups).load_hosts(s, specs, subjects)
        pg = _dialect(s) == "postgresql"
        params: dict[str, Any] = {"roles": roles, "units": units, "groups": groups_,
                                  "subjects": subjects}
        for i, r in enumerate(hosted):
            params[f"flow{i}"], params[f"states{i}"] = r.dispatch_flow, list(r.dispatch_states)
        stmt = _combined_statement(pg, by_unit, by_group,
                                   tuple(r.dispatch_host or "" for r in hosted))
        holders, hosts = [], []
        for tag, a, b, c, d, e, _order in s.execute(stmt, params).all():
            if tag == "h":
                holders.append(Holder(a, b, c, d, e))
            else:
                hosts.append((hosted[int(tag[1:])].name, a, c))
        org = cls(holders, paths)
        org.hosts.update({(name, subject): host for name, subject, host in hosts})
        return org

    def covers(self, unit_id: int, specs: Iterable[RoleSpec]) -> bool:
        """Whether this organisation, read along with a case of `unit_id`, can resolve
        `specs` there without another read."""
        return (self.needs is not None and unit_id in self.paths
                and OrgNeeds.of(specs) <= self.needs)

    def with_hosts(self, specs: Iterable[RoleSpec], subject_id: int) -> Org:
        """Name the subject's host (read along) for each hosted role of `specs`."""
        for r in specs:
            _read, host = self.known_host(r, subject_id)
            if host is not None:
                self.hosts[(r.name, subject_id)] = host
        return self

    def known_host(self, role: RoleSpec, subject_id: int) -> tuple[bool, int | None]:
        """(read along, the host): whether the subject's host for a hosted role was read
        with the case and, if so, who it is (None: not dispatched)."""
        read = self.sources.get(_source(role), {})  # type: ignore[arg-type]
        return (subject_id in read, read.get(subject_id))

    def load_hosts(self, s: Session, roles: Iterable[RoleSpec],
                   subjects: Iterable[int] | None) -> Org:
        """Read who hosts the subjects now dispatched (`while_dispatched`), for `roles`."""
        for r in roles:
            self.hosts.update({(r.name, subject): host for subject, host
                               in dispatch_hosts(s, r, subjects).items()})
        return self

    def holders(self, role: RoleSpec, unit_id: int, tier: str | None,
                subject_id: int | None) -> list[int]:
        """The people who hold `role` on a case of `unit_id`, `tier` and `subject_id`
        (the subject left out; their own role is `subject`)."""
        chain = self.paths.get(unit_id, [unit_id])
        if role.resolve == "subject":
            return [subject_id] if subject_id is not None else []
        if role.resolve == "group":
            return [p for p in self.groups.get(role.group or "", []) if p != subject_id]
        if role.resolve in ("leader", "unit_role"):
            name = LEADER if role.resolve == "leader" else role.role or ""
            units = chain if role.resolve == "leader" or role.inherit else chain[-1:]
            return sorted({h.person_id for u in units for h in self.by_unit.get((name, u), ())
                           if h.person_id != subject_id})
        if role.resolve == "evaluator":
            return self.evaluators(role, chain, tier, subject_id)
        return []

    def evaluators(self, role: RoleSpec, chain: list[int], tier: str | None,
                   subject_id: int | None) -> list[int]:
        host = self.hosts.get((role.name, subject_id)) if subject_id is not None else None
        if host is not None:  # 下沉一线: the receiving side evaluates while dispatched
            return [host]
        unit, above = chain[-1], chain[:-1]
        rank = {t: i for i, t in enumerate(role.tiers)}
        here = [h for h in self.by_unit.get((LEADER, unit), ()) if h.person_id != subject_id]
        own = [h.person_id for h in here if h.home_unit_id == unit
               and rank.get(h.tier, len(rank)) < rank.get(tier or "", len(rank))]
        if own:  # 本单位: a higher tier of the same unit
            return sorted(set(own))
        supervising = [h.person_id for h in here if h.home_unit_id in above]
        if supervising:  # 分管领导: a leader from a unit above, assigned to this unit
            return sorted(set(supervising))
        if role.escalate:  # the nearest unit above with a leader
            for a in reversed(above):
                found = {h.person_id for h in self.by_unit.get((LEADER, a), ())
                         if h.person_id != subject_id}
                if found:
                    return sorted(found)
        if role.fallback_group:
            return [p for p in self.groups.get(role.fallback_group, []) if p != subject_id]
        return []


def dispatch_hosts(s: Session, role: RoleSpec, subjects: Iterable[int] | None = None
                   ) -> dict[int, int]:
    """Subject → host for an evaluator role with `while_dispatched`: the subjects with a
    case of the dispatch flow in one of its states whose host field names an active person
    other than themselves (all such subjects when `subjects` is None). One query."""
    if not role.dispatch_flow or not role.dispatch_host:
        return {}
    params: dict[str, Any] = {"flow": role.dispatch_flow,
                              "states": list(role.dispatch_states)}
    if subjects is not None:
        params["subjects"] = sorted(set(subjects))
        if not params["subjects"]:
            return {}
    q = _hosts_statement(_dialect(s) == "postgresql", role.dispatch_host, subjects is not None)
    return {subject: h for subject, h in s.execute(q, params).all()}


def role_needs(roles: Iterable[RoleSpec]) -> tuple[set[str], set[str]]:
    """(unit roles, group names) an `Org` must read to resolve `roles`."""
    unit_roles: set[str] = set()
    groups: set[str] = set()
    for r in roles:
        if r.resolve in ("leader", "evaluator"):
            unit_roles.add(LEADER)
        elif r.resolve == "unit_role" and r.role:
            unit_roles.add(r.role)
        elif r.resolve == "group" and r.group:
            groups.add(r.group)
        if r.fallback_group:
            groups.add(r.fallback_group)
    return unit_roles, groups


def step_roles(spec: FlowSpec, state: str) -> dict[str, bool] | None:
    """The roles that may act at `state` (name → whether the subject may act through it);
    None when nobody has to: a final state, or one the subject or the scheduler can move."""
    if spec.states[state].final:
        return None
    out: dict[str, bool] = {}
    for t in spec.transitions_from(state):
        for name in t.by:
            if name == SYSTEM or spec.roles[name].resolve == "subject":
                return None
            out[name] = out.get(name, False) or t.allow_self
    return out


def actors_at(s: Session, spec: FlowSpec, state: str, unit_id: int, unit_path: str,
              tier: str | None, subject_id: int, cache: dict | None = None,
              along: Org | None = None) -> list[int] | None:
    """The people who could act at `state` of a case (None: no person is needed).
    `cache` keeps the organisation read per unit and roles (a bulk action's cases);
    `along` is the organisation read with the case, used when it covers the roles."""
    roles = step_roles(spec, state)
    if roles is None:
        return None
    specs = [spec.roles[n] for n in roles]
    unit_roles, groups = role_needs(specs)
    key = (unit_id, tuple(sorted(unit_roles)), tuple(sorted(groups)))
    org = cache.get(key) if cache is not None else None
    if along is not None and along.covers(unit_id, specs):
        org = along.with_hosts(specs, subject_id)
    elif org is None and cache is None:  # one case: the organisation and its hosts at once
        org = Org.read_for(s, {unit_id: unit_path}, specs, [subject_id])
    else:
        if org is None:
            org = cache[key] = Org.read(s, {unit_id: unit_path}, unit_roles, groups)
        org.load_hosts(s, specs, [subject_id])
    found: set[int] = set()
    for name, allow_self in roles.items():
        found.update(org.holders(spec.roles[name], unit_id, tier,
                                 None if allow_self else subject_id))
    return sorted(found)


def check_next_actor(s: Session, spec: FlowSpec, state: str, case_id: int | None,
                     unit_id: int, unit_path: str, tier: str | None, subject_id: int,
                     doing: str, cache: dict | None = None, along: Org | None = None
                     ) -> None:
    """Refuse (`NoActor`) a move that would leave a live case with nobody to act on it.

    One indexed query on role_assignments when the state needs a role holder (none when
    the organisation read along with the case covers it); none when the subject or the
    scheduler can move it, or it is final."""
    found = actors_at(s, spec, state, unit_id, unit_path, tier, subject_id, cache, along)
    if found is not None and not found:
        roles = step_roles(spec, state) or {}
        raise NoActor(
            msg("actors.nobody_at_state", doing=doing, label=spec.states[state].label,
                state=state, on_case=msg("actors.on_case", case_id=case_id) if case_id else "",
                roles=sorted(roles)),
            state=state, roles=sorted(roles))


def evaluator_roles(spec: FlowSpec) -> list[RoleSpec]:
    """The flow's `resolve: evaluator` roles that some transition gives a step to: fixed
    by the subject's place in the organisation, so checked when a case starts."""
    used = {n for t in spec.transitions for n in t.by if n != SYSTEM}
    return [r for n, r in spec.roles.items() if n in used and r.resolve == "evaluator"]


def check_evaluators(s: Session, spec: FlowSpec, unit_id: int, unit_path: str,
                     tier: str | None, subject_id: int, doing: str, along: Org | None = None
                     ) -> None:
    """Refuse to start a case whose evaluator nobody is (see `evaluator_roles`); `along` is
    the organisation read with the person, used when it covers the roles."""
    roles = evaluator_roles(spec)
    if not roles:
        return
    if along is not None and along.covers(unit_id, roles):
        org = along.with_hosts(roles, subject_id)
    else:
        org = Org.read_for(s, {unit_id: unit_path}, roles, [subject_id])
    for r in roles:
        if not org.holders(r, unit_id, tier, subject_id):
            raise NoActor(msg("actors.nobody_evaluates_person_role", doing=doing,
                              subject_id=subject_id, spec_flow=spec.flow,
                              r_name=r.name), state=None, roles=[r.name])


def without_actor(s: Session, spec: FlowSpec, people: list) -> set[int]:
    """Of `people` (rows with id, unit_id, tier), those whose case nobody could carry: no
    evaluator (`evaluator_roles`), or nobody to act at the first step. A cycle skips them.
    One read of the organisation for the units of the whole batch."""
    roles = evaluator_roles(spec)
    first = step_roles(spec, spec.initial) or {}
    if not (roles or first) or not people:
        return set()
    unit_ids = sorted({p.unit_id for p in people})
    paths = dict(s.execute(select(UNITS.c.id, UNITS.c.path)
                           .where(UNITS.c.id.in_(unit_ids))).all())
    unit_roles, groups = role_needs([*roles, *(spec.roles[n] for n in first)])
    org = Org.read(s, paths, unit_roles, groups).load_hosts(s, roles,
                                                            [p.id for p in people])

    def stuck(p) -> bool:
        if any(not org.holders(r, p.unit_id, p.tier, p.id) for r in roles):
            return True
        return bool(first) and not any(
            org.holders(spec.roles[n], p.unit_id, p.tier, None if own else p.id)
            for n, own in first.items())

    return {p.id for p in people if stuck(p)}


# --------------------------------------------------------------------------- SQL side


def evaluated_pairs(org: Org, role: RoleSpec, person_id: int) -> list[tuple[int, str]]:
    """The (unit, tier) pairs whose cases `person_id` evaluates through `role` (for the
    queue's SQL); `org` must cover the units to consider."""
    return sorted((u, t) for u in org.paths for t in role.tiers
                  if person_id in org.evaluators(role, org.paths[u], t, None))


def viewer_evaluates(s: Session, role: RoleSpec, person_id: int,
                     leader_paths: list[str], in_group: bool) -> ColumnElement[bool]:
    """SQL: the case is one `person_id` evaluates through `role` (subject check apart):
    by the hierarchy, unless the subject is dispatched and hosted; or as the host."""
    hosted = dispatch_hosts(s, role)
    mine = sorted(subject for subject, host in hosted.items() if host == person_id)
    conds = [CASES.c.subject_id.in_(mine)] if mine else []
    if leader_paths or in_group:
        q = select(UNITS.c.id, UNITS.c.path)
        if not in_group:  # only the subtrees of the units the person leads can be theirs
            q = q.where(or_(*[UNITS.c.path.like(f"{p}%") for p in sorted(set(leader_paths))]))
        unit_roles, groups = role_needs([role])
        org = Org.read(s, dict(s.execute(q).all()), unit_roles, groups)
        pairs = evaluated_pairs(org, role, person_id)
        if pairs:
            by_hierarchy = tuple_(CASES.c.unit_id, CASES.c.tier).in_(pairs)
            if hosted:
                by_hierarchy = and_(by_hierarchy, CASES.c.subject_id.not_in(sorted(hosted)))
            conds.append(by_hierarchy)
    return or_(*conds) if conds else false()


def stuck_condition(s: Session, flows: dict[int, object]) -> ColumnElement[bool]:
    """SQL: an open case whose current step nobody can act on (issue: a case nobody can
    act on). `flows` maps version id → CompiledFlow. One read of the organisation."""
    steps: list[tuple[int, str, FlowSpec, dict[str, bool]]] = []
    for vid, cf in flows.items():
        spec = cf.spec  # type: ignore[attr-defined]
        for state in spec.states:
            roles = step_roles(spec, state)
            if roles is not None:
                steps.append((vid, state, spec, roles))
    if not steps:
        return false()
    specs = [sp.roles[n] for _v, _s, sp, roles in steps for n in roles]
    unit_roles, groups = role_needs(specs)
    org = Org.read(s, None, unit_roles, groups)
    conds = []
    for vid, state, spec, roles in steps:
        # By (unit, tier) when an evaluator may act here, else by unit. A place is stuck
        # when every role has nobody; a role with exactly one holder is stuck only on that
        # holder's own case (nobody acts on their own case).
        by_tier = any(spec.roles[n].resolve == "evaluator" for n in roles)
        tiers = sorted({t for n in roles for t in spec.roles[n].tiers}) if by_tier else [None]
        empty: list[tuple] = []
        own: list[tuple] = []
        for u in org.paths:
            for t in tiers:
                found: set[int] = set()
                for name, allow_self in roles.items():
                    found.update(org.holders(spec.roles[name], u, t, None))
                    if allow_self:
                        found.add(-1)  # the subject may act: never stuck on their own case
                key = (u, t) if by_tier else (u,)
                if not found:
                    empty.append(key)
                elif len(found) == 1:
                    own.append((*key, next(iter(found))))
        cols = (CASES.c.unit_id, CASES.c.tier) if by_tier else (CASES.c.unit_id,)
        where = []
        if empty:
            where.append(tuple_(*cols).in_(empty) if by_tier
                         else CASES.c.unit_id.in_([k[0] for k in empty]))
        if own:
            where.append(tuple_(*cols, CASES.c.subject_id).in_(own))
        hosted = sorted({subject for n in roles if spec.roles[n].resolve == "evaluator"
                         for subject in dispatch_hosts(s, spec.roles[n])})
        if where and hosted:  # a dispatched subject's host evaluates: never stuck there
            where = [and_(or_(*where), CASES.c.subject_id.not_in(hosted))]
        if where:
            conds.append(and_(CASES.c.version_id == vid, CASES.c.state == state, or_(*where)))
    return and_(CASES.c.closed_at.is_(None), or_(*conds)) if conds else false()

