"""`civflow` command line: schema, definitions, organisation, accounts, cases, audit, demo,
serve, worker.

Each command parses its arguments, calls the engine once and turns engine errors into a
message and an exit code; no rule lives here.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click

from workflows import demo as demo_data
from workflows import migrate
from workflows.accounts import BEARER, MIN_PASSWORD
from workflows.calendar import CALENDAR_FILE, WorkCalendar
from workflows.calendar_file import read_calendar
from workflows.engine import SYSTEM_ACTOR, Actor, Engine, utcnow
from workflows.errors import CivflowError, DefinitionInvalid, ImportFailed, NotFound
from workflows.frontdoor import open_engine, shown_url, upgrade_schema
from workflows.spec import load_definition

from .runtime import background, definitions_folder, load_calendar, make_engine

DEFINITION_SUFFIXES = (".yaml", ".yml", ".json")

db_option = click.option(
    "--db", "db_url", envvar="CIVFLOW_DATABASE_URL", default=None,
    help="Database URL (default: $CIVFLOW_DATABASE_URL, else sqlite:///civflow.db).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """civflow — civil-service personnel workflows (平时考核, 年度考核, 职级晋升, 下沉一线)."""


def _definition_files(paths: tuple[str, ...]) -> Iterator[Path]:
    """Flow files and the calendar file: a folder gives its *.yaml/*.yml/*.json."""
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(f for f in p.iterdir() if f.suffix in DEFINITION_SUFFIXES)
        else:
            yield p


def _is_calendar(f: Path) -> bool:
    """`calendar.yaml` is the working-day calendar (工作日历), not a flow."""
    return f.name == CALENDAR_FILE


def _check(f: Path, text: str) -> str:
    """Validate a flow or the calendar file; the line saying it is fine, or raise
    DefinitionInvalid."""
    if _is_calendar(f):
        cal = read_calendar(text, str(f))
        years = f", years entered in full: {', '.join(map(str, sorted(cal.years)))}" \
            if cal.years else ""
        return (f"{f}: ok: working-day calendar ({len(cal.holidays)} extra holidays, "
                f"{len(cal.workdays)} extra working days{years})")
    spec = load_definition(text, str(f))
    return f"{f}: ok: {spec.flow} ({len(spec.states)} states, {len(spec.transitions)} transitions)"


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
            ok = _check(f, text)
        except DefinitionInvalid as exc:
            for p in exc.problems:
                click.echo(str(p))
            code = code or 1
        else:
            click.echo(ok, err=True)
    sys.exit(code)


@main.command("init-db")
@db_option
def init_db(db_url: str | None) -> None:
    """Create the schema or upgrade it to the latest migration."""
    upgrade_schema(db_url)
    click.echo(f"schema at head: {_shown(db_url)}")


@main.command()
@click.argument("paths", nargs=-1, required=True)
@db_option
def publish(paths: tuple[str, ...], db_url: str | None) -> None:
    """Validate and publish definitions as immutable versions; nothing if any is invalid.

    The calendar file (calendar.yaml) among them is checked, not published: the service
    reads it from its definitions folder."""
    files, code = _read_definitions(paths)
    if code:
        sys.exit(code)
    invalid = False
    for f, text in files:
        try:
            _check(f, text)
        except DefinitionInvalid as exc:
            invalid = True
            for p in exc.problems:
                click.echo(str(p))
    if invalid:
        click.echo("nothing published: fix the problems above", err=True)
        sys.exit(1)
    engine = open_engine(db_url)
    for f, text in files:
        if _is_calendar(f):
            click.echo(f"skipped: {f} (the working-day calendar, valid; not a flow — the "
                       "service reads it from its definitions folder)")
            continue
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
    engine = open_engine(db_url)
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
        report = engine.door.org.import_people(viewer=None, text=text, progress=progress)
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
    """Recompute every case's history hash chain, and check each case against its history;
    report the first problem of each case."""
    cases, records, breaks = make_engine(db_url).verify_history()
    for b in breaks:
        click.echo(str(b))
    if breaks:
        click.echo(f"{len(breaks)} broken chain(s) in {cases} cases, {records} records",
                   err=True)
        sys.exit(1)
    click.echo(f"history intact: {cases} cases, {records} records")


@main.command("audit-case-data")
@click.option("--flow", default=None, help="Only the cases of this flow.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per finding.")
@db_option
def audit_case_data(flow: str | None, as_json: bool, db_url: str | None) -> None:
    """List case data that no entitled writer wrote (出处核查): start data the definition
    does not accept at start, values a transition does not take or a role it does not name
    wrote, values in no history record. Rules and effects ignore these values; this shows
    where they are. Exit status 1 when there are any."""
    checked, found = make_engine(db_url).audit_case_data(flow)
    for f in found:
        click.echo(json.dumps(f.__dict__, ensure_ascii=False) if as_json else str(f))
    if found:
        cases = len({f.case_id for f in found})
        click.echo(f"{len(found)} value(s) in {cases} of {checked} cases were not written "
                   "by an entitled writer", err=True)
        sys.exit(1)
    click.echo(f"case data clean: {checked} cases")


# --------------------------------------------------------------------------- cases


def _person_id(engine: Engine, code: str) -> int:
    try:
        return engine.door.org.person_id(code=code)
    except NotFound:
        raise click.BadParameter(f"no person with code {code!r}") from None


def _fail(exc: CivflowError) -> None:
    click.echo(json.dumps(exc.to_dict(), ensure_ascii=False, default=str), err=True)
    sys.exit(1)


@main.command()
@click.argument("flow")
@click.argument("person_code")
@click.option("--period", default=None, help="Period key, e.g. 2026-11, 2026-Q4.")
@click.option("--data", default=None, help="Initial data as a JSON object: only fields the "
              "flow's start: block accepts from system.")
@db_option
def start(flow: str, person_code: str, period: str | None, data: str | None,
          db_url: str | None) -> None:
    """Start a case of FLOW for the person with PERSON_CODE."""
    engine = make_engine(db_url)
    try:
        case = engine.start_case(flow, _person_id(engine, person_code), period_key=period,
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
    engine = make_engine(db_url)
    actor = Actor.person(_person_id(engine, as_code)) if as_code else SYSTEM_ACTOR
    try:
        r = engine.fire(case_id, trigger, actor, data=_json(data), comment=comment,
                        expected_version=expect_version)
    except CivflowError as exc:
        _fail(exc)
    click.echo(f"case {r.case_id}: {r.from_state} → {r.to_state} (version {r.version})")


@main.command()
@click.argument("case_id", type=int)
@db_option
def show(case_id: int, db_url: str | None) -> None:
    """Print a case and its history as JSON."""
    engine = open_engine(db_url)
    try:
        case, history = engine.get_case(case_id), engine.history(case_id)
    except CivflowError as exc:
        _fail(exc)
    click.echo(json.dumps({"case": case.__dict__, "history": history}, ensure_ascii=False,
                          indent=2, default=str))


@main.command("migrate")
@click.argument("flow")
@click.option("--from", "from_version", type=click.IntRange(min=1), required=True,
              help="The version the cases are on.")
@click.option("--to", "to_version", type=click.IntRange(min=1), required=True,
              help="A newer, published version.")
@click.option("--map", "pairs", multiple=True, metavar="OLD=NEW",
              help="Map a state the new version removed (repeatable); the other states keep "
                   "their names.")
@click.option("--dry-run", is_flag=True, help="Print the preview only; change nothing.")
@click.option("--batch", type=click.IntRange(1, 10_000), default=migrate.BATCH,
              show_default=True, help="Cases per batch (each case is its own transaction).")
@click.option("--as", "as_code", default=None,
              help="Person code of the process owner or admin recorded as migrating; omit "
                   "for the operator (recorded as system).")
@db_option
def migrate_cmd(flow: str, from_version: int, to_version: int, pairs: tuple[str, ...],
                dry_run: bool, batch: int, as_code: str | None, db_url: str | None) -> None:
    """Move the open cases of FLOW from one version to a newer one (迁移): print the
    preview (per case: old → new state, timers disarmed and armed, fields the new version
    does not declare — kept —, or why it cannot move), then migrate in batches. Running it
    again resumes an interrupted migration."""
    engine = make_engine(db_url)
    try:
        viewer = None
        if as_code:
            viewer = engine.door.org.viewer(code=as_code)
        mapping = migrate.parse_mapping(pairs)
        preview = migrate.plan(engine, flow, from_version, to_version, mapping, viewer)
        _print_preview(preview, engine.calendar)
        if dry_run:
            return

        def progress(r: migrate.RunResult) -> None:
            click.echo(f"… {r.moved} moved, {r.refused} refused, {r.skipped} skipped")

        result = migrate.run(engine, flow, from_version, to_version, mapping, viewer,
                             batch=batch, progress=progress)
    except CivflowError as exc:
        _fail(exc)
    click.echo(f"migration run {result.run_id}" + (" (resumed)" if result.resumed else "")
               + f": {result.moved} moved, {result.refused} refused, {result.skipped} "
               f"already moved; {result.status}")


def _print_preview(p: migrate.Preview, cal: WorkCalendar) -> None:
    def when(t: migrate.TimerPlan) -> str:
        return f"{t.kind} {cal.local(t.due_at):%Y-%m-%d %H:%M}"

    removed = [k for k, v in p.mapping.items() if not v]
    click.echo(f"{p.flow} v{p.from_version} → v{p.to_version}: {len(p.cases)} open case(s), "
               f"{p.moving} would move, {p.refused} cannot"
               + (f"; removed and not mapped: {', '.join(removed)}" if removed else ""))
    for c in p.cases:
        head = f"case {c.case_id} {c.subject_name} {c.period_key or ''}".rstrip()
        if c.refusal:
            click.echo(f"{head}: {c.from_state} — cannot move: {c.refusal}")
            continue
        timers = ", ".join([f"-{when(t)}" for t in c.disarm]
                           + [f"+{when(t)}" for t in c.arm])
        kept = (f"; kept, not in v{p.to_version}: {', '.join(c.fields_not_declared)}"
                if c.fields_not_declared else "")
        click.echo(f"{head}: {c.from_state} → {c.to_state}"
                   + (f"; timers {timers}" if timers else "") + kept)


def _json(text: str | None):
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None


# --------------------------------------------------------------------------- accounts


@main.command("create-user")
@click.argument("username")
@click.option("--person", "person_code", default=None, metavar="CODE",
              help="Person code the account acts as; its roles come from the organisation.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of standard input (scripts).")
@db_option
def create_user_cmd(username: str, person_code: str | None, password_stdin: bool,
                    db_url: str | None) -> None:
    """Create an account, or set the password of an existing one.

    Asks for the password twice (hidden) unless --password-stdin is given. Passwords are
    stored as Argon2id hashes and need at least 8 characters.
    """
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True,
                                confirmation_prompt="Repeat the password")
    if len(password) < MIN_PASSWORD:
        click.echo(f"the password must be at least {MIN_PASSWORD} characters long "
                   f"(got {len(password)}); nothing changed", err=True)
        sys.exit(1)
    try:
        user = open_engine(db_url).door.accounts.create_user(
            username=username, password=password, person_code=person_code)
    except CivflowError as exc:
        _fail(exc)
    linked = f" (person {person_code})" if person_code else ""
    click.echo(f"{'created' if user.created else 'password changed for'} user "
               f"{user.username}{linked}")


@main.command()
@click.argument("username")
@click.option("--days", type=click.IntRange(1, 3650), default=30, show_default=True,
              help="Days until the token expires.")
@db_option
def token(username: str, days: int, db_url: str | None) -> None:
    """Issue a bearer token for USERNAME (scripts, Prometheus scraping).

    Prints the token alone on standard output, so `TOKEN=$(civflow token admin)` works, and
    its expiry on standard error. Send it as `Authorization: Bearer <token>`; it acts with
    the account's roles and can be revoked with DELETE /api/v1/auth/token.
    """
    try:
        issued = open_engine(db_url).door.accounts.issue_token(
            username=username, kind=BEARER, ttl=dt.timedelta(days=days), now=utcnow())
    except CivflowError as exc:
        _fail(exc)
    value, expires = issued.token, issued.expires_at
    click.echo(value)
    click.echo(f"bearer token for {username}, expires {expires:%Y-%m-%d %H:%M} UTC "
               f"({days} days)", err=True)


@main.command("lockouts")
@db_option
def lockouts_cmd(db_url: str | None) -> None:
    """List failed-login counters and lockouts (登录锁定), locked ones first.

    One line each: the key (account:NAME or address:IP), the failures counted in the
    current window, and until when it is locked."""
    rows = open_engine(db_url).door.accounts.lockouts(viewer=None, now=utcnow())
    for r in rows:
        until = f"locked until {r.locked_until:%Y-%m-%d %H:%M:%S} UTC" if r.locked else "open"
        click.echo(f"{r.key}\t{r.failures} failure(s)\t{until}")
    if not rows:
        click.echo("no failed logins counted", err=True)


@main.command()
@click.argument("username", required=False)
@click.option("--address", default=None, metavar="IP", help="Lift an address's lockout instead.")
@db_option
def unlock(username: str | None, address: str | None, db_url: str | None) -> None:
    """Lift the login lockout of USERNAME (or of --address IP) at once (解除锁定).

    Clears the failed-login counter, so the next login is checked normally; recorded in
    the security log (GET /api/v1/auth/security-events)."""
    if (username is None) == (address is None):
        raise click.UsageError("give a USERNAME or --address IP (one of them)")
    try:
        was = open_engine(db_url).door.accounts.lift_lockout(
            viewer=None, username=username, address=address, now=utcnow())
    except CivflowError as exc:
        _fail(exc)
    what = f"user {username}" if username is not None else f"address {address}"
    if was is None:
        click.echo(f"no failed logins counted for {what}; nothing to lift")
    else:
        click.echo(f"lifted: {what} ({was.failures} failure(s)"
                   f"{', was locked' if was.locked else ''})")


# --------------------------------------------------------------------------- demo, serve


def _publish_shipped(engine: Engine, definitions: Path | None) -> list:
    """Publish every definition in the folder (identical content publishes nothing)."""
    if definitions is None:
        return []
    if not definitions.is_dir():
        click.echo(f"{definitions}: no such folder; no flows published", err=True)
        return []
    results = []
    for f in _definition_files((str(definitions),)):
        try:
            if _is_calendar(f):  # read by make_engine (WorkCalendar.load), not published
                _check(f, f.read_text(encoding="utf-8"))
                continue
            results.append(engine.publish(f.read_text(encoding="utf-8"), str(f)))
        except DefinitionInvalid as exc:
            for p in exc.problems:
                click.echo(str(p), err=True)
            click.echo(f"{f}: not published: fix the problems above", err=True)
            sys.exit(1)
    return results


def _load_demo(engine: Engine, definitions: Path) -> demo_data.DemoResult:
    try:
        return engine.door.demo.load(calendar=load_calendar(definitions))
    except ImportFailed as exc:
        for line, message in exc.errors:
            click.echo(f"{demo_data.PEOPLE_CSV}:{line}: {message}", err=True)
        click.echo("demo organisation not loaded: it clashes with the database", err=True)
        sys.exit(1)


def prepare(db_url: str | None, definitions: Path | None, demo: bool) -> Engine:
    """First start of `serve`: upgrade the schema, publish the shipped definitions (or those
    of `definitions`, `definitions_folder`), and load the demo organisation (with its
    accounts) into a database that has no units yet."""
    definitions = definitions_folder(definitions)
    upgrade_schema(db_url)
    engine = open_engine(db_url, calendar=load_calendar(definitions))
    for r in _publish_shipped(engine, definitions):
        if r.created:
            click.echo(f"published {r.flow} v{r.version}", err=True)
    if demo and not engine.door.demo.has_units():
        result = _load_demo(engine, definitions)
        click.echo(f"demo organisation loaded: {result.people_created} people, "
                   f"{result.accounts_created} accounts", err=True)
        click.echo(demo_data.table(engine.door.demo.accounts()), err=True)
    return engine


definitions_option = click.option(
    "--definitions", envvar="CIVFLOW_DEFINITIONS", default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of flow definitions to publish (identical ones are skipped) and of the "
         "calendar.yaml to use (default: $CIVFLOW_DEFINITIONS, else the definitions shipped "
         "with civflow).")


@main.command()
@definitions_option
@db_option
def demo(definitions: Path | None, db_url: str | None) -> None:
    """Set up a database to try civflow: schema, shipped flows, demo organisation.

    The organisation is 示范市人力资源和社会保障局 with three divisions and 30 people; the
    accounts admin, owner, leader1-3, committee1 and staff01-24 all have the password
    civflow-demo. Running it again changes nothing.
    """
    definitions = definitions_folder(definitions)
    upgrade_schema(db_url)
    engine = open_engine(db_url, calendar=load_calendar(definitions))
    published = _publish_shipped(engine, definitions)
    for r in published:
        click.echo(f"{'published' if r.created else 'unchanged'}: {r.flow} v{r.version}")
    result = _load_demo(engine, definitions)
    if result.people_created or result.units_created:
        click.echo(f"demo organisation created: {result.units_created} units, "
                   f"{result.people_created} people, {result.accounts_created} accounts")
    else:
        click.echo("demo organisation already present")
    if result.passwords_set:
        click.echo(f"password set for {result.passwords_set} account(s)")
    if result.facts_added:
        click.echo(f"demo facts loaded: {result.facts_added} (annual results 2024–2025, "
                   "exams, training records and totals, a sanction, a commendation)")
    if result.history_cases:
        click.echo(f"demo history: {result.history_cases} cases, {result.history_records} "
                   "records (12 months of 平时考核, a dispatch under way, a promotion in "
                   "public notice, a contact point's monthly reports)")
    click.echo("")
    click.echo(demo_data.table(engine.door.demo.accounts()))
    click.echo("")
    click.echo(f"password of every demo account: {demo_data.PASSWORD}")
    if not result.changed and not any(r.created for r in published):
        click.echo(f"nothing changed: {_shown(db_url)} already had everything")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@definitions_option
@click.option("--demo/--no-demo", default=True, show_default=True,
              help="Load the demo organisation and accounts into an empty database.")
@click.option("--scheduler/--no-scheduler", "with_scheduler", default=True,
              show_default=True,
              help="Also run the scheduler (timers ticked every second) in this process; "
                   "--no-scheduler when `civflow worker` processes do it.")
@db_option
def serve(host: str, port: int, definitions: Path | None, demo: bool, with_scheduler: bool,
          db_url: str | None) -> None:
    """Run the service (Flask development server) and, unless --no-scheduler, the
    scheduler that fires timers, on the configured database.

    For production use gunicorn: see README.md.
    """
    from .app import create_app

    definitions = definitions_folder(definitions)
    engine = prepare(db_url, definitions, demo)
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base = f"http://{shown_host}:{port}"
    click.echo(f"civflow on {base}/ — database {_shown(db_url)}, definitions {definitions}",
               err=True)
    click.echo(f"log in: {base}/login (then {base}/docs); scripts: POST "
               f"{base}/api/v1/auth/token", err=True)
    if engine.door.demo.is_loaded():
        click.echo(f"demo accounts: admin, owner, leader1-3, committee1, staff01-24; password "
                   f"{demo_data.PASSWORD}", err=True)
    elif demo:
        click.echo("this database has its own organisation and no demo accounts; "
                   "`civflow demo` adds them, `civflow create-user` makes an account", err=True)
    app = create_app(db_url, engine=make_engine(db_url, definitions))
    scheduler = None
    if with_scheduler:
        from .scheduler import start_scheduler, stop_scheduler

        scheduler = start_scheduler(app)
        click.echo("scheduler: timers ticked every second in this process "
                   "(--no-scheduler to leave it to `civflow worker`)", err=True)
    try:
        app.run(host=host, port=port, threaded=True)
    finally:
        if scheduler is not None:
            stop_scheduler(scheduler)


@main.command()
@click.option("--tick", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              metavar="SECONDS", help="Seconds between timer ticks.")
@click.option("--lease", type=click.FloatRange(min=1.0), default=30.0, show_default=True,
              metavar="SECONDS",
              help="How long a claim on due timers lasts: the timers of a worker that died "
                   "are taken over by the others once it runs out.")
@db_option
def worker(tick: float, lease: float, db_url: str | None) -> None:
    """Run the scheduler alone, without the web service, until SIGTERM or Ctrl-C.

    Every --tick seconds it claims the due timers and fires each one in the same
    transaction as the state change it causes. Any number of workers and `serve` processes
    may run against one database: each timer fires once. On SIGTERM or SIGINT it stops
    claiming, finishes the timers in hand and exits 0; a second signal exits at once (its
    claims are taken over when their lease runs out). Log level: $CIVFLOW_LOG_LEVEL (INFO).
    It does not create or upgrade the schema: run `civflow init-db` (or `serve`) first.
    """
    from .scheduler import build_scheduler, stop_scheduler

    log = _worker_logging()
    probe = open_engine(db_url).door.system
    try:
        probe.check_schema()
    except Exception as exc:  # noqa: BLE001 - any failure here means "cannot work"
        click.echo(f"cannot use the database {_shown(db_url)}: {exc.__class__.__name__}: "
                   f"{str(exc).splitlines()[0]} (run `civflow init-db` first?)", err=True)
        sys.exit(2)
    engine = make_engine(db_url)
    scheduler = build_scheduler(engine, tick_seconds=tick, lease=dt.timedelta(seconds=lease),
                                **background(engine))
    received: list[str] = []

    def on_signal(signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        if received:
            log.warning("worker: %s while stopping: exiting now", name)
            os._exit(1)
        received.append(name)  # a flag only: the main loop below does the stopping

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    scheduler.start()
    log.info("worker %s started: tick every %gs, lease %gs, time zone %s, database %s",
             scheduler.civflow_worker.node, tick, lease, scheduler.timezone, _shown(db_url))
    try:
        while not received:
            time.sleep(0.1)
        log.info("worker %s: %s received, finishing the timers in hand",
                 scheduler.civflow_worker.node, received[0])
    finally:
        stop_scheduler(scheduler)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        probe.dispose()
    log.info("worker %s stopped", scheduler.civflow_worker.node)


def _worker_logging() -> logging.Logger:
    """civflow's log lines on standard error, as `serve` prints them (service.app)."""
    root = logging.getLogger("civflow")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(os.environ.get("CIVFLOW_LOG_LEVEL", "INFO"))
        root.propagate = False
    return logging.getLogger("civflow.worker")


def _shown(db_url: str | None) -> str:
    return shown_url(db_url)


if __name__ == "__main__":  # pragma: no cover
    main()
