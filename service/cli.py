"""`civflow` command line: schema, definitions, organisation, cases, audit, serve.

Each command parses its arguments, calls the engine once and turns engine errors into a
message and an exit code; no rule lives here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import click
from sqlalchemy import func, select

from workflows.db import Database, database_url, upgrade
from workflows.engine import SYSTEM_ACTOR, Actor, Engine
from workflows.errors import CivflowError, DefinitionInvalid, ImportFailed
from workflows.history import verify
from workflows.models import Person, Unit
from workflows.org import import_people
from workflows.spec import load_definition

DEFINITION_SUFFIXES = (".yaml", ".yml", ".json")
DEMO_PEOPLE = Path(__file__).parent / "demo" / "people.csv"

db_option = click.option(
    "--db", "db_url", envvar="CIVFLOW_DATABASE_URL", default=None,
    help="Database URL (default: $CIVFLOW_DATABASE_URL, else sqlite:///civflow.db).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """civflow — civil-service personnel workflows (平时考核, 年度考核, 职级晋升, 下沉一线)."""


def _definition_files(paths: tuple[str, ...]) -> Iterator[Path]:
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(f for f in p.iterdir() if f.suffix in DEFINITION_SUFFIXES)
        else:
            yield p


def _read_definitions(paths: tuple[str, ...]) -> tuple[list[tuple[Path, str]], int]:
    """Read every file; report unreadable ones. Returns (readable files, exit code so far)."""
    out, code = [], 0
    for f in _definition_files(paths):
        try:
            out.append((f, f.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            click.echo(f"{f}: <file>: cannot read: {reason}")
            code = 2
    return out, code


@main.command()
@click.argument("paths", nargs=-1, required=True)
def validate(paths: tuple[str, ...]) -> None:
    """Check flow definitions; print one line per problem (`file: path: message`).

    Exit 0 when all are valid, 1 when any is not, 2 when a file cannot be read.
    """
    files, code = _read_definitions(paths)
    for f, text in files:
        try:
            spec = load_definition(text, str(f))
        except DefinitionInvalid as exc:
            for p in exc.problems:
                click.echo(str(p))
            code = code or 1
        else:
            click.echo(f"{f}: ok: {spec.flow} ({len(spec.states)} states, "
                       f"{len(spec.transitions)} transitions)", err=True)
    sys.exit(code)


@main.command("init-db")
@db_option
def init_db(db_url: str | None) -> None:
    """Create the schema or upgrade it to the latest migration."""
    upgrade(db_url)
    click.echo(f"schema at head: {_shown(db_url)}")


@main.command()
@click.argument("paths", nargs=-1, required=True)
@db_option
def publish(paths: tuple[str, ...], db_url: str | None) -> None:
    """Validate and publish definitions as immutable versions; nothing if any is invalid."""
    files, code = _read_definitions(paths)
    if code:
        sys.exit(code)
    invalid = False
    for f, text in files:
        try:
            load_definition(text, str(f))
        except DefinitionInvalid as exc:
            invalid = True
            for p in exc.problems:
                click.echo(str(p))
    if invalid:
        click.echo("nothing published: fix the problems above", err=True)
        sys.exit(1)
    engine = Engine(Database(db_url))
    for f, text in files:
        r = engine.publish(text, str(f))
        state = "published" if r.created else "unchanged"
        click.echo(f"{state}: {r.flow} v{r.version} ({r.content_hash[:12]})")


@main.command("import-people")
@click.argument("file", type=click.Path(dir_okay=False))
@db_option
def import_people_cmd(file: str, db_url: str | None) -> None:
    """Import units, people, roles and accounts from a CSV file; all rows or none.

    Columns: unit_code, unit_name, parent_unit_code, person_code, name, tier
    (chief|deputy|staff), rank, rank_since (YYYY-MM-DD), post, roles
    (leader;committee;process_owner;admin;group:<name>), username.
    """
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        click.echo(f"{file}: cannot read: {exc}", err=True)
        sys.exit(2)
    db = Database(db_url)
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if total < 1000:
            return
        if bar is None:
            bar = click.progressbar(length=total, label="importing", file=sys.stderr)
            bar.__enter__()
        bar.update(done - bar.pos)

    try:
        report = import_people(db, text, progress)
    except ImportFailed as exc:
        for line, message in exc.errors:
            click.echo(f"{file}:{line}: {message}")
        click.echo(f"nothing imported: {len(exc.errors)} problem(s)", err=True)
        sys.exit(1)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    click.echo(f"imported {report.rows} rows: {report.units_created} units created, "
               f"{report.people_created} people created, {report.people_updated} updated, "
               f"{report.roles_added} roles added, {report.users_created} accounts created")


@main.command("verify-history")
@db_option
def verify_history(db_url: str | None) -> None:
    """Recompute every case's history hash chain; report the first bad record of each."""
    db = Database(db_url)
    with db.unit_of_work(write=False) as s:
        cases, records, breaks = verify(s)
    for b in breaks:
        click.echo(str(b))
    if breaks:
        click.echo(f"{len(breaks)} broken chain(s) in {cases} cases, {records} records",
                   err=True)
        sys.exit(1)
    click.echo(f"history intact: {cases} cases, {records} records")


# --------------------------------------------------------------------------- cases


def _person_id(db: Database, code: str) -> int:
    with db.unit_of_work(write=False) as s:
        pid = s.execute(select(Person.id).where(Person.code == code)).scalar()
    if pid is None:
        raise click.BadParameter(f"no person with code {code!r}")
    return pid


def _fail(exc: CivflowError) -> None:
    click.echo(json.dumps(exc.to_dict(), ensure_ascii=False, default=str), err=True)
    sys.exit(1)


@main.command()
@click.argument("flow")
@click.argument("person_code")
@click.option("--period", default=None, help="Period key, e.g. 2026-11, 2026-Q4.")
@click.option("--data", default=None, help="Initial data as a JSON object.")
@db_option
def start(flow: str, person_code: str, period: str | None, data: str | None,
          db_url: str | None) -> None:
    """Start a case of FLOW for the person with PERSON_CODE."""
    db = Database(db_url)
    try:
        case = Engine(db).start_case(flow, _person_id(db, person_code), period_key=period,
                                     data=_json(data))
    except CivflowError as exc:
        _fail(exc)
    click.echo(f"case {case.id}: {case.flow} v{case.flow_version} {case.period_key or ''} "
               f"state {case.state} version {case.version}")


@main.command()
@click.argument("case_id", type=int)
@click.argument("trigger")
@click.option("--as", "as_code", default=None, help="Person code of the actor; omit for system.")
@click.option("--data", default=None, help="Field values as a JSON object.")
@click.option("--comment", default=None)
@click.option("--expect-version", type=int, default=None)
@db_option
def fire(case_id: int, trigger: str, as_code: str | None, data: str | None,
         comment: str | None, expect_version: int | None, db_url: str | None) -> None:
    """Fire TRIGGER on a case, as a person (--as CODE) or as the system."""
    db = Database(db_url)
    actor = Actor.person(_person_id(db, as_code)) if as_code else SYSTEM_ACTOR
    try:
        r = Engine(db).fire(case_id, trigger, actor, data=_json(data), comment=comment,
                            expected_version=expect_version)
    except CivflowError as exc:
        _fail(exc)
    click.echo(f"case {r.case_id}: {r.from_state} → {r.to_state} (version {r.version})")


@main.command()
@click.argument("case_id", type=int)
@db_option
def show(case_id: int, db_url: str | None) -> None:
    """Print a case and its history as JSON."""
    engine = Engine(Database(db_url))
    try:
        case, history = engine.get_case(case_id), engine.history(case_id)
    except CivflowError as exc:
        _fail(exc)
    click.echo(json.dumps({"case": case.__dict__, "history": history}, ensure_ascii=False,
                          indent=2, default=str))


def _json(text: str | None):
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None


# --------------------------------------------------------------------------- serve


def prepare(db_url: str | None, definitions: Path | None, demo: bool) -> Database:
    """Upgrade the schema, publish the shipped definitions, load the demo org if empty."""
    upgrade(db_url)
    db = Database(db_url)
    engine = Engine(db)
    if definitions and definitions.is_dir():
        for f in _definition_files((str(definitions),)):
            r = engine.publish(f.read_text(encoding="utf-8"), str(f))
            if r.created:
                click.echo(f"published {r.flow} v{r.version}", err=True)
    if demo:
        with db.unit_of_work(write=False) as s:
            empty = not s.execute(select(func.count()).select_from(Unit)).scalar()
        if empty:
            report = import_people(db, DEMO_PEOPLE.read_text(encoding="utf-8"))
            click.echo(f"demo organisation loaded: {report.people_created} people", err=True)
    return db


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--definitions", default="definitions", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder of flow definitions published at start (identical ones are skipped).")
@click.option("--demo/--no-demo", default=True, show_default=True,
              help="Load the demo organisation into an empty database.")
@db_option
def serve(host: str, port: int, definitions: Path, demo: bool, db_url: str | None) -> None:
    """Run the service (development server) on the configured database."""
    from .app import create_app

    prepare(db_url, definitions, demo)
    click.echo(f"civflow on http://{host}:{port}/ — database {_shown(db_url)}", err=True)
    create_app(db_url).run(host=host, port=port, threaded=True)


def _shown(db_url: str | None) -> str:
    from sqlalchemy.engine import make_url

    return make_url(database_url(db_url)).render_as_string(hide_password=True)


if __name__ == "__main__":  # pragma: no cover
    main()
