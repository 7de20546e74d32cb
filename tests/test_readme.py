"""Issue 14.9: the README's command-line examples work as written on the database
`make serve` creates (schema, shipped flows, demo organisation and its history), on SQLite
and PostgreSQL. `serve` and `worker` run until stopped and are left out; `N` is the case
number the README's `civflow start` line prints."""

from __future__ import annotations

import glob
import re
import shlex

from click.testing import CliRunner

from service.cli import main, prepare
from workflows.db import Database

from .conftest import ROOT

LONG_RUNNING = ("serve", "worker")


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Command line"):]
    block = section[section.index("```sh\n") + len("```sh\n"):]
    return [line for line in block[:block.index("```")].splitlines() if line.strip()]


def test_the_readme_examples_are_commands():
    lines = readme_commands()
    assert any("civflow start" in ln for ln in lines) and any("civflow fire N" in ln
                                                               for ln in lines)
    assert all(re.match(r"(printf .* \| )?(\.venv/bin/)?civflow ", ln) for ln in lines), lines


def test_every_readme_example_works_on_the_database_make_serve_creates(db_url, monkeypatch):
    prepare(db_url, None, demo=True)  # what `make serve` does on first start
    monkeypatch.chdir(ROOT)  # the README's paths are the repository's
    runner = CliRunner()
    case_id = None
    ran = []
    for line in readme_commands():
        stdin = None
        if " | " in line:  # printf '%s\n' 'pw' | civflow …: the printf is the input
            printf, line = line.split(" | ", 1)
            fmt, *values = shlex.split(printf)[1:]
            stdin = fmt.replace("\\n", "\n") % tuple(values)
        words = shlex.split(line, comments=True)
        args = words[1:]
        if args and args[0] in LONG_RUNNING:
            continue
        if "N" in args:
            assert case_id is not None, f"{line}: no case started before it"
            args = [case_id if a == "N" else a for a in args]
        args = [x for a in args for x in (sorted(glob.glob(a)) if "*" in a else [a])]
        res = runner.invoke(main, args, input=stdin, env={"CIVFLOW_DATABASE_URL": db_url})
        assert res.exit_code == 0, f"{line}\n{res.output}"
        if args[:1] == ["start"]:
            case_id = re.match(r"case (\d+):", res.stdout).group(1)
        ran.append(args[0] if args else "--help")
    assert case_id is not None
    assert {"start", "fire", "show", "validate", "publish", "demo"} <= set(ran)
    Database(db_url).dispose()
