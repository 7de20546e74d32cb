"""`civflow demo`: the demo organisation, its accounts, its year of history, and that
running it twice is a no-op.

The command itself runs on SQLite (tmp_path), on the wall clock. The history is checked on a
database seeded at a fixed moment (Thursday 26 November 2026, 16:00 in Beijing), and replayed
once more on SQLite and on PostgreSQL to show it is the same everywhere.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from service.app import create_app
from service.cli import main
from workflows import demo, notify
from workflows.access import load_viewer
from workflows.db import Database, upgrade
from workflows.dispatch import shortfalls
from workflows.engine import Engine
from workflows.models import (
    AnnualResult,
    ApiToken,
    Case,
    FlowVersion,
    HistoryRecord,
    Person,
    RoleAssignment,
    Sanction,
    Timer,
    Unit,
    User,
)
from workflows.org import read_rows
from workflows.queries import CaseFilter
from workflows.timers import TimerWorker

from .conftest import CST, ROOT, cst

DIVISIONS = ("RSJ-GWY", "RSJ-KHJC", "RSJ-GZFL")
ACCOUNTS = (["admin", "owner", "committee1", "leader1", "leader2", "leader3"]
            + [f"staff{i:02d}" for i in range(1, 25)])
NOW = cst(2026, 11, 26, 16)  # a Thursday: M0 is 2026-11, the history 2025-11 … 2026-10
FLOWS = sorted(f for f in (ROOT / "definitions").glob("*.yaml") if f.name != "calendar.yaml")
REGULAR = "regular-assessment"
HISTORY_MONTHS = [f"2025-{m}" for m in ("11", "12")] + [f"2026-{m:02d}" for m in range(1, 11)]
# Every demo person but those nobody evaluates (who evaluates whom, workflows/actors.py):
# 陈建国 (RS0001), the deputy head, and 林晓燕 (RS0002), a 副职 at the bureau level whom only
# the bureau's 主要负责人 would grade — the demo bureau has none.
ASSESSED = 28


def run_demo(url: str):
    res = CliRunner().invoke(main, ["demo", "--db", url,
                                    "--definitions", str(ROOT / "definitions")])
    assert res.exit_code == 0, res.output
    return res


def seeded(url: str, now=NOW) -> demo.DemoResult:
    """A migrated database with the shipped flows, the demo and its history up to `now`."""
    db = Database(url)
    try:
        engine = Engine(db)
        for f in FLOWS:
            engine.publish(f.read_text(encoding="utf-8"), str(f))
        return demo.load(db, now=now)
    finally:
        db.dispose()


class Client:
    """The service on a demo database, logging in with the demo password."""

    def __init__(self, url: str):
        self.http = create_app(url, config={"TESTING": True}).test_client()
        # messages in English: the scenarios read them so (tests/test_messages.py: Chinese)
        self.http.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
        self.tokens: dict[str, str] = {}

    def headers(self, username: str, version: int | None = None) -> dict[str, str]:
        if username not in self.tokens:
            r = self.http.post("/api/v1/auth/token",
                               json={"username": username, "password": demo.PASSWORD})
            assert r.status_code == 201, r.json
            self.tokens[username] = r.json["access_token"]
        h = {"Authorization": f"Bearer {self.tokens[username]}"}
        return h | ({"If-Match": f'"{version}"'} if version else {})

    def get(self, username: str, url: str, **query):
        r = self.http.get(url, headers=self.headers(username), query_string=query)
        assert r.status_code == 200, r.json
        return r.json

    def act(self, username: str, case_id: int, trigger: str, data: dict | None = None):
        version = self.get(username, f"/api/v1/cases/{case_id}")["version"]
        return self.http.post(f"/api/v1/cases/{case_id}/actions/{trigger}",
                              headers=self.headers(username, version),
                              json={"data": data or {}})


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`civflow demo` on a new database, on the wall clock: (url, its first output)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'demo.db'}"
    first = run_demo(url)
    assert "published: regular-assessment v1" in first.stdout
    assert "demo organisation created: 4 units, 30 people, 30 accounts" in first.stdout
    yield url, first.stdout
    Database(url).dispose()


@pytest.fixture(scope="module")
def demo_url(demo_run):
    return demo_run[0]


@pytest.fixture(scope="module")
def client(demo_url):
    return create_app(demo_url, config={"TESTING": True}).test_client()


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """The demo seeded at NOW: (url, what `demo.load` reported). Tests only read it."""
    url = f"sqlite:///{tmp_path_factory.mktemp('history') / 'history.db'}"
    upgrade(url)
    result = seeded(url)
    yield url, result
    Database(url).dispose()


@pytest.fixture
def tried(tmp_path):
    """A database of its own, seeded at NOW, to act on."""
    url = f"sqlite:///{tmp_path / 'tried.db'}"
    upgrade(url)
    seeded(url)
    yield url
    Database(url).dispose()


def _ids(db: Database) -> dict[str, int]:
    with db.unit_of_work(write=False) as s:
        return dict(s.execute(select(Person.code, Person.id)).all())


def story(url: str) -> list[tuple]:
    """Every case as the people see it, by person code: independent of ids and database."""
    db = Database(url)
    try:
        with db.unit_of_work(write=False) as s:
            rows = s.execute(select(Person.code, Case.flow_id, Case.period_key, Case.state,
                                    Case.data, Case.id).join(Person, Person.id == Case.subject_id)
                             ).all()
            steps: dict[int, list[tuple]] = {}
            for r in s.execute(select(HistoryRecord.case_id, HistoryRecord.trigger,
                                      HistoryRecord.actor_role, HistoryRecord.at)
                               .order_by(HistoryRecord.case_id, HistoryRecord.seq)):
                steps.setdefault(r.case_id, []).append((r.trigger, r.actor_role,
                                                        r.at.isoformat()))
        return sorted((code, flow, period or "", state,
                       json.dumps(data, sort_keys=True, ensure_ascii=False), tuple(steps[cid]))
                      for code, flow, period, state, data, cid in rows)
    finally:
        db.dispose()


def test_the_shipped_file_is_valid_and_shaped_as_documented():
    rows, errors = read_rows(demo.PEOPLE_CSV.read_text(encoding="utf-8"))
    assert errors == []
    assert sorted(demo.usernames()) == sorted(ACCOUNTS)
    assert len({r.name for r in rows}) == 30  # no two people share a name
    per_unit = Counter(r.unit_code for r in rows)
    assert per_unit == {"RSJ": 3, **{d: 9 for d in DIVISIONS}}


def test_demo_creates_the_bureau_people_and_roles(demo_url):
    db = Database(demo_url)
    with db.unit_of_work(write=False) as s:
        units = {code: (uid, name, parent) for code, uid, name, parent in s.execute(
            select(Unit.code, Unit.id, Unit.name, Unit.parent_id))}
        assert units["RSJ"][1] == "示范市人力资源和社会保障局" and units["RSJ"][2] is None
        assert {c for c, v in units.items() if v[2] == units["RSJ"][0]} == set(DIVISIONS)
        assert s.execute(select(func.count()).select_from(Person)).scalar() == 30
        people = s.execute(select(User.username, Person.tier, Person.rank, Person.rank_since,
                                  Person.post, Unit.code)
                           .join(Person, Person.id == User.person_id)
                           .join(Unit, Unit.id == Person.unit_id)).all()
        roles = {(u, r, c) for u, r, c in s.execute(
            select(User.username, RoleAssignment.role, Unit.code)
            .join(RoleAssignment, RoleAssignment.person_id == User.person_id)
            .join(Unit, Unit.id == RoleAssignment.unit_id))}
        hashes = {h for (h,) in s.execute(select(User.password_hash))}
    assert sorted(p.username for p in people) == sorted(ACCOUNTS)
    assert all(p.rank and p.rank_since and p.post for p in people)
    assert {p.tier for p in people} == {"chief", "deputy", "staff"}
    assert roles == {("admin", "admin", "RSJ"), ("owner", "process_owner", "RSJ"),
                     ("committee1", "committee", "RSJ"), ("committee1", "leader", "RSJ"),
                     ("leader1", "leader", "RSJ-GWY"),
                     ("leader2", "leader", "RSJ-KHJC"), ("leader3", "leader", "RSJ-GZFL")}
    by_user = {p.username: p for p in people}
    for n, division in enumerate(DIVISIONS, 1):
        assert by_user[f"leader{n}"].tier == "chief" and by_user[f"leader{n}"].code == division
        staff = [f"staff{i:02d}" for i in range(8 * n - 7, 8 * n + 1)]
        assert {by_user[u].code for u in staff} == {division}
        assert {by_user[u].tier for u in staff} == {"deputy", "staff"}
    assert len(hashes) == 1 and None not in hashes  # hashed once, set on every account
    with db.unit_of_work(write=False) as s:  # 干部科 of promotions, 申诉 of annual results
        for group in ("hr-office", "complaints-office"):
            assert s.execute(select(User.username).join(
                RoleAssignment, RoleAssignment.person_id == User.person_id).where(
                RoleAssignment.role == group, RoleAssignment.unit_id.is_(None))
            ).scalars().all() == ["owner"], group


def test_every_demo_account_logs_in(client):
    for username in ACCOUNTS:
        r = client.post("/api/v1/auth/token",
                        json={"username": username, "password": demo.PASSWORD})
        assert r.status_code == 201, (username, r.json)
    r = client.post("/api/v1/auth/token", json={"username": "staff01", "password": "nope-nope"})
    assert r.status_code == 401


def test_running_demo_twice_changes_nothing(demo_url):
    db = Database(demo_url)

    def snapshot():
        with db.unit_of_work(write=False) as s:
            return [s.execute(select(*t.__table__.c).order_by(t.id)).all()
                    for t in (Unit, Person, RoleAssignment, User, FlowVersion, ApiToken,
                              AnnualResult, Sanction, Case, HistoryRecord, Timer)]

    before = snapshot()
    again = run_demo(demo_url)
    assert snapshot() == before
    assert "unchanged: regular-assessment v1" in again.stdout
    assert "demo organisation already present" in again.stdout
    assert "demo facts loaded" not in again.stdout and "demo history" not in again.stdout
    assert "nothing changed" in again.stdout
    table = again.stdout.splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("USERNAME"))
    assert [line.split()[0] for line in table[header + 1:header + 31]] == demo.usernames()
    assert "committee1  陈建国  示范市人力资源和社会保障局  committee" in again.stdout
    db.dispose()


def test_demo_gives_a_password_only_to_accounts_without_one(demo_url):
    db = Database(demo_url)
    with db.unit_of_work() as s:
        s.execute(User.__table__.update().where(User.username == "staff05")
                  .values(password_hash=None))
        kept = s.execute(select(User.password_hash).where(User.username == "admin")).scalar()
    res = run_demo(demo_url)
    assert "password set for 1 account(s)" in res.stdout and "nothing changed" not in res.stdout
    with db.unit_of_work(write=False) as s:
        assert s.execute(select(func.count()).select_from(User)
                         .where(User.password_hash.is_(None))).scalar() == 0
        assert s.execute(select(User.password_hash)
                         .where(User.username == "admin")).scalar() == kept
    db.dispose()


def test_demo_seeds_the_facts_and_the_history(demo_run):
    from workflows.facts import person_facts

    url, output = demo_run
    assert "demo facts loaded: 119" in output
    db = Database(url)
    with db.unit_of_work(write=False) as s:
        assert s.execute(select(func.count()).select_from(AnnualResult)
                         .where(AnnualResult.year == 2025)).scalar() == 30
        staff05 = s.execute(select(Person.id).where(Person.code == "RS0106")).scalar()
        facts = person_facts(s, staff05)
        cases = s.execute(select(func.count()).select_from(Case)).scalar()
        records = s.execute(select(func.count()).select_from(HistoryRecord)).scalar()
    assert [x.kind for x in facts.sanctions] == ["警告"]
    # On the wall clock: a year of monthly cases for the 28 people assessed in the bureau
    # (the current month's too once it has opened), a dispatch and a promotion, and the
    # contact point's monthly reports (3 months, and the current one once it has opened).
    assert cases in (ASSESSED * 12 + 2 + 3, ASSESSED * 13 + 2 + 4)
    assert f"demo history: {cases} cases, {records} records" in output
    assert Engine(db).verify_history() == (cases, records, [])
    db.dispose()


# --------------------------------------------------------------------------- the history


def test_a_year_of_regular_assessment_made_through_the_engine(history):
    url, result = history
    db = Database(url)
    # 1850 records of the regular, dispatch and promotion cases; 10 of the contact point's
    # reports (start, submit, approve for three months; the current month's start).
    assert (result.history_cases, result.history_records) == (ASSESSED * 13 + 2 + 4, 1860)
    # The hash chains hold: every record was written by the engine, in order.
    assert Engine(db).verify_history() == (result.history_cases, 1860, [])
    with db.unit_of_work(write=False) as s:
        by_period = Counter(s.execute(select(Case.period_key, Case.state)
                                      .where(Case.flow_id == REGULAR)).all())
        subjects = set(s.execute(select(Person.code).join(Case, Case.subject_id == Person.id)
                                 .where(Case.flow_id == REGULAR)).scalars())
        steps = Counter(s.execute(select(HistoryRecord.trigger, HistoryRecord.actor_role)
                                  .join(Case, Case.id == HistoryRecord.case_id)
                                  .where(Case.flow_id == REGULAR)).all())
        first = s.execute(select(HistoryRecord.at).where(HistoryRecord.trigger == "start")
                          .order_by(HistoryRecord.at).limit(1)).scalar()
    # 季审定: the quarters up to September are approved; October waits for the committee
    # in 审定 (the quarter ends in December); November is this month, in 个人小结.
    assert by_period == {**{(k, "approved"): ASSESSED for k in HISTORY_MONTHS[:-1]},
                         ("2026-10", "approval"): ASSESSED, ("2026-11", "summary"): ASSESSED}
    assert len(subjects) == ASSESSED and not {"RS0001", "RS0002"} & subjects
    assert first == cst(2025, 11, 1, 8)  # the cycle's opening moment of the first month
    assert steps == {("start", "system"): ASSESSED * 13, ("submit", "subject"): ASSESSED * 12,
                     ("evaluate", "evaluator"): ASSESSED * 12,
                     # most people accept; the silent ones are accepted by the timer
                     ("accept", "subject"): 280, ("accept", "system"): 56,
                     ("approve", "committee"): ASSESSED * 11,
                     ("record_week", "subject"): 160}
    db.dispose()


def test_the_grades_keep_the_quota_of_every_pool(history):
    url, _result = history
    c = Client(url)
    dist = c.get("owner", "/api/v1/ledger/grades", flow=REGULAR, period_from="2025-11",
                 period_to="2026-10")
    assert dist["quota"]["value"] == "好" and dist["quota"]["max_ratio"] == 0.4
    # 3 pools a month: the 机关's (局机关 with its divisions) 正职, 副职 and 一般干部
    assert len(dist["pools"]) == 3 * 12
    assert {p["unit"]["name"] for p in dist["pools"]} == {"示范市人力资源和社会保障局"}
    for pool in dist["pools"]:
        assert pool["graded"]["好"] <= pool["quota"]["limit"], pool
        assert pool["size"] == sum(pool["graded"].values())  # everyone graded
    assert dist["totals"] == {"好": 101, "较好": 229, "一般": 6, "较差": 0}
    staff = next(p for p in dist["pools"] if p["tier"] == "staff" and p["period"] == "2026-09")
    # The 机关's 21 一般干部: max(floor(21 × 0.4), 1) = 8; six scored high enough for 好
    assert staff["quota"] == {"size": 21, "limit": 8, "used": 6, "remaining": 2}
    everyone = c.get("owner", "/api/v1/ledger/good-counts", flow=REGULAR, year=2026)
    gwy = next(p["unit"]["id"] for p in everyone["people"] if p["unit"]["name"] == "公务员管理处")
    good = c.get("owner", "/api/v1/ledger/good-counts", flow=REGULAR, year=2026, unit_id=gwy)
    assert {p["unit"]["name"] for p in good["people"]} == {"公务员管理处"}
    counts = {p["person"]["code"]: (p["good"], p["results"]) for p in good["people"]}
    assert (counts["RS0103"], counts["RS0104"], counts["RS0105"]) == ((6, 9), (8, 9), (3, 9))
    # The month of 黄俊杰's 警告 (decided 2026-03-10, facts.csv) is graded 一般.
    cases = c.get("owner", "/api/v1/cases", flow=REGULAR, period="2026-03", q="黄俊杰")
    (march,) = cases["items"]
    data = c.get("owner", f"/api/v1/cases/{march['id']}")["data"]
    assert (data["grade"], data["evaluation_comment"]) == ("一般", "本月受警告处分，等次定为一般。")


def test_weekly_records_in_the_last_months(history):
    url, _result = history
    db = Database(url)
    with db.unit_of_work(write=False) as s:
        rows = s.execute(select(Case.period_key, Case.data).where(Case.flow_id == REGULAR,
                                                                  Case.period_key >= "2026-08"))
        counts = Counter((key, len(data.get("weekly_records", []))) for key, data in rows)
    # Two Fridays each in September and October; November so far (6, 13, 20 November).
    assert counts == {("2026-08", 0): ASSESSED, ("2026-09", 2): ASSESSED,
                      ("2026-10", 2): ASSESSED, ("2026-11", 2): 20, ("2026-11", 1): 8}
    db.dispose()


def test_a_dispatch_under_way(history):
    url, _result = history
    c = Client(url)
    (item,) = c.get("owner", "/api/v1/cases", flow="frontline-dispatch")["items"]
    case = c.get("owner", f"/api/v1/cases/{item['id']}")
    assert case["state"] == "dispatched" and item["subject"]["name"] == "胡志鹏"
    data = case["data"]
    assert (data["post_type"], data["term_start"], data["term_end"]) == (
        "第一书记", "2026-09-01", "2028-08-31")
    assert [(x["month"], x["days_in_post"]) for x in data["check_ins"]] == [
        ("2026-09", 22), ("2026-10", 17)]
    steps = [(h["trigger"], h["actor_role"]) for h in
             c.get("owner", f"/api/v1/cases/{item['id']}/history")]
    assert steps == [("start", "starter"), ("nominate", "leader"),
                     ("approve_dispatch", "committee"), ("check_in", "subject"),
                     ("check_in", "subject")]
    timers = c.get("owner", f"/api/v1/cases/{item['id']}/timers")
    term_end = [t for t in timers if t["action"] == "term_end"]
    assert [(t["status"], t["due_at"]) for t in term_end] == [
        ("pending", "2028-08-31T01:00:00+00:00")]  # 09:00 in Beijing, by itself
    db = Database(url)
    with db.unit_of_work(write=False) as s:
        (gap,) = shortfalls(s)
    assert (gap.case_id, gap.month, gap.days_in_post, gap.minimum) == (item["id"], "2026-10",
                                                                       17, 20)
    db.dispose()



def test_the_monthly_check_in_reminder_comes_at_nine_on_its_day(db_url):
    """Issue 14.5, on both databases: the demo loaded on 4 November at 21:20. 胡志鹏 took up
    his post on 18 August (approved at 15:00): the reminders come on the 18th at 09:00 —
    September's, fired late when the demo loaded, does not push November's to 4 December
    21:20 (the load time plus a month)."""
    upgrade(db_url)
    seeded(db_url, now=cst(2026, 11, 4, 21, 20))
    db = Database(db_url)
    try:
        engine = Engine(db)
        with db.unit_of_work(write=False) as s:
            cid = s.execute(select(Case.id).where(Case.flow_id == "frontline-dispatch")
                            ).scalar_one()

        def repeats():
            with db.unit_of_work(write=False) as s:
                return s.execute(select(Timer.status, Timer.due_at).where(
                    Timer.case_id == cid, Timer.kind == "repeat").order_by(Timer.id)).all()

        assert [(st, due.astimezone(CST)) for st, due in repeats()] == [
            ("done", cst(2026, 9, 18, 9)), ("pending", cst(2026, 11, 18, 9))]
        fired = []
        worker = TimerWorker(engine, on_event=lambda s, t, c, cf: fired.append(
            (t.kind, t.due_at.astimezone(CST), t.payload["notify"])) if c.id == cid else None)
        worker.tick(cst(2026, 11, 18, 8, 59))
        assert fired == []
        worker.tick(cst(2026, 11, 18, 9))
        assert fired == [("repeat", cst(2026, 11, 18, 9), ["subject"])]
        assert [(st, due.astimezone(CST)) for st, due in repeats()][1:] == [
            ("done", cst(2026, 11, 18, 9)), ("pending", cst(2026, 12, 18, 9))]
    finally:
        db.dispose()

def test_a_promotion_candidate_in_public_notice(history):
    url, _result = history
    c = Client(url)
    (item,) = c.get("owner", "/api/v1/cases", flow="rank-promotion")["items"]
    case = c.get("owner", f"/api/v1/cases/{item['id']}")
    assert case["state"] == "public_notice" and item["subject"]["name"] == "刘思远"
    assert (case["data"]["target_rank"], case["data"]["decision_date"]) == ("一级主任科员",
                                                                             "2026-11-20")
    steps = [(h["trigger"], h["actor_role"], h["at"][:10]) for h in
             c.get("owner", f"/api/v1/cases/{item['id']}/history")]
    # 动议, 5 working days later 民主推荐, 5 later 人选确定, 3 later 考察 passed: in 公示.
    assert steps == [("start", "starter", "2026-11-06"), ("propose", "leader", "2026-11-06"),
                     ("record_votes", "hr", "2026-11-13"), ("confirm", "committee", "2026-11-20"),
                     ("pass", "committee", "2026-11-25")]
    (notice,) = [t for t in c.get("owner", f"/api/v1/cases/{item['id']}/timers")
                 if t["action"] == "notice_passed"]
    # 5 working days from Wednesday 25 November: 26, 27, 30 November, 1 and 2 December.
    assert (notice["status"], notice["due_at"]) == ("pending", "2026-12-02T16:00:00+00:00")


def test_the_history_is_the_same_on_every_database(db_url, history):
    url, result = history
    again = seeded(db_url)
    assert (again.history_cases, again.history_records) == (result.history_cases,
                                                            result.history_records)
    assert story(db_url) == story(url)
    db = Database(db_url)
    assert Engine(db).verify_history() == (again.history_cases, again.history_records, [])
    db.dispose()


# --------------------------------------------------------------------------- trying it


def test_each_flow_can_be_tried_at_once(tried):
    url = tried
    c = Client(url)
    ids = _ids(Database(url))
    # 平时考核: staff02 finds this month's case in the queue, writes and submits it.
    (mine,) = c.get("staff02", "/api/v1/queue")["items"]
    assert (mine["flow"], mine["period_key"], mine["state"]) == (REGULAR, "2026-11", "summary")
    assert [a["trigger"] for a in mine["actions"]] == ["record_week", "submit"]
    for who, trigger, data, to in [
            ("staff02", "submit", {"summary": "本月完成公务员登记复核 120 人次"}, "evaluation"),
            ("leader1", "evaluate", {"grade": "好"}, "feedback"),
            ("staff02", "accept", {}, "approval")]:
        r = c.act(who, mine["id"], trigger, data)
        assert r.status_code == 200 and r.json["to"] == to, (who, trigger, r.json)
    assert c.http.get(f"/api/v1/cases/{mine['id']}",
                      headers=c.headers("leader2")).status_code == 404  # another division
    # 季审定: committee1 approves October and this case in one bulk action.
    waiting = c.get("committee1", "/api/v1/queue", flow=REGULAR, per_page=100)
    assert waiting["total"] == ASSESSED + 1
    r = c.http.post("/api/v1/queue/bulk", headers=c.headers("committee1"),
                    json={"trigger": "approve", "case_ids": [i["id"] for i in waiting["items"]],
                          "comment": "第四季度审定"})
    assert r.status_code == 200 and r.json["counts"] == {"done": ASSESSED + 1, "refused": 0}
    # 年度考核: the year's regular results decide who may be proposed for 优秀.
    for who, code, has in (("staff02", "RS0103", None), ("staff04", "RS0105", 3)):
        r = c.http.post("/api/v1/cases", headers=c.headers(who),
                        json={"flow": "annual-assessment", "subject_id": ids[code],
                              "period_key": "2026"})
        assert r.status_code == 201, r.json
        cid = r.json["id"]
        assert c.act(who, cid, "submit", {"summary": "年度述职"}).status_code == 200
        assert c.act("leader1", cid, "record_votes").status_code == 200
        r = c.act("leader1", cid, "propose_excellent", {"grade": "优秀"})
        if has is None:
            assert r.status_code == 200 and r.json["to"] == "public_notice", r.json
        else:
            assert r.status_code == 422 and r.json["rule"] == "regular_linkage"
            assert "优秀 for 2026 needs 6 好 of 10 regular results, has 3" in r.json["message"]
    # 职级晋升: the candidate's public notice is 干部科's (owner) to watch.
    notice = c.get("owner", "/api/v1/queue", flow="rank-promotion")["items"]
    assert [(i["state"], [a["trigger"] for a in i["actions"]]) for i in notice] == [
        ("public_notice", ["object"])]
    # 下沉一线: 胡志鹏 (staff11) checks in for November.
    (post,) = c.get("staff11", "/api/v1/queue", flow="frontline-dispatch")["items"]
    r = c.act("staff11", post["id"], "check_in",
              {"check_ins": [{"month": "2026-11", "days_in_post": 21}]})
    assert r.status_code == 200 and r.json["to"] == "dispatched", r.json


def test_the_demo_contact_point_and_its_monthly_reports(history):
    from workflows import contact_register
    from workflows.access import load_viewer
    from workflows.facts import person_facts

    url, _result = history
    db = Database(url)
    with db.unit_of_work(write=False) as s:
        owner = load_viewer(s, s.execute(select(Person.id).where(Person.code == "RS0002"))
                            .scalar())
        (entry,) = contact_register.entries(s, owner, 2026)
        states = dict(s.execute(select(Case.period_key, Case.state)
                                .where(Case.flow_id == "contact-point-report")).all())
        trained = person_facts(s, s.execute(select(Person.id).where(Person.code == "RS0101"))
                               .scalar())
    assert (entry["unit"]["code"], entry["liaison"]["code"]) == ("RSJ-KHJC", "RS0208")
    assert states == {"2026-08": "done", "2026-09": "done", "2026-10": "done",
                      "2026-11": "report"}
    # September's was filed on the 7th working day after the month (late), reviewed 一般.
    assert entry["reports"] == {
        "reports": 4, "submitted": 3, "on_time": 2, "on_time_rate": 0.5, "reviewed": 3,
        "quality": {"好": 1, "较好": 1, "一般": 1, "较差": 0}, "quality_points": 6,
        "quality_max": 9}
    assert trained.training_totals[2025].records == 2
    assert trained.training_hours[2025] == 80
    db.dispose()


def test_every_demo_account_has_messages(history):
    """消息 is not empty in the demo: the reminders of the steps the cases are in now
    (`notify.on_timer_event` on the last tick) and, for approvers, a notice per step with
    cases waiting for them (`notify.recipients` + `notify.queue`)."""
    url, _result = history
    db = Database(url)
    try:
        with db.unit_of_work(write=False) as s:
            users = dict(s.execute(select(User.username, User.person_id)).all())
        for username in demo.usernames():
            page = notify.list_notifications(db, users[username])
            assert page.total > 0, username
        committee = notify.list_notifications(db, users["committee1"]).items
        waiting = [n for n in committee if n["title"].startswith("待办：平时考核「审定」")]
        assert len(waiting) == 1 and waiting[0]["kind"] == notify.REMINDER
        # The count in the notice is the committee member's queue, own case left out.
        engine = Engine(db)
        with db.unit_of_work(write=False) as s:
            viewer = load_viewer(s, users["committee1"])
        _rows, queued = engine.queue(viewer, CaseFilter(flow="regular-assessment",
                                                        state="approval",
                                                        not_subject=users["committee1"]))
        assert f"「审定」{queued} 件" in waiting[0]["title"]
        staff = notify.list_notifications(db, users["staff02"]).items
        assert any(n["title"] == "请记录本周工作纪实" for n in staff)
    finally:
        db.dispose()
