"""Quota pools as a 组织人事 department reads the rules (issue 13, items 1 and 5).

1. 同级人员同台竞技 at the 机关 level: a 机关 of 10 科室 × 5 people. With a pool per 科室
   and a minimum of one, 15 % gave every 科室 one 优秀 — 10 of 50, 20 % where 15 % allows 7.
   Pooled at the 机关 (`unit_depth`) the limit is computed once over the 50: 7 at 15 %, 10 at
   20 % (《公务员考核规定》2020) — however the approvals are split into batches and whoever
   approves them. Small units merged into one pool (`merge_units`), and 好 ratios per tier.
5. The annual 优秀 quota: 20 % by default, raised for a contact point to 25 %, never above
   the definition's ceiling; the bulk approval page's meter shows it (one count for the
   rule, the meter and the ledger).
"""

from __future__ import annotations

import pytest

from workflows.engine import Actor, Engine
from workflows.errors import DefinitionInvalid, RuleViolation
from workflows.org import add_person, add_unit, assign_role
from workflows.spec import load_definition

from .conftest import REGULAR
from .test_scenarios import ANNUAL, DIVISIONS, USERNAME, bureau, start  # noqa: F401

P = Actor.person
QUOTA_LINE = ("      - quota: {field: grade, value: 好, max_ratio: 0.4, rounding: floor, min: 1,\n"
              "                pool: [unit, tier, period], unit_depth: 1}\n")


def probe_flow(name: str, quota: str) -> str:
    """The shipped regular flow under another name, with another quota rule on approve."""
    source = REGULAR.read_text(encoding="utf-8")
    assert source.count(QUOTA_LINE) == 1
    return (source.replace(QUOTA_LINE, f"      - quota: {quota}\n")
            .replace("flow: regular-assessment", f"flow: {name}"))


def machine(db, units: int = 10, people: int = 5) -> dict[str, object]:
    """A 机关 (the root) of `units` 科室 × `people` staff; a leader and two committee
    members at the 机关."""
    with db.unit_of_work() as s:
        root = add_unit(s, "JG", "某局机关")
        lead = add_person(s, "LEAD", "局领导", root, "chief")
        c1 = add_person(s, "C1", "审定一", root, "deputy")
        c2 = add_person(s, "C2", "审定二", root, "deputy")
        assign_role(s, lead, "leader", root)
        assign_role(s, c1, "committee", root)
        assign_role(s, c2, "committee", root)
        staff: dict[str, list[int]] = {}
        for u in range(1, units + 1):
            unit = add_unit(s, f"KS{u:02d}", f"第{u}科", root)
            staff[unit.code] = [add_person(s, f"KS{u:02d}-{i}", f"科员{u}-{i}", unit,
                                           "staff").id for i in range(1, people + 1)]
        return {"lead": lead.id, "c1": c1.id, "c2": c2.id, "staff": staff}


def graded(eng: Engine, flow: str, org: dict, grade_of) -> dict[str, list[int]]:
    """Each staff member's case of 2026-11 brought to 审定 with the grade `grade_of` gives."""
    out: dict[str, list[int]] = {}
    for unit, ids in org["staff"].items():
        for n, pid in enumerate(ids):
            c = eng.start_case(flow, pid, period_key="2026-11")
            eng.fire(c.id, "submit", P(pid), data={"summary": "本月小结"})
            eng.fire(c.id, "evaluate", P(org["lead"]), data={"grade": grade_of(unit, n)})
            eng.fire(c.id, "accept", P(pid))
            out.setdefault(unit, []).append(c.id)
    return out


def first_of_each(unit: str, n: int) -> str:
    return "好" if n == 0 else "较好"


# --------------------------------------------------------------------------- item 1


def test_per_unit_minimum_one_no_longer_inflates_the_pool(db, engine):
    """10 科室 × 5, one 好 proposed in each: per 科室 pools with a minimum of one pass all 10
    at 15 % (20 % of the 机关); pooled at the 机关 the 15 % limit is 7."""
    org = machine(db)
    engine.publish(probe_flow("per-unit", "{field: grade, value: 好, max_ratio: 0.15, "
                                          "pool: [unit, tier, period]}"), "per-unit.yaml")
    engine.publish(probe_flow("pooled", "{field: grade, value: 好, max_ratio: 0.15, min: 0, "
                                        "pool: [unit, tier, period], unit_depth: 1}"),
                   "pooled.yaml")
    per_unit = graded(engine, "per-unit", org, first_of_each)
    done = engine.fire_bulk([i for ids in per_unit.values() for i in ids], "approve",
                            P(org["c1"]))
    assert (len(done.done), len(done.refused)) == (50, 0)  # 10 好 of 50: the old inflation

    pooled = graded(engine, "pooled", org, first_of_each)
    # Approved 科室 by 科室, alternating approvers: the 8th 好 of the 机关 is refused.
    units = sorted(pooled)
    for n, unit in enumerate(units[:7]):
        engine.fire_bulk(pooled[unit], "approve", P(org["c1" if n % 2 else "c2"]))
    with pytest.raises(RuleViolation) as info:
        engine.fire_bulk(pooled[units[7]], "approve", P(org["c1"]))
    d = info.value.details
    assert d["pool"] == {"unit": db_unit(db, "JG"), "tier": "staff", "period": "2026-11"}
    assert (d["size"], d["limit"], d["used"], d["asked"]) == (50, 7, 7, 1)
    assert "limit 7 (15% of 50, floor, at least 0), already used 7, asked 1" in str(info.value)


def db_unit(db, code: str) -> int:
    from sqlalchemy import select

    from workflows.models import Unit

    with db.unit_of_work(write=False) as s:
        return s.execute(select(Unit.id).where(Unit.code == code)).scalar_one()


def test_the_machine_pool_at_twenty_percent_takes_ten_of_fifty_in_one_bulk(db, engine):
    org = machine(db)
    engine.publish(probe_flow("pooled20", "{field: grade, value: 好, max_ratio: 0.2, "
                                          "pool: [unit, tier, period], unit_depth: 1}"),
                   "pooled20.yaml")
    cases = graded(engine, "pooled20", org, lambda unit, n: "好" if n < 2 else "较好")
    ids = [i for u in sorted(cases) for i in cases[u]]
    with pytest.raises(RuleViolation) as info:  # 20 好 asked at once: the whole batch refused
        engine.fire_bulk(ids, "approve", P(org["c1"]))
    assert (info.value.details["limit"], info.value.details["asked"]) == (10, 20)
    keep = [i for u in sorted(cases) for n, i in enumerate(cases[u]) if n != 1]  # one 好 each
    done = engine.fire_bulk(keep, "approve", P(org["c2"]))
    assert len(done.done) == 40
    with pytest.raises(RuleViolation):
        engine.fire(cases["KS01"][1], "approve", P(org["c1"]))


def test_a_minimum_of_one_per_tier_gave_four_of_seven(db, engine):
    """One 科室 of 1 正职, 1 副职, 5 staff, all proposed 好, 40 % per tier: with a minimum of
    one per pool 4 of 7 pass (57 %); with `min: 0` 2 (the staff's 40 % of 5)."""
    def seven(flow: str) -> list[int]:
        ids = []
        for pid in people:
            c = engine.start_case(flow, pid, period_key="2026-11")
            engine.fire(c.id, "submit", P(pid), data={"summary": "本月小结"})
            engine.fire(c.id, "evaluate", P(lead), data={"grade": "好"})
            engine.fire(c.id, "accept", P(pid))
            ids.append(c.id)
        return ids

    with db.unit_of_work() as s:
        root = add_unit(s, "JG", "某局机关")
        ks = add_unit(s, "KS", "一科", root)
        leader = add_person(s, "LEAD", "局领导", root, "chief")
        committee = add_person(s, "C1", "审定一", root, "deputy")
        assign_role(s, leader, "leader", root)
        assign_role(s, committee, "committee", root)
        lead, c1 = leader.id, committee.id
        people = [add_person(s, f"P{i}", f"人员{i}", ks, tier).id for i, tier in
                  enumerate(["chief", "deputy"] + ["staff"] * 5)]
    engine.publish(probe_flow("min-one", "{field: grade, value: 好, max_ratio: 0.4}"), "a.yaml")
    engine.publish(probe_flow("min-zero", "{field: grade, value: 好, max_ratio: 0.4, min: 0}"),
                   "b.yaml")
    for flow, passed in (("min-one", 4), ("min-zero", 2)):
        done = 0
        for cid in seven(flow):
            try:
                engine.fire(cid, "approve", P(c1))
                done += 1
            except RuleViolation:
                pass
        assert done == passed, flow


def test_small_units_merged_into_one_pool_and_ratios_per_tier(db, engine):
    """Two small 科室 form one pool (merge_units); 好 ratios differ per tier."""
    org = machine(db, units=3, people=2)
    engine.publish(probe_flow("merged", "{field: grade, value: 好, rounding: floor, min: 0, "
                                        "max_ratio: {chief: 0.3, deputy: 0.35, staff: 0.5}, "
                                        "pool: [unit, tier, period], "
                                        "merge_units: [[KS01, KS02]]}"), "merged.yaml")
    cases = graded(engine, "merged", org, lambda unit, n: "好")
    # KS01 + KS02: one staff pool of 4 at 50 % → 2; KS03 alone: 2 at 50 % → 1.
    with pytest.raises(RuleViolation) as info:
        engine.fire_bulk(cases["KS01"] + cases["KS02"], "approve", P(org["c1"]))
    d = info.value.details
    assert d["pool"]["unit"] == db_unit(db, "KS01")
    assert (d["size"], d["limit"], d["asked"], d["max_ratio"]) == (4, 2, 4, 0.5)
    engine.fire_bulk(cases["KS01"], "approve", P(org["c1"]))
    with pytest.raises(RuleViolation):  # KS02's 好 share the pool KS01 filled
        engine.fire(cases["KS02"][0], "approve", P(org["c2"]))
    engine.fire(cases["KS03"][0], "approve", P(org["c2"]))
    with pytest.raises(RuleViolation):
        engine.fire(cases["KS03"][1], "approve", P(org["c2"]))


@pytest.mark.parametrize("quota, path, message", [
    ("{field: grade, value: 好, max_ratio: {chief: 0.3, staff: 0.4}}", ".quota.max_ratio",
     "give a ratio for every tier; 'deputy' has none"),
    ("{field: grade, value: 好, max_ratio: {chief: 0.3, deputy: 0.3, staff: 0.4}, "
     "pool: [unit, period]}", ".quota.max_ratio", "a ratio per tier needs tier in pool"),
    ("{field: grade, value: 好, max_ratio: {boss: 0.3, chief: 0.3, deputy: 0.3, staff: 0.4}}",
     ".quota.max_ratio.boss", "unknown tier 'boss'; the tiers are chief, deputy, staff"),
    ("{field: grade, value: 好, max_ratio: 0.4, pool: [tier, period], unit_depth: 1}",
     ".quota.unit_depth", "pools of units need unit in pool"),
    ("{field: grade, value: 好, max_ratio: 0.4, merge_units: [[A, B], [B, C]]}",
     ".quota.merge_units[1][0]", "unit 'B' is already in group 0; a unit is in one pool"),
    ("{field: grade, value: 好, max_ratio: 0.4, unit_depth: 0}", ".quota.unit_depth",
     "Must be greater than or equal to 1 and less than or equal to 20."),
    ("{field: grade, value: 好, max_ratio: 1.5}", ".quota.max_ratio",
     "Must be greater than 0 and less than or equal to 1."),
])
def test_bad_pool_parameters_are_named_by_path(quota, path, message):
    with pytest.raises(DefinitionInvalid) as info:
        load_definition(probe_flow("bad", quota), "bad.yaml")
    found = {(p.path.split(".rules[0]")[-1], p.message) for p in info.value.problems}
    assert (path, message) in found, found


# --------------------------------------------------------------------------- item 5


ANNUAL_QUOTA = "\n          max_ratio: 0.2\n          raised_ratio: 0.25 "


@pytest.mark.parametrize("edit, path, message", [
    (("raised_ratio: 0.25 ", "raised_ratio: 0.3 "), ".excellent_quota.raised_ratio",
     "30% is above the ceiling of 25%; raise the ceiling only with the approval it needs"),
    (("max_ratio: 0.2\n", "max_ratio: 0.26\n"), ".excellent_quota.max_ratio",
     "26% is above the ceiling of 25%; raise the ceiling only with the approval it needs"),
])
def test_the_raise_is_capped_by_the_ceiling(edit, path, message):
    from .conftest import ROOT

    source = (ROOT / "definitions" / "annual-assessment.yaml").read_text(encoding="utf-8")
    with pytest.raises(DefinitionInvalid) as info:
        load_definition(source.replace(*edit), "annual.yaml")
    found = {(p.path.split(".rules[")[-1][2:], p.message) for p in info.value.problems}
    assert (path, message) in found, found


def test_the_annual_defaults_are_the_2020_rules():
    from workflows.domain_rules.annual import ExcellentQuotaParams

    p = ExcellentQuotaParams().load({})
    assert (p["max_ratio"], p["raised_ratio"], p["ceiling"]) == (0.2, 0.25, 0.25)


# --------------------------------------------------------------------------- concurrency


def test_two_approvers_of_different_units_share_one_pool(pg_only_url):
    """Two committee members approve the 好 of two different 科室 at once; the 机关-level
    pool (2 places in 10) takes one batch, never both: the lock is the pool's, not a 科室's."""
    from workflows.db import Database

    from .test_concurrency import _race, _racing_engines

    db = Database(pg_only_url)
    eng = Engine(db)
    org = machine(db, units=2, people=5)
    eng.publish(probe_flow("race", "{field: grade, value: 好, max_ratio: 0.2, "
                                   "pool: [unit, tier, period], unit_depth: 1}"), "race.yaml")
    cases = graded(eng, "race", org, lambda unit, n: "好" if n < 2 else "较好")
    a, b = _racing_engines(pg_only_url)
    results, errors = _race([
        lambda: a.fire_bulk(cases["KS01"][:2], "approve", P(org["c1"])),
        lambda: b.fire_bulk(cases["KS02"][:2], "approve", P(org["c2"])),
    ])
    assert len(results) == 1 and len(errors) == 1, (results, errors)
    assert isinstance(errors[0], RuleViolation)
    assert (errors[0].details["limit"], errors[0].details["used"]) == (2, 2)
    states = sorted(eng.get_case(c).state for u in ("KS01", "KS02") for c in cases[u][:2])
    assert states == ["approval", "approval", "approved", "approved"]
    db.dispose()


# --------------------------------------------------------------------------- the meter


def _web_login(b, username: str) -> None:
    import re

    page = b.http.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = b.http.post("/login", data={"username": username, "password": "civflow-demo",
                                    "csrf_token": token})
    assert r.status_code == 302, r.get_data(as_text=True)


def test_the_bulk_meter_shows_the_annual_excellent_quota(bureau):  # noqa: F811
    """The annual flow's 优秀 quota on the bulk approval page (issue 12: the meter ignored
    it): 20 % of 9 → 1; the pool is the 机关's (unit_depth: 1), so a raised score sheet of
    the division changes nothing and one of the bureau (机关) gives 25 % → 2, as the rule
    says."""
    from workflows import contact_points as cp

    b = bureau
    gwy = DIVISIONS["RSJ-GWY"]
    b.at(2026, 12, 1, 9)
    cases = {code: b.start("owner", ANNUAL, code, "2026") for code in gwy}
    for code in gwy:
        b.act(USERNAME[code], cases[code], "submit", {"summary": "2026 年度述职报告"})
    assert b.bulk("leader1", "record_votes", [cases[c] for c in gwy[1:]])["counts"]["done"] == 8
    b.act("committee1", cases[gwy[0]], "record_votes")
    assert b.bulk("leader1", "evaluate", [cases[c] for c in gwy[1:]],
                  {"grade": "称职"})["counts"]["done"] == 8
    b.act("committee1", cases[gwy[0]], "evaluate", {"grade": "称职"})

    _web_login(b, "committee1")
    url = f"/queue/bulk?flow={ANNUAL}&state=approval&trigger=approve"
    html = b.http.get(url).get_data(as_text=True)
    assert 'data-quota' in html and "优秀" in html
    assert 'data-used="0" data-limit="1"' in html  # 20 % of 9, floor

    with b.db.unit_of_work() as s:
        cp.put_sheet(s, "RSJ-GWY", 2026, {"score": 97, "raised": True}, by=None,
                      now=b.clock.now)
    html = b.http.get(url).get_data(as_text=True)
    assert 'data-used="0" data-limit="1"' in html  # a division: not the pool's unit
    with b.db.unit_of_work() as s:
        cp.put_sheet(s, "RSJ", 2026, {"score": 96, "raised": True}, by=None,
                      now=b.clock.now)
    html = b.http.get(url).get_data(as_text=True)
    assert 'data-used="0" data-limit="2"' in html  # raised: 25 % of 9, floor
    assert "25%" in html and "RSJ 2026 年考核联系点评分 96" in html  # raised for the bureau, by its sheet
    # The ledger reads the same count: the annual flow's grades against its 优秀 quota.
    dist = b.get("owner", "/api/v1/ledger/grades", flow=ANNUAL, period="2026")
    (pool,) = dist["pools"]
    assert pool["quota"] == {"size": 9, "limit": 2, "used": 0, "remaining": 2, "ratio": 0.25,
                             "raised_for": "RSJ"}
    assert b.http.get(f"/ledger?flow={ANNUAL}").status_code == 200


def test_pools_below_the_root_are_matched_on_unit_paths(db, engine, regular):
    """unit_depth: 2 — a 局 (depth 2) pools itself with its 处 below it; the root (depth 1)
    sits above the depth and is a pool of its own. The count matches units on their paths
    (no read of the whole units table): each pool holds exactly its own cases, and the
    figures equal those of mapping every unit first (`merge_units`' way, kept for merges)."""
    from sqlalchemy import text

    from workflows import quotas
    from workflows.actors import Org, OrgNeeds
    from workflows.kernel import SqlFacts
    from workflows.models import Unit, unit_path_ids

    with db.unit_of_work() as s:
        root = add_unit(s, "ROOT", "部")
        b1 = add_unit(s, "B1", "一局", root)
        b2 = add_unit(s, "B2", "二局", root)
        d11 = add_unit(s, "D11", "一局一处", b1)
        d21 = add_unit(s, "D21", "二局一处", b2)
        where = {"root": root, "b1": b1, "b2": b2, "d11": d11, "d21": d21}
        people = {f"{k}{i}": (add_person(s, f"{k.upper()}{i}", f"{k}{i}", u, "staff").id, u.id)
                  for k, u in where.items() for i in range(3)}
        ids = {k: u.id for k, u in where.items()}
        for k, u in where.items():  # each unit's 正职 evaluates its staff (评鉴人)
            assign_role(s, add_person(s, f"{k.upper()}C", f"{k} 正职", u, "chief"), "leader", u)
    good = {"root0", "b10", "d110", "d111", "d210"}
    for code, (pid, _unit) in people.items():
        c = engine.start_case("regular-assessment", pid, period_key="2026-11")
        if code in good:
            with db.unit_of_work() as s:  # a 好 approved, as the count sees it
                s.execute(text("UPDATE cases SET state = 'approved', data = :d WHERE id = :id"),
                          {"d": '{"grade": "好"}', "id": c.id})
    quota = quotas.from_params("quota", "approve", "approved", {
        "field": "grade", "value": "好", "max_ratio": 0.4, "rounding": "floor", "min": 1,
        "pool": ["unit", "tier", "period"], "unit_depth": 2})
    keys = [quotas.pool_key(quota, ids[u], "staff", "2026-11") for u in ("root", "b1", "b2")]
    with db.unit_of_work(write=False) as s:
        heads = quotas.pool_units(s, quota, ids.values())
        got = quotas.usage(s, "regular-assessment", quota, keys)
        # The same pools with every unit mapped first and sent as a list (a merge of none).
        merged = quotas.Quota(**{**quota.__dict__, "merge_units": (("NOSUCH",),)})
        listed = quotas.usage(s, "regular-assessment", merged, keys,
                              quotas.pool_units(s, merged))
    assert heads == {ids["root"]: ids["root"], ids["b1"]: ids["b1"], ids["d11"]: ids["b1"],
                     ids["b2"]: ids["b2"], ids["d21"]: ids["b2"]}
    # An approval knows its case unit's ancestors (read with the case) and maps it alone.
    with db.work(write=False) as w, db.unit_of_work(write=False) as s:
        for unit in ids.values():
            path = s.get(Unit, unit).path
            along = Org([], {unit: unit_path_ids(path)}, OrgNeeds())
            assert SqlFacts(w, along).pool_units(quota, {unit}) == {unit: heads[unit]}
    assert got == listed == {keys[0]: (3, 1), keys[1]: (6, 3), keys[2]: (6, 1)}
