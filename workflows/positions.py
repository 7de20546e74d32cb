"""Rank positions (职数) per unit, target rank and promotion round: set, list, delete and
import them, and the pools the `positions` rule (workflows/domain_rules/promotion.py) holds
approvals to.

职数 differ by level of government and are set by each province (docs/domain.md §3), so they are
data an admin or process owner keeps in `rank_positions`, not numbers in a definition.

What a row means — one meaning everywhere (the rule, the list's `taken`, the check when a
number is lowered): **at most `positions` promotions to `rank` in `round` in the unit and its
sub-units.** 职数 are usually set for a whole 机关 while cases belong to its 科室, so a row on
a unit above the case's unit governs the case too. A case must fit every row on its unit's
path (its own unit and each unit above it) that names its rank and round: a row on a 科室
can cap that 科室 below the share the 机关's row leaves. Only when no unit on the path has a
row for the rank and round does the rule fall back to the definition's `positions`
parameter, counted over the case's own unit as before.

"Taken" are the cases of the promotion flow in the rule's counted states (shipped:
`filing`, `filed`) whose target rank and round are the row's, in the row's unit subtree.
Every count that decides runs after `lock_pool`: on PostgreSQL an advisory lock per rank
and round, so an approval and a change of the number cannot interleave; SQLite serialises
writers anyway. Rows are checked against the ladder of the published rank-promotion
definition when there is one.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, or_, select, text, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .access import COMMITTEE, LEADER, Viewer
from .db import Database
from .errors import FieldErrors, Forbidden, ImportFailed, NotFound
from .messages import msg
from .models import Case, RankPositions, Unit, unit_path_ids, utcnow
from .rules import uses
from .spec import FlowSpec

FLOW = "rank-promotion"  # the flow whose ladder and positions rule the table serves
CASES = Case.__table__
ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:k)")
MAX_RANK = 64  # the column sizes
MAX_ROUND = 32
MAX_NOTE = 2000
MAX_POSITIONS = 10_000  # a bound against typing errors, the same as the rule parameter's
TABLE, DEFINITION = "table", "definition"  # where a pool's number comes from
CSV_COLUMNS = ("unit_code", "rank", "round", "positions", "note")
CSV_REQUIRED = ("unit_code", "rank", "round", "positions")


# --------------------------------------------------------------------------- the definition


@dataclass(frozen=True)
class PoolRule:
    """Where the `positions` rule of a flow counts the positions taken."""

    flow: str
    field: str  # the target rank field
    round_field: str | None
    counted_states: tuple[str, ...]
    category_field: str | None = None


def _rule_params(spec: FlowSpec, name: str) -> tuple[Any, dict[str, Any]] | None:
    return next(uses(spec, name), None)


def pool_rule(spec: FlowSpec | None) -> PoolRule | None:
    """The first `positions` rule of a definition, with its defaults filled in."""
    found = _rule_params(spec, "positions") if spec is not None else None
    if found is None:
        return None
    t, p = found
    return PoolRule(spec.flow, p["field"], p.get("round_field"),
                    tuple(p.get("counted_states") or [t.dest]), p.get("category_field"))


def eligible_params(spec: FlowSpec | None) -> dict[str, Any] | None:
    """The loaded parameters of the first `promotion_eligible` rule (ladder, bonus, …)."""
    found = _rule_params(spec, "promotion_eligible") if spec is not None else None
    return found[1] if found else None


def ladder_ranks(spec: FlowSpec | None) -> list[str] | None:
    """The target ranks of the definition's ladder, in its order; None without one."""
    params = eligible_params(spec)
    return list(params["ladder"]) if params else None


# --------------------------------------------------------------------------- pools


@dataclass(frozen=True)
class Pool:
    """At most `limit` cases of (`rank`, `round`) in `unit_id` — with its sub-units when
    `subtree` — hold a position at once. `source` says where the number comes from:
    `table` (the row `row_id`) or `definition` (the rule's `positions` parameter; `why`
    says why the table did not apply)."""

    unit_id: int
    unit_path: str
    unit_name: str
    subtree: bool
    rank: str
    round: Any
    limit: int
    source: str
    row_id: int | None = None
    why: str = ""

    @property
    def order(self) -> tuple:
        return (self.unit_path, self.rank, str(self.round), self.source)

    def where(self, with_round: bool = True) -> str:
        unit = (msg("positions.where_subtree", unit_id=self.unit_id, name=self.unit_name)
                if self.subtree else msg("positions.where_unit", unit_id=self.unit_id))
        return msg("positions.where", unit=unit, rank=self.rank,
                   round=msg("positions.where_round", round=self.round) if with_round else "")

    def origin(self) -> str:
        """Where the number comes from, for refusals: "set in rank positions (row 4)"."""
        if self.source == TABLE:
            return msg("positions.origin_table", row_id=self.row_id)
        return self.why


def lock_pool(s: Session, rank: str, round_value: Any) -> None:
    """Serialise everything that counts or changes the positions of a rank and round: two
    approvals cannot both take the last position, nor can a number be lowered under an
    approval that is counting (PostgreSQL advisory lock, released at commit)."""
    conn = s.connection()
    if conn.dialect.name == "postgresql":
        rnd = round_value.strip() if isinstance(round_value, str) else round_value
        key = f"rank_positions|{rank}|{rnd}"
        conn.execute(ADVISORY_LOCK,
                     {"k": struct.unpack(">q", hashlib.sha256(key.encode()).digest()[:8])[0]})


def blank_text(value: Any) -> bool:
    """None or only whitespace: a round or an override reason not given."""
    return value is None or (isinstance(value, str) and not value.strip())


def pools_for(s: Session, unit_id: int, rank: str, round_value: Any, default: int | None,
              per_round: bool = True) -> list[Pool]:
    """The pools a case of `unit_id` asking for `rank` in `round_value` must fit: every row
    for the rank and round on the unit's path, root first; without one, the definition's
    `default` over the unit alone (0 when the definition has none either).

    `per_round` is False when the rule has no round field: rows are set per round, so the
    table cannot apply."""
    unit = s.execute(select(Unit.path, Unit.name).where(Unit.id == unit_id)).one()
    if not per_round:
        why = msg("positions.why_no_round_field")
    elif blank_text(round_value):
        why = msg("positions.why_no_round")
    else:
        ids = unit_path_ids(unit.path)
        rows = s.execute(
            select(RankPositions.id, RankPositions.unit_id, RankPositions.positions,
                   Unit.path, Unit.name).join(Unit, Unit.id == RankPositions.unit_id)
            .where(RankPositions.unit_id.in_(ids), RankPositions.rank == rank,
                   RankPositions.round == str(round_value).strip())).all()
        if rows:
            return [Pool(r.unit_id, r.path, r.name, True, rank, round_value, r.positions,
                         TABLE, r.id)
                    for r in sorted(rows, key=lambda r: ids.index(r.unit_id))]
        why = msg("positions.why_no_row")
    why = (msg("positions.origin_definition", why=why) if default is not None
           else msg("positions.origin_none", why=why))
    return [Pool(unit_id, unit.path, unit.name, False, rank, round_value, default or 0,
                 DEFINITION, None, why)]


def pool_taken(s: Session, rule: PoolRule, pool: Pool) -> dict[Any, int]:
    """Cases of the pool in the rule's counted states, by category (None when the rule has
    no category field). Call `lock_pool` first when the count decides anything."""
    conds = [CASES.c.flow_id == rule.flow, CASES.c.state.in_(rule.counted_states),
             CASES.c.data[rule.field].as_string() == pool.rank]
    if pool.subtree:
        conds.append(CASES.c.unit_id.in_(
            select(Unit.id).where(Unit.path.like(f"{pool.unit_path}%"))))
    else:
        conds.append(CASES.c.unit_id == pool.unit_id)
    if rule.round_field:
        conds.append(CASES.c.data[rule.round_field].as_string() == str(pool.round))
    if not rule.category_field:
        return {None: int(s.execute(select(func.count()).where(and_(*conds))).scalar_one())}
    cat = CASES.c.data[rule.category_field].as_string()
    rows = s.execute(select(cat, func.count()).where(and_(*conds)).group_by(cat))
    return {c: int(n) for c, n in rows}


# --------------------------------------------------------------------------- who may


def require_writer(viewer: Viewer, doing: str) -> None:
    """Setting 职数 is for admins (系统管理员) and process owners (流程管理员)."""
    if not viewer.sees_all:
        raise Forbidden(msg("positions.needs_role_admin_process",
                            doing=doing), rule="needs_admin_or_process_owner")


def _visible(viewer: Viewer) -> ColumnElement[bool]:
    """Rows an admin or process owner sees: all. A leader or committee member: the rows of
    their units, of the units below them and of the units above them (those govern their
    people too). Nobody else holds a role that reads 职数."""
    if viewer.sees_all:
        return true()
    paths = viewer.paths(LEADER, COMMITTEE)
    if not paths:
        return false()
    above = sorted({i for p in paths for i in unit_path_ids(p)})
    return or_(Unit.id.in_(above), *[Unit.path.like(f"{p}%") for p in paths])


def require_reader(viewer: Viewer) -> None:
    if not (viewer.sees_all or viewer.paths(LEADER, COMMITTEE)):
        raise Forbidden(msg("positions.reading_rank_positions_admins"), rule="rank_positions")


# --------------------------------------------------------------------------- reads


def _taken_by_row(s: Session, rule: PoolRule | None,
                  rows: list[Any]) -> dict[int, int | None]:
    """Positions taken per row, in one query for all rows: cases in the counted states
    grouped by unit, rank and round, summed over each row's subtree."""
    if rule is None or not rule.round_field or not rows:
        return {r.id: None for r in rows}
    rank = CASES.c.data[rule.field].as_string()
    rnd = CASES.c.data[rule.round_field].as_string()
    inner = (select(Unit.path.label("path"), rank.label("rank"), rnd.label("round"))
             .select_from(CASES.join(Unit, Unit.id == CASES.c.unit_id))
             .where(CASES.c.flow_id == rule.flow, CASES.c.state.in_(rule.counted_states),
                    rank.in_(sorted({r.rank for r in rows})),
                    rnd.in_(sorted({r.round for r in rows}))).subquery())
    counts = s.execute(select(inner.c.path, inner.c.rank, inner.c.round, func.count())
                       .group_by(inner.c.path, inner.c.rank, inner.c.round)).all()
    return {r.id: sum(int(n) for path, rank_, round_, n in counts
                      if rank_ == r.rank and round_ == r.round and path.startswith(r.path))
            for r in rows}


def _out(row: Any, taken: int | None) -> dict[str, Any]:
    return {"id": row.id, "unit": {"id": row.unit_id, "code": row.code, "name": row.name},
            "rank": row.rank, "round": row.round, "positions": row.positions,
            "taken": taken, "remaining": None if taken is None else max(row.positions - taken, 0),
            "note": row.note, "set_by": row.set_by, "set_at": row.set_at}


def _select():
    return (select(RankPositions.id, RankPositions.unit_id, RankPositions.rank,
                   RankPositions.round, RankPositions.positions, RankPositions.note,
                   RankPositions.set_by, RankPositions.set_at, Unit.code, Unit.name,
                   Unit.path).join(Unit, Unit.id == RankPositions.unit_id))


def list_positions(s: Session, viewer: Viewer, spec: FlowSpec | None, *,
                   unit_id: int | None = None, rank: str | None = None,
                   round: str | None = None) -> list[dict[str, Any]]:
    """The rows the viewer may read, with `taken` and `remaining` (null when the published
    flow has no positions rule with a round field, so that the table is not read).
    `unit_id` narrows to that unit and its sub-units."""
    require_reader(viewer)
    q = _select().where(_visible(viewer))
    if unit_id is not None:
        path = s.execute(select(Unit.path).where(Unit.id == unit_id)).scalar()
        if path is None:
            raise NotFound(msg("positions.unit_does_not_exist_2", unit_id=unit_id))
        q = q.where(Unit.path.like(f"{path}%"))
    if rank is not None:
        q = q.where(RankPositions.rank == rank)
    if round is not None:
        q = q.where(RankPositions.round == round)
    rows = s.execute(q.order_by(RankPositions.round, Unit.path, RankPositions.rank)).all()
    taken = _taken_by_row(s, pool_rule(spec), rows)
    return [_out(r, taken[r.id]) for r in rows]


# --------------------------------------------------------------------------- writes


def _check(s: Session, spec: FlowSpec | None, rank: Any, round: Any,
           positions: Any, note: Any) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The values cleaned, and the problems of each, as field → messages."""
    errors: dict[str, list[str]] = {}
    clean: dict[str, Any] = {}
    rank = rank.strip() if isinstance(rank, str) else rank
    ranks = ladder_ranks(spec)
    if not isinstance(rank, str) or not rank:
        errors["rank"] = [msg("positions.required")]
    elif len(rank) > MAX_RANK:
        errors["rank"] = [msg("positions.longer_than_characters", MAX_RANK=MAX_RANK)]
    elif ranks is not None and rank not in ranks:
        errors["rank"] = [f"{rank} is not a rank of the ladder of {spec.flow}; known: "
                          + ", ".join(ranks)]
    clean["rank"] = rank
    round = round.strip() if isinstance(round, str) else round
    if not isinstance(round, str) or not round:
        errors["round"] = [msg("positions.required_promotion_round_e")]
    elif len(round) > MAX_ROUND:
        errors["round"] = [msg("positions.longer_than_characters_2", MAX_ROUND=MAX_ROUND)]
    clean["round"] = round
    if isinstance(positions, str) and re.fullmatch(r"-?[0-9]{1,12}", positions.strip()):
        positions = int(positions.strip())
    if positions is None or (isinstance(positions, str) and not positions.strip()):
        errors["positions"] = [msg("positions.required_whole_number_more")]
    elif isinstance(positions, bool) or not isinstance(positions, int):
        errors["positions"] = [msg("positions.not_whole_number", positions=positions)]
    elif positions < 0:
        errors["positions"] = [msg("positions.must_not_negative_got", positions=positions)]
    elif positions > MAX_POSITIONS:
        errors["positions"] = [msg("positions.must_at_most_got", MAX_POSITIONS=MAX_POSITIONS,
                                   positions=positions)]
    clean["positions"] = positions
    note = (note.strip() or None) if isinstance(note, str) else note
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
        errors["note"] = [msg("positions.must_text_at_most", MAX_NOTE=MAX_NOTE)]
    clean["note"] = note
    return clean, errors


def _taken_now(s: Session, spec: FlowSpec | None, unit: Unit, rank: str,
               round: str) -> int | None:
    """Positions taken in the row's pool now; None when the published flow's positions
    rule does not read the table (no such rule, or no round field)."""
    rule = pool_rule(spec)
    if rule is None or not rule.round_field:
        return None
    pool = Pool(unit.id, unit.path, unit.name, True, rank, round, 0, TABLE)
    return sum(pool_taken(s, rule, pool).values())


def unit_by_code(s: Session, code: str) -> Unit:
    unit = s.execute(select(Unit).where(Unit.code == code)).scalar_one_or_none()
    if unit is None:
        raise NotFound(msg("positions.unit_does_not_exist", code=code))
    return unit


def set_positions(s: Session, spec: FlowSpec | None, unit: Unit, rank: Any, round: Any,
                  positions: Any, note: Any = None, *, by: int | None,
                  now: dt.datetime | None = None) -> tuple[dict[str, Any], bool]:
    """Set (create or change) the positions of a unit, rank and round; returns the row and
    whether it was created. FieldErrors name the field: a rank off the ladder, a blank
    round, a number that is not a whole number ≥ 0, or one below the positions already
    taken."""
    clean, errors = _check(s, spec, rank, round, positions, note)
    if errors:
        raise FieldErrors(errors)
    lock_pool(s, clean["rank"], clean["round"])
    taken = _taken_now(s, spec, unit, clean["rank"], clean["round"])
    if taken is not None and clean["positions"] < taken:
        raise FieldErrors({"positions": [
            msg("positions.positions_unit_round_are", taken=taken, unit_code=unit.code,
                unit_name=unit.name, rank=clean['rank'], round=clean['round'],
                positions=clean['positions'])]})
    row = s.execute(select(RankPositions).where(
        RankPositions.unit_id == unit.id, RankPositions.rank == clean["rank"],
        RankPositions.round == clean["round"])).scalar_one_or_none()
    created = row is None
    if row is None:
        row = RankPositions(unit_id=unit.id, rank=clean["rank"], round=clean["round"])
        s.add(row)
    row.positions, row.note = clean["positions"], clean["note"]
    row.set_by, row.set_at = by, now or utcnow()
    s.flush()
    listed = s.execute(_select().where(RankPositions.id == row.id)).one()
    return _out(listed, taken), created


def delete_positions(s: Session, spec: FlowSpec | None, unit_code: str, rank: str,
                     round: str) -> None:
    """Delete a row no approved promotion holds a position of; one that is used stays, as
    the record of the round (lower it to what is taken instead)."""
    unit = unit_by_code(s, unit_code)
    lock_pool(s, rank, round)
    row = s.execute(select(RankPositions).where(
        RankPositions.unit_id == unit.id, RankPositions.rank == rank,
        RankPositions.round == round)).scalar_one_or_none()
    if row is None:
        raise NotFound(msg("positions.no_rank_positions_set", unit_code=unit_code, rank=rank,
                           round=round))
    taken = _taken_now(s, spec, unit, row.rank, row.round)
    if taken:
        raise FieldErrors({"positions": [
            msg("positions.positions_unit_round_are_2", taken=taken, row_positions=row.positions,
                unit_code=unit.code, unit_name=unit.name, row_rank=row.rank, row_round=row.round,
                taken2=taken)]})
    s.delete(row)
    s.flush()


# --------------------------------------------------------------------------- units of work


def read(db: Database, viewer: Viewer, spec: FlowSpec | None,
         **filters: Any) -> list[dict[str, Any]]:
    with db.unit_of_work(write=False) as s:
        return list_positions(s, viewer, spec, **filters)


def _duplicate() -> FieldErrors:
    return FieldErrors({"round": [msg("positions.these_positions_were_set")]})


@contextmanager
def writing(db: Database, clash: Exception | None = None) -> Iterator[Session]:
    """A unit of work that sets positions: a parallel request that set the same row first
    (the unique constraint) is `clash` (a 422 asking to reload), never a 500."""
    try:
        with db.unit_of_work() as s:
            yield s
    except IntegrityError:
        raise (clash or _duplicate()) from None


def import_clash() -> ImportFailed:
    return ImportFailed([(1, msg("positions.rank_positions_were_set"))])


def put(db: Database, spec: FlowSpec | None, unit_code: str, rank: Any, round: Any,
        positions: Any, note: Any = None, *, by: int | None,
        now: dt.datetime | None = None) -> tuple[dict[str, Any], bool]:
    """`set_positions` in its own transaction; NotFound for an unknown unit code."""
    with writing(db) as s:
        return set_positions(s, spec, unit_by_code(s, unit_code), rank, round,
                             positions, note, by=by, now=now)


def remove(db: Database, spec: FlowSpec | None, unit_code: str, rank: str,
           round: str) -> None:
    with db.unit_of_work() as s:
        delete_positions(s, spec, unit_code, rank, round)


# --------------------------------------------------------------------------- CSV import


@dataclass(frozen=True)
class ImportReport:
    rows: int
    created: int
    updated: int


def _read_csv(text: str) -> tuple[list[tuple[int, dict[str, str]]], list[tuple[int, str]]]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        return [], [(1, "the file is empty; the first line must name the columns "
                        + ", ".join(CSV_COLUMNS))]
    errors = []
    unknown = [h for h in header if h not in CSV_COLUMNS]
    missing = [c for c in CSV_REQUIRED if c not in header]
    if unknown:
        errors.append((1, f"unknown column(s) {', '.join(unknown)}; the columns are "
                          + ", ".join(CSV_COLUMNS)))
    if missing:
        errors.append((1, msg("positions.missing_column", missing=list(missing))))
    if errors:
        return [], errors
    rows = []
    for raw in reader:
        line = reader.line_num
        if None in raw:
            errors.append((line, msg("positions.more_value_than_there", n_value=len(raw[None]))))
            continue
        cells = {k.strip(): (v or "").strip() for k, v in raw.items() if k}
        if any(cells.values()):
            rows.append((line, cells))
    return rows, errors


def import_positions(db: Database, spec: FlowSpec | None, text: str, *, by: int | None,
                     now: dt.datetime | None = None) -> ImportReport:
    """Import rows (unit_code, rank, round, positions, note) from CSV text; all rows or
    none. Each row is checked as `set_positions` checks it; `ImportFailed` lists every bad
    row by line number and nothing is written. A unit, rank and round given twice is an
    error on the second line."""
    with writing(db, import_clash()) as s:
        return import_rows(s, spec, text, by=by, now=now)


def import_rows(s: Session, spec: FlowSpec | None, text: str, *, by: int | None,
                now: dt.datetime | None = None) -> ImportReport:
    """`import_positions` inside a caller's unit of work (ImportFailed: the caller rolls
    back)."""
    rows, errors = _read_csv(text)
    created = updated = 0
    codes = sorted({c["unit_code"] for _n, c in rows if c.get("unit_code")})
    units = {u.code: u for u in s.execute(
        select(Unit).where(Unit.code.in_(codes))).scalars()} if codes else {}
    seen: dict[tuple[str, str, str], int] = {}
    for line, c in rows:
        code = c.get("unit_code", "")
        if not code:
            errors.append((line, msg("positions.unit_code_empty")))
            continue
        if code not in units:
            errors.append((line, msg("positions.unit_does_not_exist", code=code)))
            continue
        key = (code, c.get("rank", ""), c.get("round", ""))
        if key in seen:
            errors.append((line, msg("positions.unit_round_already_set", code=code,
                                     value=key[1], value2=key[2], value3=seen[key])))
            continue
        seen[key] = line
        try:
            _row, new = set_positions(s, spec, units[code], c.get("rank"),
                                      c.get("round"), c.get("positions", ""),
                                      c.get("note"), by=by, now=now)
        except FieldErrors as exc:
            errors.extend((line, f"{f}: {m}") for f, msgs in exc.errors.items()
                          for m in msgs)
            continue
        created, updated = created + new, updated + (not new)
    if errors:
        raise ImportFailed(sorted(errors))
    return ImportReport(len(rows), created, updated)

