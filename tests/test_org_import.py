"""CSV import of the organisation: all rows or none, errors by line number."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from service.cli import main
from workflows.errors import ImportFailed
from workflows.models import Person, RoleAssignment, Unit, User
from workflows.org import import_people

HEADER = ("unit_code,unit_name,parent_unit_code,person_code,name,tier,rank,rank_since,post,"
          "roles,username\n")
GOOD = HEADER + """\
CITY,市委组织部,,P1,周明,chief,一级巡视员,2019-07-01,部长,leader;committee,zhouming
SEC1,干部一科,CITY,P2,王强,chief,一级主任科员,2021-06-01,科长,leader,wangqiang
SEC1,,,P3,张伟,staff,三级主任科员,2023-01-01,科员,group:hr-office,zhangwei
SEC2,干部二科,CITY,,,,,,,,
"""


def _counts(db) -> tuple[int, ...]:
    with db.unit_of_work(write=False) as s:
        return tuple(s.execute(select(func.count()).select_from(m)).scalar()
                     for m in (Unit, Person, RoleAssignment, User))


def test_good_import_builds_the_tree(db):
    report = import_people(db, GOOD)
    assert (report.units_created, report.people_created, report.roles_added,
            report.users_created) == (3, 3, 4, 3)
    with db.unit_of_work(write=False) as s:
        units = {u.code: u for u in s.execute(select(Unit)).scalars()}
        assert units["SEC1"].path == f"/{units['CITY'].id}/{units['SEC1'].id}/"
        assert units["SEC2"].parent_id == units["CITY"].id
        p3 = s.execute(select(Person).where(Person.code == "P3")).scalar_one()
        assert (p3.tier, p3.rank, str(p3.rank_since)) == ("staff", "三级主任科员", "2023-01-01")
        group = s.execute(select(RoleAssignment).where(RoleAssignment.person_id == p3.id)
                          ).scalar_one()
        assert (group.role, group.unit_id) == ("hr-office", None)


def test_reimport_updates_without_duplicates(db):
    import_people(db, GOOD)
    before = _counts(db)
    report = import_people(db, GOOD.replace("张伟,staff", "张伟,deputy"))
    assert report.people_created == 0 and report.people_updated == 3
    assert report.roles_added == 0 and report.users_created == 0
    assert _counts(db) == before
    with db.unit_of_work(write=False) as s:
        assert s.execute(select(Person.tier).where(Person.code == "P3")).scalar() == "deputy"


def test_bad_rows_are_reported_by_line_and_nothing_is_imported(db):
    import_people(db, GOOD)
    before = _counts(db)
    bad = HEADER + """\
NEW,新单位,,N1,新人,staff,,,,,
NEW,,,N2,,staff,,,,,
NEW,,,N3,某人,boss,,,,,
NEW,,,N4,某人,staff,,2024-02-30,,,
NEW,,,N5,某人,staff,,,,chairman,
X1,无名单位,NOPE,N6,某人,staff,,,,,
X2,,,N7,某人,staff,,,,,
NEW,,,N1,重复,staff,,,,,
NEW,,,N8,某人,staff,,,,,zhouming
"""
    with pytest.raises(ImportFailed) as exc:
        import_people(db, bad)
    errors = dict(exc.value.errors)
    assert errors[3] == "a person needs a name"
    assert "tier 'boss'" in errors[4]
    assert "rank_since '2024-02-30' is not a date" in errors[5]
    assert "role 'chairman'" in errors[6]
    assert "parent unit 'NOPE' is not defined" in errors[7]
    assert "unit 'X2' is new and needs a unit_name" in errors[8]
    assert "person 'N1' is already on line 2" in errors[9]
    assert "username 'zhouming' belongs to another person" in errors[10]
    assert 2 not in errors  # the good row is fine, but is not imported either
    assert _counts(db) == before


def test_header_problems(db):
    with pytest.raises(ImportFailed) as exc:
        import_people(db, "unit,nom\nA,B\n")
    assert [line for line, _m in exc.value.errors] == [1, 1]
    messages = " | ".join(m for _l, m in exc.value.errors)
    assert "unknown column(s) unit, nom" in messages
    assert "missing column(s) unit_code" in messages
    with pytest.raises(ImportFailed) as exc:
        import_people(db, "")
    assert "empty" in exc.value.errors[0][1]


def test_cli_import_with_progress_and_errors(db, db_url, tmp_path):
    big = tmp_path / "people.csv"
    rows = [HEADER, "CITY,市委组织部,,,,,,,,,\n"]
    rows += [f"CITY,,,B{i:05d},人员{i},staff,,,,,\n" for i in range(1500)]
    big.write_text("".join(rows), encoding="utf-8")
    result = CliRunner().invoke(main, ["import-people", str(big), "--db", db_url])
    assert result.exit_code == 0, result.output
    assert "1500 people created" in result.output
    assert "importing" in result.output  # the progress bar (stderr is mixed in by CliRunner)

    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "CITY,,,B00001,,staff,,,,,\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["import-people", str(bad), "--db", db_url])
    assert result.exit_code == 1
    assert f"{bad}:2: a person needs a name" in result.output
    result = CliRunner().invoke(main, ["import-people", str(tmp_path / "missing.csv"),
                                       "--db", db_url])
    assert result.exit_code == 2
