"""Rank positions (职数) per unit, rank and round (workflows/positions.py,
service/api/positions.py) and the `positions` rule reading them: a row governs its unit's
subtree, rows on every level of the path must all fit, the definition is the default
without one; the checks with their numbers, the CSV import, who may read and write, and two
approvals racing for the last table position on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select

from workflows import positions
from workflows.access import load_viewer
from workflows.db import Database
from workflows.engine import Engine
from workflows.errors import FieldErrors, Forbidden, ImportFailed, NotFound, RuleViolation
from workflows.models import RankPositions
from workflows.spec import load_definition

from .conftest import Clock, cst
from .test_concurrency import _race, _racing_engines
from .test_promotion import (
    FLOW,
    PROMOTION,
    SOURCE,
    P,
    _eligible_facts,
    _higher_rank_facts,
    _race_org,
    _to_approval,
)

RANK = "一级主任科员"
ROUND = "2026-1"
NOW = cst(2026, 3, 20, 9)
# The shipped definition without its default positions: the table is the only source.
NO_DEFAULTS = re.sub(r"\n          positions:.*?\n((            .*\n)+)", "\n", SOURCE, count=1)


@pytest.fixture
def flow(db, org, clock):
    engine = Engine(db, clock=clock)
    engine.publish(SOURCE, str(PROMOTION))
    return engine


@pytest.fixture
def clock():
    return Clock(cst(2026, 3, 2, 10))


def spec_of(engine):
    return engine.flow(FLOW).spec


def put(engine, org, unit, n, rank=RANK, round=ROUND, note=None, by="chief"):
    return positions.put(engine.db, spec_of(engine), unit, rank, round, n, note,
                         by=org.ids[by], now=NOW)


def listing(engine, org, who="chief", **filters):
    with engine.db.unit_of_work(write=False) as s:
        viewer = load_viewer(s, org.ids[who])
        return positions.list_positions(s, viewer, spec_of(engine), **filters)


def row_of(engine, org, unit, **kw):
    (row,) = [r for r in listing(engine, org, **kw) if r["unit"]["code"] == unit]
    return row


# --------------------------------------------------------------------------- data


def test_set_change_list_and_delete(flow, db, org):
    row, created = put(flow, org, "ORG", 2, note="省委组织部核定")
    assert created and (row["positions"], row["taken"], row["remaining"]) == (2, 0, 2)
    assert (row["unit"], row["set_by"], row["set_at"]) == (
        {"id": org.units["ORG"], "code": "ORG", "name": "部机关"}, org.chief, NOW)
    row, created = put(flow, org, "ORG", 3, by="c1")
    assert not created and (row["positions"], row["set_by"], row["note"]) == (3, org.c1, None)
    put(flow, org, "SEC1", 1)
    put(flow, org, "SEC2", 1, round="2026-2")
    put(flow, org, "SEC2", 2, rank="二级主任科员")
    assert [(r["unit"]["code"], r["rank"], r["round"], r["positions"])
            for r in listing(flow, org)] == [
        ("ORG", RANK, ROUND, 3), ("SEC1", RANK, ROUND, 1),
        ("SEC2", "二级主任科员", ROUND, 2), ("SEC2", RANK, "2026-2", 1)]
    assert [r["unit"]["code"] for r in listing(flow, org, round="2026-2")] == ["SEC2"]
    assert [r["unit"]["code"] for r in listing(flow, org, rank="二级主任科员")] == ["SEC2"]
    assert [r["unit"]["code"] for r in listing(flow, org, unit_id=org.units["SEC1"])] == [
        "SEC1"]
    positions.remove(db, spec_of(flow), "SEC1", RANK, ROUND)
    assert [r["unit"]["code"] for r in listing(flow, org, round=ROUND, rank=RANK)] == ["ORG"]
    with pytest.raises(NotFound, match="no rank positions set for unit SEC1, 一级主任科员, "
                                       "round 2026-1"):
        positions.remove(db, spec_of(flow), "SEC1", RANK, ROUND)


def test_values_are_checked_with_precise_messages(flow, db, org):
    def refused(**kw):
        args = {"unit": "SEC1", "n": 1} | kw
        with pytest.raises(FieldErrors) as exc:
            put(flow, org, args.pop("unit"), args.pop("n"), **args)
        return exc.value.errors

    ladder = ", ".join(positions.ladder_ranks(spec_of(flow)))
    assert refused(rank="处长") == {"rank": [
        f"处长 is not a rank of the ladder of rank-promotion; known: {ladder}"]}
    assert refused(round="  ") == {"round": ["is required (a promotion round, e.g. 2026-1)"]}
    assert refused(round="x" * 33) == {"round": ["is longer than 32 characters"]}
    assert refused(n=-1) == {"positions": ["must not be negative (got -1)"]}
    assert refused(n="three") == {"positions": ["'three' is not a whole number"]}
    assert refused(n=10_001) == {"positions": ["must be at most 10000 (got 10001)"]}
    assert refused(n=True) == {"positions": ["True is not a whole number"]}
    assert refused(note="长" * 2001) == {"note": ["must be text of at most 2000 characters"]}
    with pytest.raises(NotFound, match="unit 'NOPE' does not exist"):
        put(flow, org, "NOPE", 1)
    with db.unit_of_work(write=False) as s:
        assert s.execute(select(RankPositions)).first() is None  # nothing was written


def test_without_a_published_flow_any_rank_of_64_characters_is_taken(engine, db, org):
    with db.unit_of_work() as s:
        unit = positions.unit_by_code(s, "SEC1")
        row, _ = positions.set_positions(s, None, unit, "处长", ROUND, 1, by=None)
        assert (row["rank"], row["taken"], row["remaining"]) == ("处长", None, None)
        with pytest.raises(FieldErrors, match="rank: is longer than 64 characters"):
            positions.set_positions(s, None, unit, "长" * 65, ROUND, 1, by=None)


# --------------------------------------------------------------------------- the rule


def test_a_row_above_governs_the_whole_subtree(flow, db, org):
    # The definition gives 3 per unit; the bureau's row gives 2 for both sections together.
    row, _ = put(flow, org, "ORG", 2)
    ids = {}
    for who, cat in (("s1", "排头兵"), ("t1", "实干家"), ("s2", "老黄牛")):
        _eligible_facts(db, org, who)
        ids[who] = _to_approval(flow, org, who, category=cat)
    flow.fire(ids["s1"], "approve", P(org.c1))
    flow.fire(ids["t1"], "approve", P(org.c1))
    with pytest.raises(RuleViolation) as exc:
        flow.fire(ids["s2"], "approve", P(org.c1))
    assert str(exc.value) == (
        f"positions (职数) for unit {org.units['ORG']} 部机关 and its sub-units, 一级主任科员, "
        f"round 2026-1: 2 set in rank positions (row {row['id']}), already taken 2, asked 1")
    d = exc.value.details
    assert (d["source"], d["row_id"], d["unit_id"], d["subtree"], d["limit"], d["used"]) == (
        "table", row["id"], org.units["ORG"], True, 2, 2)
    assert flow.get_case(ids["s2"]).state == "approval"
    assert (row_of(flow, org, "ORG")["taken"], row_of(flow, org, "ORG")["remaining"]) == (2, 0)


def test_every_row_on_the_path_must_fit(flow, db, org):
    put(flow, org, "ORG", 3)
    sec1, _ = put(flow, org, "SEC1", 1)  # the section may use only one of the bureau's three
    ids = {}
    for who, cat in (("s1", "排头兵"), ("s2", "实干家"), ("t1", "老黄牛")):
        _eligible_facts(db, org, who)
        ids[who] = _to_approval(flow, org, who, category=cat)
    flow.fire(ids["s1"], "approve", P(org.c1))
    with pytest.raises(RuleViolation) as exc:
        flow.fire(ids["s2"], "approve", P(org.c1))
    assert str(exc.value) == (
        f"positions (职数) for unit {org.units['SEC1']} 干部一科 and its sub-units, 一级主任科员, "
        f"round 2026-1: 1 set in rank positions (row {sec1['id']}), already taken 1, asked 1")
    flow.fire(ids["t1"], "approve", P(org.c1))  # SEC2 has no row of its own: the bureau's
    assert [(r["unit"]["code"], r["taken"], r["remaining"]) for r in listing(flow, org)] == [
        ("ORG", 2, 1), ("SEC1", 1, 0)]


def test_a_table_number_replaces_the_definitions_and_its_thirds(flow, db, org):
    # 4 positions of 四级调研员 (a 较高职级, where 三三制 applies): each category may hold
    # ⌈4/3⌉ = 2 (the definition's 2 would give 1).
    put(flow, org, "SEC1", 4, rank="四级调研员")
    ids = {}
    for who in ("s1", "s2", "s3"):
        _higher_rank_facts(db, org, who)
        ids[who] = _to_approval(flow, org, who, target="四级调研员", category="排头兵")
    flow.fire(ids["s1"], "approve", P(org.c1))
    flow.fire(ids["s2"], "approve", P(org.c1))
    with pytest.raises(RuleViolation) as exc:
        flow.fire(ids["s3"], "approve", P(org.c1))
    assert str(exc.value) == (
        f"三三制: category 排头兵 in unit {org.units['SEC1']} 干部一科 and its sub-units, "
        "四级调研员, round 2026-1 may hold 2 of 4 positions (1/3, rounded up), already 2, "
        "asked 1; give override_reason to exceed it")
    assert exc.value.details["source"] == "table"


def test_other_rounds_and_cases_without_a_round_use_the_definition(flow, db, org):
    put(flow, org, "ORG", 0)  # no position at all in round 2026-1 …
    _eligible_facts(db, org, "s1")
    _eligible_facts(db, org, "s2")
    a = _to_approval(flow, org, "s1")
    with pytest.raises(RuleViolation, match=r"round 2026-1: 0 set in rank positions"):
        flow.fire(a, "approve", P(org.c1))
    flow.fire(a, "refuse", P(org.c1), data={"reject_reason": "本批次无职数"})
    # … but round 2026-2 has no row anywhere on the path: the definition's 3; nor has a
    # case that names no round.
    b = _to_approval(flow, org, "s2", round="2026-2")
    assert flow.fire(b, "approve", P(org.c1)).to_state == "filing"
    c = _to_approval(flow, org, "s1", round=None)
    assert flow.fire(c, "approve", P(org.c1)).to_state == "filing"


def test_a_definition_without_defaults_reads_the_table_only(db, org, clock):
    engine = Engine(db, clock=clock)
    assert "一级科员: 3" not in NO_DEFAULTS and "counted_states: [filing, filed]" in NO_DEFAULTS
    engine.publish(NO_DEFAULTS, "no-defaults.yaml")
    assert load_definition(NO_DEFAULTS, "no-defaults.yaml").flow == FLOW
    _eligible_facts(db, org, "s1")
    cid = _to_approval(engine, org, "s1")
    with pytest.raises(RuleViolation) as exc:
        engine.fire(cid, "approve", P(org.c1))
    assert str(exc.value) == (
        f"positions (职数) for unit {org.units['SEC1']}, 一级主任科员, round 2026-1: 0 (no rank "
        "positions set for this unit or a unit above it, and no default in the definition), "
        "already taken 0, asked 1")
    put(engine, org, "ORG", 1)
    assert engine.fire(cid, "approve", P(org.c1)).to_state == "filing"


def test_positions_cannot_go_below_what_is_taken(flow, db, org):
    put(flow, org, "ORG", 3)
    for who, cat in (("s1", "排头兵"), ("t1", "实干家")):
        _eligible_facts(db, org, who)
        flow.fire(_to_approval(flow, org, who, category=cat), "approve", P(org.c1))
    with pytest.raises(FieldErrors) as exc:
        put(flow, org, "ORG", 1)
    assert exc.value.errors == {"positions": [
        "2 of the positions for unit ORG 部机关, 一级主任科员, round 2026-1 are already taken "
        "(approved promotions); 1 is fewer"]}
    with pytest.raises(FieldErrors) as exc:
        positions.remove(db, spec_of(flow), "ORG", RANK, ROUND)
    assert exc.value.errors["positions"] == [
        "2 of the 3 positions for unit ORG 部机关, 一级主任科员, round 2026-1 are taken by "
        "approved promotions; the row stays as the record of the round (it may be lowered "
        "to 2)"]
    assert row_of(flow, org, "ORG")["positions"] == 3  # unchanged
    row, _ = put(flow, org, "ORG", 2)
    assert (row["taken"], row["remaining"]) == (2, 0)
    # A section's own row counts its own subtree only.
    with pytest.raises(FieldErrors, match="1 of the positions for unit SEC2"):
        put(flow, org, "SEC2", 0)


# --------------------------------------------------------------------------- CSV import


def test_csv_import_is_all_or_nothing(flow, db, org):
    put(flow, org, "SEC1", 1)
    good = ("\ufeffunit_code,rank,round,positions,note\n"
            "ORG,一级主任科员,2026-1,3,省核定\n"
            "SEC1,一级主任科员,2026-1,2,\n"
            "\n"
            "SEC2,二级主任科员,2026-1,1,\n")
    bad = good + ("SEC9,一级主任科员,2026-1,1,\n"
                  "SEC2,处长,2026-1,1,\n"
                  "SEC2,二级主任科员,2026-1,4,\n"
                  "SEC2,一级科员,,x,\n"
                  ",一级科员,2026-1,1,\n")
    with pytest.raises(ImportFailed) as exc:
        positions.import_positions(db, spec_of(flow), bad, by=org.chief, now=NOW)
    ladder = ", ".join(positions.ladder_ranks(spec_of(flow)))
    assert exc.value.errors == [
        (6, "unit 'SEC9' does not exist"),
        (7, f"rank: 处长 is not a rank of the ladder of rank-promotion; known: {ladder}"),
        (8, "unit SEC2, 二级主任科员, round 2026-1 is already set on line 5"),
        (9, "positions: 'x' is not a whole number"),
        (9, "round: is required (a promotion round, e.g. 2026-1)"),
        (10, "unit_code is empty")]
    assert [r["positions"] for r in listing(flow, org)] == [1]  # nothing written
    report = positions.import_positions(db, spec_of(flow), good, by=org.chief, now=NOW)
    assert (report.rows, report.created, report.updated) == (3, 2, 1)
    assert [(r["unit"]["code"], r["rank"], r["positions"], r["note"])
            for r in listing(flow, org)] == [
        ("ORG", RANK, 3, "省核定"), ("SEC1", RANK, 2, None), ("SEC2", "二级主任科员", 1, None)]


@pytest.mark.parametrize("text,message", [
    ("", "the file is empty; the first line must name the columns unit_code, rank, round, "
         "positions, note"),
    ("unit_code,rank,round,seats\n", "unknown column(s) seats; the columns are unit_code, "
                                     "rank, round, positions, note"),
    ("unit_code,rank,positions\n", "missing column(s) round"),
])
def test_csv_header_problems(flow, db, org, text, message):
    with pytest.raises(ImportFailed) as exc:
        positions.import_positions(db, spec_of(flow), text, by=None)
    assert (1, message) in exc.value.errors


# --------------------------------------------------------------------------- who may


def test_who_reads_and_writes(flow, db, org):
    for who in ("c1", "l1", "s1"):
        with db.unit_of_work(write=False) as s:
            viewer = load_viewer(s, org.ids[who])
        with pytest.raises(Forbidden) as exc:
            positions.require_writer(viewer, "setting rank positions (职数)")
        assert exc.value.rule == "needs_admin_or_process_owner"
    put(flow, org, "ORG", 3)
    put(flow, org, "SEC1", 1)
    put(flow, org, "SEC2", 1)
    seen = {who: [r["unit"]["code"] for r in listing(flow, org, who)]
            for who in ("chief", "c1", "l1", "l2")}
    assert seen == {"chief": ["ORG", "SEC1", "SEC2"], "c1": ["ORG", "SEC1", "SEC2"],
                    "l1": ["ORG", "SEC1"], "l2": ["ORG", "SEC2"]}
    with pytest.raises(Forbidden, match="reading rank positions"):
        listing(flow, org, "s1")


# --------------------------------------------------------------------------- HTTP

URL = "/api/v1/rank-positions"


@pytest.fixture
def papi(api, engine):
    assert "rank_positions" in api.client.application.blueprints
    engine.publish(SOURCE, str(PROMOTION))
    engine.clock = lambda: NOW
    return api


def test_http_set_list_delete(papi):
    org = papi.org
    r = papi.put("admin", f"{URL}/ORG/一级主任科员/2026-1", json={"positions": 3, "note": "核定"})
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert (body["positions"], body["taken"], body["remaining"], body["set_by"]) == (
        3, 0, 3, org.admin)
    assert body["set_at"].startswith("2026-03-20T01:00:00")
    r = papi.put("owner", f"{URL}/ORG/一级主任科员/2026-1", json={"positions": 4})
    assert r.status_code == 200 and r.get_json()["set_by"] == org.owner
    assert papi.put("owner", f"{URL}/SEC2/一级主任科员/2026-1",
                    json={"positions": 1}).status_code == 201
    out = papi.get("l1", URL).get_json()
    assert (out["total"], [i["unit"]["code"] for i in out["items"]]) == (1, ["ORG"])
    out = papi.get("owner", f"{URL}?unit_id={org.units['SEC2']}&round=2026-1").get_json()
    assert [i["unit"]["code"] for i in out["items"]] == ["SEC2"]
    assert papi.get("owner", f"{URL}?rank=一级科员").get_json()["items"] == []
    assert papi.delete("admin", f"{URL}/SEC2/一级主任科员/2026-1").status_code == 204
    assert papi.delete("admin", f"{URL}/SEC2/一级主任科员/2026-1").status_code == 404


def test_http_refusals(papi):
    r = papi.put("admin", f"{URL}/ORG/处长/2026-1", json={"positions": 1})
    assert r.status_code == 422 and r.get_json()["fields"]["rank"][0].startswith(
        "处长 is not a rank of the ladder of rank-promotion; known: 一级巡视员, ")
    r = papi.put("admin", f"{URL}/ORG/一级主任科员/2026-1", json={"positions": -2})
    assert r.get_json()["fields"] == {"positions": ["must not be negative (got -2)"]}
    r = papi.put("admin", f"{URL}/ORG/一级主任科员/2026-1", json={"positions": "2"})
    assert r.status_code == 422
    assert r.get_json()["fields"] == {"json.positions": ["Not a valid integer."]}
    assert papi.put("admin", f"{URL}/NOPE/一级主任科员/2026-1",
                    json={"positions": 1}).status_code == 404
    for who in ("l1", "c1", "s1"):
        r = papi.put(who, f"{URL}/ORG/一级主任科员/2026-1", json={"positions": 1})
        assert r.status_code == 403, who
        assert r.get_json()["rule"] == "needs_admin_or_process_owner"
    assert papi.get("s1", URL).status_code == 403
    assert papi.get("owner", f"{URL}?unit_id=99999").status_code == 404


def test_http_import(papi):
    csv = "unit_code,rank,round,positions\nORG,一级主任科员,2026-1,3\nSEC1,一级科员,2026-1,-1\n"
    r = papi.post("owner", f"{URL}/import", json={"csv": csv})
    assert r.status_code == 422
    assert r.get_json()["errors"] == [
        {"line": 3, "message": "positions: must not be negative (got -1)"}]
    r = papi.post("owner", f"{URL}/import", json={"csv": csv.replace("-1", "2")})
    assert r.status_code == 200 and r.get_json() == {"rows": 2, "created": 2, "updated": 0}
    assert papi.post("l1", f"{URL}/import", json={"csv": csv}).status_code == 403


# --------------------------------------------------------------------------- the race


def test_two_approvals_race_for_the_last_table_position(pg_only_url):
    db = Database(pg_only_url)
    try:
        eng = Engine(db)
        eng.publish(SOURCE, str(PROMOTION))  # the definition would allow 3 …
        org = _race_org(db)
        positions.put(db, eng.flow(FLOW).spec, "ORG", RANK, ROUND, 1, by=None,
                      now=dt.datetime.now(dt.UTC))  # … the bureau's row allows 1
        cases = []
        for who, cat in (("s1", "排头兵"), ("s2", "实干家")):
            _eligible_facts(db, org, who)
            cases.append(_to_approval(eng, org, who, category=cat))
        a, b = _racing_engines(pg_only_url)
        results, errors = _race([
            lambda: a.fire(cases[0], "approve", P(org.c1)),
            lambda: b.fire(cases[1], "approve", P(org.c2)),
        ])
        assert len(results) == 1 and len(errors) == 1, (results, errors)
        assert isinstance(errors[0], RuleViolation) and errors[0].rule == "positions"
        d = errors[0].details
        assert (d["source"], d["limit"], d["used"], d["subtree"]) == ("table", 1, 1, True)
        assert sorted(eng.get_case(c).state for c in cases) == ["approval", "filing"]
        for e in (a, b):
            e.db.dispose()
    finally:
        db.dispose()


def test_schemathesis_over_positions_and_the_eligibility_list(papi):
    """Generated requests (valid and invalid) with the promotion flow published and rows
    set: no 500, and every JSON response fits the document."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    papi.put("admin", f"{URL}/ORG/一级主任科员/2026-1", json={"positions": 3})
    headers = papi.headers("admin")
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", papi.client.application,
                                            headers=headers)
    ops = [r.ok() for r in schema.get_all_operations()
           if r.ok().path.startswith((URL, "/api/v1/ledger/eligibility"))]
    assert len(ops) == 5  # GET list, PUT and DELETE one, POST import; the eligibility list
    failures = []
    for op in ops:
        @given(case=op.as_strategy())
        @settings(max_examples=25, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            case.call_and_validate(headers=headers,
                                   checks=[not_a_server_error, response_schema_conformance])

        try:
            run()
        except Exception as exc:  # noqa: BLE001 - collected, reported together below
            failures.append(f"{op.method.upper()} {op.path}: {exc}")
    assert not failures, "\n\n".join(failures)
