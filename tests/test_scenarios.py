"""Scenarios over a quarter and a year on the demo bureau, through the HTTP API only, with
a controlled clock driving the cycles and the timer worker. On SQLite and PostgreSQL.

The bureau is `civflow demo`'s organisation and facts (workflows/demo: 30 people, the annual
results of 2024–2025, exams, the 警告 of 黄俊杰), without its replayed history: each scenario
makes its own. People act as their demo accounts (staff01…24, leader1…3, committee1,
owner, admin); tokens are issued directly, since a password login costs an Argon2 hash each
(test_demo.py logs in).

1. 平时考核, 2026 Q3: the cycle opens July, August and September; everyone writes weekly
   records and submits; the leaders grade (some 好, in bulk for the rest); feedback is
   accepted by the person or, for the silent, by the 5-working-day timer (across the
   National Day holiday in October); at the quarter's end the committee approves unit by
   unit — 公务员管理处 is refused for the 好 quota of September, one case is sent back and
   regraded, and it passes. The ledger shows the grades and the 好 counts.
2. 年度考核 2026 in 公务员管理处, in December: a 优秀 candidate blocked by the regular
   results, two passing it, the public notice passing by itself, one 优秀 within the 20 %
   quota and the other refused and regraded, the written result acknowledged, the grade
   written back into the person's facts.
3. 职级晋升 round 2026-2: two positions of 一级主任科员 for the bureau; candidates refused
   with their reasons (theory exam, years with the 优秀 bonus, a sanction in its effect
   period, the last annual result), the eligible ones through vetting and the notice, two
   approvals take the positions and the third is refused with the numbers; filing writes
   the new rank back.
4. 下沉一线: a 第一书记 whose term ends by itself, then summary → the receiving side's
   evaluation → feedback accepted by the timer → approval; the outcome as
   `workflows.dispatch.dispatch_outcomes` gives it to the promotion rules.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from service.app import create_app
from service.cli import main
from workflows import demo
from workflows.accounts import BEARER, issue_token
from workflows.cycles import open_due_periods
from workflows.db import Database
from workflows.dispatch import dispatch_outcomes, shortfalls
from workflows.engine import Engine, utcnow
from workflows.models import Person, Unit, User
from workflows.org import read_rows
from workflows.timers import TimerWorker

from .conftest import ROOT, Clock, cst

FLOWS = sorted(f for f in (ROOT / "definitions").glob("*.yaml") if f.name != "calendar.yaml")
REGULAR, ANNUAL, PROMOTION, DISPATCH = ("regular-assessment", "annual-assessment",
                                        "rank-promotion", "frontline-dispatch")
USERNAME = {r.person_code: r.username for r in
            read_rows(demo.PEOPLE_CSV.read_text(encoding="utf-8"))[0] if r.person_code}
DIVISION_LEADER = {"RSJ-GWY": "leader1", "RSJ-KHJC": "leader2", "RSJ-GZFL": "leader3"}
HEAD = "RS0001"  # 陈建国, deputy head: nobody in the bureau evaluates his own cases
# Nobody evaluates them in the demo bureau (who evaluates whom, workflows/actors.py): the
# deputy head, and 林晓燕, a 副职 at the bureau level whom only a 主要负责人 would grade.
UNEVALUATED = (HEAD, "RS0002")
DIVISIONS = {  # unit code → its people (chief first)
    "RSJ-GWY": [f"RS01{i:02d}" for i in range(1, 10)],
    "RSJ-KHJC": [f"RS02{i:02d}" for i in range(1, 10)],
    "RSJ-GZFL": [f"RS03{i:02d}" for i in range(1, 10)],
}
ASSESSED = ["RS0003"] + [c for people in DIVISIONS.values() for c in people]


@dataclass
class Bureau:
    """The service on the demo bureau, on a controlled clock."""

    http: Any
    db: Database
    engine: Engine
    clock: Clock
    people: dict[str, int]  # person code → id
    units: dict[str, int]  # unit code → id
    users: dict[str, int]  # username → user id
    tokens: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ time

    def at(self, *when: int) -> None:
        moment = cst(*when)
        assert moment >= self.clock.now, "the clock only moves forward"
        self.clock.now = moment

    def tick(self, *when: int) -> None:
        """The scheduler's timer tick at that moment."""
        self.at(*when)
        TimerWorker(self.engine).tick()

    def open_cycles(self, *when: int) -> list[tuple[str, str, int]]:
        self.at(*when)
        return open_due_periods(self.engine)

    # ------------------------------------------------------------------ HTTP

    def headers(self, who: str, version: int | None = None) -> dict[str, str]:
        if who not in self.tokens:
            self.tokens[who], _ = issue_token(self.db, self.users[who], BEARER,
                                              dt.timedelta(hours=2), utcnow())
        h = {"Authorization": f"Bearer {self.tokens[who]}"}
        return h | ({"If-Match": f'"{version}"'} if version is not None else {})

    def get(self, who: str, url: str, **query) -> Any:
        r = self.http.get(url, headers=self.headers(who), query_string=query)
        assert r.status_code == 200, (who, url, r.json)
        return r.json

    def case(self, cid: int, who: str = "owner") -> dict[str, Any]:
        return self.get(who, f"/api/v1/cases/{cid}")

    def history(self, cid: int) -> list[dict[str, Any]]:
        return self.get("owner", f"/api/v1/cases/{cid}/history")

    def act(self, who: str, cid: int, trigger: str, data: dict | None = None,
            comment: str | None = None, status: int = 200) -> dict[str, Any]:
        version = self.case(cid, "owner")["version"]
        body: dict[str, Any] = {"data": data or {}}
        if comment:
            body["comment"] = comment
        r = self.http.post(f"/api/v1/cases/{cid}/actions/{trigger}",
                           headers=self.headers(who, version), json=body)
        assert r.status_code == status, (who, cid, trigger, r.json)
        return r.json

    def bulk(self, who: str, trigger: str, ids: list[int], data: dict | None = None,
             comment: str | None = None, status: int = 200) -> dict[str, Any]:
        body: dict[str, Any] = {"trigger": trigger, "case_ids": ids, "data": data or {}}
        if comment:
            body["comment"] = comment
        r = self.http.post("/api/v1/queue/bulk", headers=self.headers(who), json=body)
        assert r.status_code == status, (who, trigger, r.json)
        return r.json

    def start(self, who: str, flow: str, code: str, period: str | None = None) -> int:
        body: dict[str, Any] = {"flow": flow, "subject_id": self.people[code]}
        if period:
            body["period_key"] = period
        r = self.http.post("/api/v1/cases", headers=self.headers(who), json=body)
        assert r.status_code == 201, (who, flow, code, r.json)
        return r.json["id"]

    def queue(self, who: str, **query) -> list[dict[str, Any]]:
        body = self.get(who, "/api/v1/queue", per_page=200, **query)
        assert body["total"] == len(body["items"])
        return body["items"]

    def cases(self, flow: str, **query) -> dict[str, int]:
        """Person code → case id, for the cases of a flow (one period) the owner sees."""
        body = self.get("owner", "/api/v1/cases", flow=flow, per_page=200, **query)
        code = {pid: c for c, pid in self.people.items()}
        return {code[item["subject"]["id"]]: item["id"] for item in body["items"]}

    def facts(self, code: str) -> dict[str, Any]:
        return self.get("admin", f"/api/v1/facts/people/{self.people[code]}")


@pytest.fixture
def start() -> dt.datetime:
    """When the flows are published: the clock starts there."""
    return cst(2026, 6, 20, 9)


@pytest.fixture
def bureau(db_url, start):
    db = Database(db_url)
    clock = Clock(start)
    engine = Engine(db, clock=clock)
    for f in FLOWS:
        engine.publish(f.read_text(encoding="utf-8"), str(f))
    demo.load(db, with_history=False)
    with db.unit_of_work(write=False) as s:
        people = dict(s.execute(select(Person.code, Person.id)).all())
        units = dict(s.execute(select(Unit.code, Unit.id)).all())
        users = dict(s.execute(select(User.username, User.id)).all())
    app = create_app(db.url, config={"TESTING": True, "SECRET_KEY": "test"}, engine=engine)
    client = app.test_client()
    # messages in English: the scenarios read them so (tests/test_messages.py: Chinese)
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    yield Bureau(client, db, engine, clock, people, units, users)
    db.dispose()


# --------------------------------------------------------------------------- 平时考核


@dataclass(frozen=True)
class Month:
    key: str
    opens: tuple[int, ...]
    fridays: tuple[tuple[int, ...], tuple[int, ...]]
    submit: tuple[int, ...]
    evaluate: tuple[int, ...]
    accept: tuple[int, ...]
    auto_due: tuple[int, ...]  # end of the 5th working day after the evaluation
    good: tuple[str, ...]  # 好, given one by one by the leader
    weak: dict[str, str] = field(default_factory=dict)  # 一般, with the comment required
    silent: tuple[str, ...] = ("RS0107", "RS0208")  # accepted by the timer


Q3 = [
    Month("2026-07", (2026, 7, 1, 8), ((2026, 7, 17, 15), (2026, 7, 24, 15)), (2026, 7, 31, 16),
          (2026, 8, 3, 10), (2026, 8, 4, 10), (2026, 8, 11),
          good=("RS0103", "RS0109", "RS0102", "RS0205", "RS0209", "RS0303")),
    Month("2026-08", (2026, 8, 1, 8), ((2026, 8, 14, 15), (2026, 8, 21, 15)), (2026, 8, 31, 16),
          (2026, 9, 2, 10), (2026, 9, 3, 10), (2026, 9, 10),
          good=("RS0103", "RS0109", "RS0205", "RS0209", "RS0303"),
          weak={"RS0106": "8 月两项报表逾期报送，需加强时限意识。"}),
    # Evaluated on Thursday 8 October, after the National Day holiday (1–7 October): the
    # 5 working days are 9, 10 (a make-up Saturday), 12, 13 and 14 October.
    Month("2026-09", (2026, 9, 1, 8), ((2026, 9, 11, 15), (2026, 9, 18, 15)), (2026, 9, 30, 16),
          (2026, 10, 8, 10), (2026, 10, 9, 10), (2026, 10, 15),
          # 9 staff of the bureau graded 好: one over the 机关's limit (40 % of 21 → 8)
          good=("RS0103", "RS0109", "RS0105", "RS0108", "RS0205", "RS0206", "RS0209",
                "RS0303", "RS0306", "RS0201")),
]


def evaluator(code: str) -> str:
    """The chiefs and the bureau's own staff are evaluated by the bureau's leader."""
    for unit, people in DIVISIONS.items():
        if code in people[1:]:
            return DIVISION_LEADER[unit]
    return "committee1"


def open_month(b: Bureau, m: Month) -> dict[str, int]:
    # Every active person but those nobody evaluates: the cycle skips them (and logs it);
    # other cycle flows may open their own too.
    opened = b.open_cycles(*m.opens)
    assert [o for o in opened if o[0] == REGULAR] == [(REGULAR, m.key, len(ASSESSED))]
    return b.cases(REGULAR, period=m.key)


def write_month(b: Bureau, m: Month, cases: dict[str, int]) -> None:
    """周记实 on two Fridays, then the summary at the month's end."""
    for n, friday in enumerate(m.fridays, 1):
        b.at(*friday)
        for code in ASSESSED:
            iso = cst(*friday).isocalendar()
            b.act(USERNAME[code], cases[code], "record_week", {"weekly_records": [
                {"week": f"{iso.year}-W{iso.week:02d}", "content": f"第{n}周：完成本岗位重点工作。"}]})
    b.at(*m.submit)
    for code in ASSESSED:
        b.act(USERNAME[code], cases[code], "submit", {
            "summary": f"{m.key} 月度小结：按期完成各项任务。",
            "individual_indicators": [{"indicator": "重点任务", "target": "按期完成",
                                       "actual": "已完成"}]})


def grade_month(b: Bureau, m: Month, cases: dict[str, int]) -> None:
    """The leaders grade: 好 and 一般 one by one, 较好 for the rest of their queue in bulk;
    the people accept, the silent ones are accepted by the timer."""
    b.at(*m.evaluate)
    for code in m.good:
        b.act(evaluator(code), cases[code], "evaluate",
              {"grade": "好", "evaluation_comment": "工作成效突出。"})
    for code, comment in m.weak.items():
        missing = b.act(evaluator(code), cases[code], "evaluate", {"grade": "一般"}, status=422)
        assert missing["rule"] == "required_when"
        b.act(evaluator(code), cases[code], "evaluate",
              {"grade": "一般", "evaluation_comment": comment})
    for leader in ("leader1", "leader2", "leader3", "committee1"):
        rest = [i["id"] for i in b.queue(leader, flow=REGULAR, period=m.key, state="evaluation")]
        done = b.bulk(leader, "evaluate", rest, {"grade": "较好"})
        assert done["counts"] == {"done": len(rest), "refused": 0}
    assert all(b.case(cases[c])["state"] == "feedback" for c in ASSESSED)
    b.at(*m.accept)
    for code in ASSESSED:
        if code not in m.silent:
            b.act(USERNAME[code], cases[code], "accept")
    # Five working days of silence count as acceptance: not a minute before.
    due = cst(*m.auto_due)
    b.tick(*(due - dt.timedelta(minutes=1)).timetuple()[:5])
    assert [b.case(cases[c])["state"] for c in m.silent] == ["feedback"] * len(m.silent)
    b.tick(*(due + dt.timedelta(minutes=1)).timetuple()[:5])
    for code in m.silent:
        last = b.history(cases[code])[-1]
        assert (last["trigger"], last["actor_role"], last["at"]) == (
            "accept", "system", (due + dt.timedelta(minutes=1)).astimezone(dt.UTC).isoformat())
    assert all(b.case(cases[c])["state"] == "approval" for c in ASSESSED)


def regular_quarter(b: Bureau) -> dict[str, dict[str, int]]:
    """Q3 2026 up to the committee's approval; returns month → person code → case id."""
    jul, aug, sep = Q3
    cases = {jul.key: open_month(b, jul)}
    write_month(b, jul, cases[jul.key])
    cases[aug.key] = open_month(b, aug)
    grade_month(b, jul, cases[jul.key])
    write_month(b, aug, cases[aug.key])
    cases[sep.key] = open_month(b, sep)
    grade_month(b, aug, cases[aug.key])
    write_month(b, sep, cases[sep.key])
    grade_month(b, sep, cases[sep.key])

    # 季审定, Friday 16 October: the whole 机关 at once, from the committee's queue (every
    # case but the deputy head's, which wait for him). The 好 quota pools 同级 across the
    # 机关: September's 21 staff (RS0003 and three 处室) may have 8.
    b.at(2026, 10, 16, 10)
    rsj = b.units["RSJ"]
    waiting = [i["id"] for i in b.queue("committee1", flow=REGULAR, state="approval")]
    assert len(waiting) == 84 == 3 * len(ASSESSED)
    refused = b.bulk("committee1", "approve", waiting, comment="第三季度审定", status=422)
    assert refused["rule"] == "quota"
    assert refused["details"]["pool"] == {"unit": rsj, "tier": "staff", "period": "2026-09"}
    assert (refused["details"]["size"], refused["details"]["limit"], refused["details"]["used"],
            refused["details"]["asked"]) == (21, 8, 0, 9)
    assert refused["message"] == (
        f"quota for Grade=好 in pool period=2026-09, tier=staff, unit={rsj}: limit 8 "
        "(40% of 21, floor, at least 1), already used 0, asked 9")
    assert sorted(refused["details"]["case_ids"]) == sorted(
        cases["2026-09"][c] for c in ("RS0103", "RS0105", "RS0108", "RS0109", "RS0205",
                                      "RS0206", "RS0209", "RS0303", "RS0306"))
    assert all(b.case(c)["state"] == "approval" for c in waiting)  # the whole batch refused
    # Corrected: the committee sends 赵雪梅's September back, the leader regrades it.
    sent = cases["2026-09"]["RS0105"]
    b.act("committee1", sent, "send_back", comment="好等次超过同级人员 40%，请重新评鉴")
    b.at(2026, 10, 16, 11)
    b.act("leader1", sent, "evaluate", {"grade": "较好", "evaluation_comment": "经审定调整。"})
    b.at(2026, 10, 16, 14)
    b.act("staff04", sent, "accept")
    b.at(2026, 10, 16, 15)
    done = b.bulk("committee1", "approve", waiting, comment="第三季度审定")
    assert done["counts"] == {"done": 84, "refused": 0}
    assert b.queue("committee1", flow=REGULAR, state="approval") == []
    return cases


GOOD_2026 = {"RS0103": 3, "RS0109": 3, "RS0102": 1, "RS0108": 1, "RS0205": 3, "RS0206": 1,
             "RS0209": 3, "RS0303": 3, "RS0306": 1,
             "RS0201": 1}  # everyone else: 0 of 3


def check_the_quarter(b: Bureau, cases: dict[str, dict[str, int]]) -> None:
    gwy = b.units["RSJ-GWY"]
    dist = b.get("owner", "/api/v1/ledger/grades", flow=REGULAR, period_from="2026-07",
                 period_to="2026-09", unit_id=gwy)
    assert dist["totals"] == {"好": 8, "较好": 18, "一般": 1, "较差": 0}
    # 公务员管理处's share of the 机关's pools; each quota is the whole pool's.
    pools = {(p["tier"], p["period"]): p for p in dist["pools"]}
    assert len(pools) == 9  # 正职, 副职, 一般干部 × three months
    assert {p["unit"]["id"] for p in dist["pools"]} == {b.units["RSJ"]}
    sep = pools[("staff", "2026-09")]
    assert sep["size"] == 7 and sep["approved"] == {"好": 3, "较好": 4, "一般": 0, "较差": 0}
    assert sep["quota"] == {"size": 21, "limit": 8, "used": 8, "remaining": 0}
    # Four deputies assessed in the 机关 (林晓燕 has no evaluator: 40 % → max(1, 1) = 1),
    # one 好 in July (RS0102), which uses it.
    assert pools[("deputy", "2026-07")]["quota"] == {"size": 4, "limit": 1, "used": 1,
                                                     "remaining": 0}
    good = b.get("owner", "/api/v1/ledger/good-counts", flow=REGULAR, year=2026)
    counts = {p["person"]["code"]: (p["good"], p["results"]) for p in good["people"]}
    assert counts == {c: (GOOD_2026.get(c, 0), 3) for c in ASSESSED}  # not 陈建国
    # The silent ones were accepted by the timer every month; 赵雪梅's September shows the
    # send-back and the regrading.
    steps = [(h["trigger"], h["actor_role"]) for h in b.history(cases["2026-09"]["RS0105"])]
    assert steps == [("start", "system"), ("record_week", "subject"),
                     ("record_week", "subject"), ("submit", "subject"),
                     ("evaluate", "evaluator"), ("accept", "subject"),
                     ("send_back", "committee"), ("evaluate", "evaluator"),
                     ("accept", "subject"), ("approve", "committee")]
    weeks = b.case(cases["2026-08"]["RS0104"])["data"]["weekly_records"]
    assert [w["week"] for w in weeks] == ["2026-W33", "2026-W34"]
    # Nobody in the bureau evaluates the deputy head or 林晓燕: no case was opened to sit
    # unowned (the cycle skipped them).
    assert all(not set(UNEVALUATED) & set(cases[k]) for k in cases)


# --------------------------------------------------------------------------- 年度考核


def annual_assessment(b: Bureau) -> dict[str, int]:
    """公务员管理处's annual assessment of 2026, in December."""
    gwy = DIVISIONS["RSJ-GWY"]
    b.at(2026, 12, 1, 9)
    cases = {code: b.start("owner", ANNUAL, code, "2026") for code in gwy}
    b.at(2026, 12, 2, 10)
    for code in gwy:
        b.act(USERNAME[code], cases[code], "submit", {"summary": "2026 年度述职报告"})
    b.at(2026, 12, 3, 10)
    votes = {"votes_excellent": 14, "votes_competent": 6, "votes_basic": 0,
             "votes_incompetent": 0, "democratic_score": "93.5"}
    for code in ("RS0109", "RS0103", "RS0102"):
        b.act("leader1", cases[code], "record_votes", votes)
    rest = [cases[c] for c in gwy[3:] if c != "RS0109"]
    assert b.bulk("leader1", "record_votes", rest)["counts"] == {"done": 5, "refused": 0}
    b.act("committee1", cases["RS0101"], "record_votes")  # the 处长: the bureau's committee

    b.at(2026, 12, 4, 10)
    # 优秀 needs 好 in more than half of the year's regular results (here the quarter's 3).
    blocked = b.act("leader1", cases["RS0102"], "propose_excellent", {"grade": "优秀"},
                    status=422)
    assert blocked["rule"] == "regular_linkage"
    assert blocked["message"] == (f"case {cases['RS0102']}: 优秀 for 2026 needs 2 好 of 3 "
                                  "regular results, has 1")
    b.act("leader1", cases["RS0102"], "evaluate", {"grade": "称职"})
    for code in ("RS0109", "RS0103"):
        moved = b.act("leader1", cases[code], "propose_excellent",
                      {"grade": "优秀", "verification_note": "经了解核实，平时考核三个月均为好"})
        assert moved["to"] == "public_notice"
    others = [cases[c] for c in ("RS0104", "RS0105", "RS0106", "RS0107", "RS0108")]
    assert b.bulk("leader1", "evaluate", others, {"grade": "称职"})["counts"]["done"] == 5
    b.act("committee1", cases["RS0101"], "evaluate", {"grade": "称职"})

    # 公示 of at least 5 working days from Friday 4 December: 7–11 December.
    b.tick(2026, 12, 11, 23, 59)
    assert [b.case(cases[c])["state"] for c in ("RS0109", "RS0103")] == ["public_notice"] * 2
    b.tick(2026, 12, 12, 0, 1)
    for code in ("RS0109", "RS0103"):
        last = b.history(cases[code])[-1]
        assert (last["trigger"], last["actor_role"], last["to"]) == ("notice_passed", "system",
                                                                     "approval")

    # 审定: one 优秀 in 9 (20 %, rounded down, at least 1: 《公务员考核规定》2020); the pool
    # is the 机关's, of which only 公务员管理处 has annual cases here.
    b.at(2026, 12, 14, 10)
    assert b.act("committee1", cases["RS0109"], "approve")["to"] == "result"
    over = b.act("committee1", cases["RS0103"], "approve", status=422)
    assert over["rule"] == "excellent_quota"
    assert over["message"] == (
        "quota for Grade=优秀 in pool period=2026, "
        f"unit={b.units['RSJ']}: limit 1 (20% of 9, floor, at least 1), already used 1, "
        "asked 1")
    b.act("committee1", cases["RS0103"], "send_back", comment="优秀等次名额已满")
    b.act("leader1", cases["RS0103"], "evaluate", {"grade": "称职"})
    waiting = [i["id"] for i in b.queue("committee1", flow=ANNUAL)]
    assert sorted(waiting) == sorted(cases[c] for c in gwy if c != "RS0109")
    assert b.bulk("committee1", "approve", waiting)["counts"] == {"done": 8, "refused": 0}

    # The written result, acknowledged (签收); the grade is in the person's facts.
    b.at(2026, 12, 15, 9)
    assert b.act("staff08", cases["RS0109"], "acknowledge")["to"] == "appeal_window"
    results = {(r["year"], r["grade"], r["source"]) for r in
               b.facts("RS0109")["annual_results"]}
    assert results == {(2024, "称职", "import"), (2025, "称职", "import"),
                       (2026, "优秀", "flow")}
    for code in gwy:
        (mine,) = [r for r in b.facts(code)["annual_results"] if r["year"] == 2026]
        assert (mine["grade"], mine["source"]) == ("优秀" if code == "RS0109" else "称职",
                                                   "flow")
    return cases


# --------------------------------------------------------------------------- 职级晋升


CANDIDATES = {  # person code → target rank (no 三三制 category: not a 较高职级)
    "RS0104": "一级主任科员",  # 刘思远, 公务员管理处
    "RS0205": "一级主任科员",  # 高婷婷, 考核奖惩处
    "RS0304": "一级主任科员",  # 冯子涵, 工资福利处
    "RS0305": "一级主任科员",  # 邓伟: failed the theory exam, not asked below 调研员
    "RS0109": "一级科员",  # 徐佳怡: 二级科员 since August 2025, 优秀 in 2026
    "RS0107": "四级主任科员",  # 周雨涵: 诫勉 in November
    "RS0207": "三级主任科员",  # 罗晓琳: 基本称职 in 2025 (facts.csv)
}
DECIDED = "2026-12-21"


def promotion_round(b: Bureau) -> None:
    # The bureau's positions for the round: two of 一级主任科员, for all its divisions.
    b.at(2026, 12, 15, 11)
    r = b.http.put("/api/v1/rank-positions/RSJ/一级主任科员/2026-2",
                   headers=b.headers("owner"), json={"positions": 2, "note": "2026 年第二批"})
    assert r.status_code == 201, r.json
    row = r.json["id"]
    r = b.http.post("/api/v1/facts/sanctions", headers=b.headers("admin"), json={
        "person_id": b.people["RS0107"], "kind": "诫勉", "decided_on": "2026-11-10"})
    assert r.status_code == 201, r.json

    b.at(2026, 12, 16, 10)  # 动议, by each division's leader: eligibility is judged first
    reasons = {
        "RS0109": "needs 2.0 years in 二级科员, has 1.8 (1 优秀 year counted)",
        "RS0107": "sanction 诫勉 decided 2026-11-10 is in effect until 2027-05-10",
        "RS0207": "needs 2.0 years in 四级主任科员, has 1.7 (0 优秀 years counted; not "
                  "counted: 2025 (基本称职)); last annual result 基本称职 (2025) is below 称职",
    }
    cases = {}
    for code, rank in CANDIDATES.items():
        cases[code] = b.start(evaluator(code), PROMOTION, code)
        data = {"target_rank": rank, "round": "2026-2"}
        if code in reasons:
            refused = b.act(evaluator(code), cases[code], "propose", data, status=422)
            assert refused["rule"] == "promotion_eligible"
            assert refused["message"] == (
                f"case {cases[code]}: person {b.people[code]} is not eligible for "
                f"{rank} on 2026-12-16: {reasons[code]}")
            b.act("committee1", cases[code], "withdraw", {"reject_reason": reasons[code]})
            assert b.case(cases[code])["state"] == "rejected"
        else:
            b.act(evaluator(code), cases[code], "propose", data)
    b.at(2026, 12, 17, 16)  # 民主推荐, recorded by 干部科 (owner, group hr-office)
    codes = [c for c in CANDIDATES if c not in reasons]
    assert codes == ["RS0104", "RS0205", "RS0304", "RS0305"]
    done = b.bulk("owner", "record_votes", [cases[c] for c in codes],
                  {"votes_cast": 30, "votes_for": 26, "votes_against": 4})
    assert done["counts"] == {"done": 4, "refused": 0}

    b.at(2026, 12, 21, 10)  # 人选确定: the rule judges each again on the decision date
    for code in codes:
        assert b.act("committee1", cases[code], "confirm",
                     {"decision_date": DECIDED})["to"] == "vetting"
    b.at(2026, 12, 22, 10)
    for code in codes:
        b.act("committee1", cases[code], "pass", {"vetting_opinion": "德才表现好，群众公认",
                                                   "personal_matters_checked": True})
    # 公示 from Tuesday 22 December: 23, 24, 25, 28, 29 December.
    b.tick(2026, 12, 29, 23, 59)
    assert {b.case(cases[c])["state"] for c in codes} == {"public_notice"}
    b.tick(2026, 12, 30, 0, 1)
    assert {b.case(cases[c])["state"] for c in codes} == {"approval"}

    b.at(2026, 12, 30, 10)  # 审批: two positions for three candidates
    assert b.act("committee1", cases["RS0104"], "approve")["to"] == "filing"
    assert b.act("committee1", cases["RS0205"], "approve")["to"] == "filing"
    full = b.act("committee1", cases["RS0304"], "approve", status=422)
    assert full["rule"] == "positions"
    assert (full["details"]["limit"], full["details"]["used"], full["details"]["asked"]) == (
        2, 2, 1)
    assert full["details"]["unit_id"] == b.units["RSJ"]
    assert full["message"] == (
        f"positions (职数) for unit {b.units['RSJ']} 示范市人力资源和社会保障局 and its sub-units, "
        f"一级主任科员, round 2026-2: 2 set in rank positions (row {row}), already taken 2, "
        "asked 1")
    rows = b.get("owner", "/api/v1/rank-positions", round="2026-2")["items"]
    assert [(r["unit"]["code"], r["rank"], r["positions"], r["taken"], r["remaining"])
            for r in rows] == [("RSJ", "一级主任科员", 2, 2, 0)]
    b.act("committee1", cases["RS0304"], "refuse", {"reject_reason": "本批次职数已满"})
    assert b.act("committee1", cases["RS0305"], "approve", status=422)["rule"] == "positions"
    b.act("committee1", cases["RS0305"], "refuse", {"reject_reason": "本批次职数已满"})

    b.at(2026, 12, 31, 10)  # 备案 by 干部科; the new rank goes into the facts
    for code, no in (("RS0104", 1), ("RS0205", 2)):
        b.act("owner", cases[code], "file", {"filing_no": f"示人社备〔2026〕{no}号",
                                             "rank_effective": "2027-01-01"})
        ranks = [(r["rank"], r["since"], r["until"]) for r in b.facts(code)["rank_history"]]
        assert ranks[-1] == ("一级主任科员", "2027-01-01", None)
    assert [b.case(cases[c])["state"] for c in CANDIDATES] == [
        "filed", "filed", "rejected", "rejected", "rejected", "rejected", "rejected"]


def test_a_quarter_then_the_annual_assessment_then_a_promotion_round(bureau):
    cases = regular_quarter(bureau)
    check_the_quarter(bureau, cases)
    annual_assessment(bureau)
    promotion_round(bureau)


# --------------------------------------------------------------------------- 下沉一线


@pytest.mark.parametrize("start", [cst(2025, 8, 20, 9)])
def test_a_dispatch_whose_term_ends_by_itself(bureau):
    b = bureau
    b.at(2025, 9, 1, 9)
    # The receiving side: a township cadre in the group dispatch-receiving, with an account.
    r = b.http.post("/api/v1/org/units", headers=b.headers("admin"),
                    json={"code": "QSZ", "name": "青山镇"})
    assert r.status_code == 201, r.json
    r = b.http.post("/api/v1/org/people", headers=b.headers("admin"), json={
        "code": "QS001", "name": "李振国", "unit_id": r.json["id"], "tier": "deputy",
        "post": "镇党委组织委员"})
    assert r.status_code == 201, r.json
    town = r.json["id"]
    r = b.http.post("/api/v1/org/roles", headers=b.headers("admin"),
                    json={"person_id": town, "role": "dispatch-receiving", "unit_id": None})
    assert r.status_code == 201, r.json
    made = CliRunner().invoke(main, ["create-user", "town1", "--person", "QS001",
                                     "--password-stdin", "--db", b.db.url],
                              input="qingshan-2025\n")
    assert made.exit_code == 0, made.output
    r = b.http.post("/api/v1/auth/token", json={"username": "town1",
                                                "password": "qingshan-2025"})
    assert r.status_code == 201
    b.tokens["town1"] = r.json["access_token"]

    b.at(2025, 9, 5, 10)  # 提名 by 考核奖惩处's leader; 选派审批 by the committee
    cid = b.start("leader2", DISPATCH, "RS0204")
    b.act("leader2", cid, "nominate", {
        "post_type": "第一书记", "receiving_unit": "青山镇石桥村", "term_start": "2025-10-01",
        "term_end": "2026-09-30", "nomination_reason": "熟悉基层工作，本人自愿"})
    b.at(2025, 9, 12, 15)
    assert b.act("committee1", cid, "approve_dispatch",
                 {"dispatch_order": "示人社党〔2025〕21号"})["to"] == "dispatched"
    (term_end,) = [t for t in b.get("owner", f"/api/v1/cases/{cid}/timers")
                   if t["action"] == "term_end"]
    assert (term_end["status"], term_end["due_at"]) == ("pending", "2026-09-30T01:00:00+00:00")

    for when, month, days, note in [((2025, 10, 31, 17), "2025-10", 22, None),
                                    ((2025, 11, 28, 17), "2025-11", 18, "参加县里集中培训 4 天"),
                                    ((2025, 12, 31, 17), "2025-12", 23, None)]:
        b.at(*when)
        item = {"month": month, "days_in_post": days} | ({"note": note} if note else {})
        b.act("staff11", cid, "check_in", {"check_ins": [item]})

    # The term ends by itself at 09:00 on its last day (monthly reminders fire meanwhile).
    b.tick(2026, 9, 30, 8, 59)
    assert b.case(cid)["state"] == "dispatched"
    b.tick(2026, 9, 30, 9, 1)
    last = b.history(cid)[-1]
    assert (last["trigger"], last["actor_role"], last["to"]) == ("term_end", "system", "summary")

    b.at(2026, 10, 9, 10)  # 任期总结, after the National Day holiday
    b.act("staff11", cid, "submit_summary", {"summary": "一年任期：村集体经济收入翻番……"})
    b.at(2026, 10, 12, 10)  # 接收方评价, with the county organisation department's opinion
    b.act("leader2", cid, "evaluate", {"receiving_evaluation": "x", "recommended_grade": "优秀",
                                       "county_opinion": "同意"}, status=403)
    assert b.act("town1", cid, "evaluate", {
        "receiving_evaluation": "扎根村里，带领发展集体经济，群众认可。",
        "recommended_grade": "优秀", "county_opinion": "同意评为优秀。"})["to"] == "feedback"
    # 结果反馈: 胡志鹏 says nothing; five working days later (13–16, 19 October) it stands.
    b.tick(2026, 10, 19, 23, 59)
    assert b.case(cid)["state"] == "feedback"
    b.tick(2026, 10, 20, 0, 1)
    last = b.history(cid)[-1]
    assert (last["trigger"], last["actor_role"], last["to"]) == ("accept", "system", "approval")

    b.at(2026, 10, 21, 10)  # 派出单位审定备案
    refused = b.act("committee1", cid, "approve", {
        "grade": "称职", "commendation_proposed": True, "promotion_priority": False},
        status=422)
    assert refused["rule"] == "outcome_flags"
    assert b.act("committee1", cid, "approve", {
        "grade": "优秀", "commendation_proposed": True, "promotion_priority": True,
        "approval_note": "同意，记入干部档案"})["to"] == "closed"

    steps = [(h["trigger"], h["actor_role"]) for h in b.history(cid)]
    assert steps == [("start", "starter"), ("nominate", "leader"),
                     ("approve_dispatch", "committee"), ("check_in", "subject"),
                     ("check_in", "subject"), ("check_in", "subject"), ("term_end", "system"),
                     ("submit_summary", "subject"), ("evaluate", "receiving"),
                     ("accept", "system"), ("approve", "committee")]
    with b.db.unit_of_work(write=False) as s:
        (out,) = dispatch_outcomes(s, b.people["RS0204"])
        (gap,) = shortfalls(s)
    assert (out.case_id, out.post_type, out.receiving_unit, out.grade, out.excellent,
            out.commendation_proposed, out.promotion_priority, out.shortfall_months) == (
        cid, "第一书记", "青山镇石桥村", "优秀", True, True, True, 1)
    assert (out.term_start, out.term_end) == (dt.date(2025, 10, 1), dt.date(2026, 9, 30))
    assert (gap.month, gap.days_in_post, gap.minimum) == ("2025-11", 18, 20)
