"""Run every benchmark in sequence and write the results to docs/BENCHMARKS.md.

    .venv/bin/python bench/run_all.py [--only engine,http,query,cycle,timer,memory]
                                      [--quick] [--cases N] [--people N]
                                      [--output PATH | --no-write]
    make bench-all ARGS="--only query,memory"

Each benchmark runs as its own process (``.venv/bin/python bench/<name>_bench.py …``), its
output shown as it comes and kept. From each, the medians and ratios are taken — from the
JSON summary the newer ones write (``--json``: query, cycle, memory) or from the table the
older ones print (engine, http, timer) — and written to the benchmark's section of
``docs/BENCHMARKS.md`` with the exact command, the date and the load average before and
after; the top of the file gets the machine (CPU, cores, RAM, PostgreSQL, Python). Sections
of benchmarks that did not run are left as they were, and so is everything outside the
generated sections.

Sizes: by default the issue's (a million cases for the query and memory benchmarks,
100,000 people for the cycle one, the defaults of the others). ``--quick`` runs small
sizes (50,000 cases, 5,000 people, short HTTP and timer runs) as a smoke run and writes
nothing unless ``--output`` is given. ``--cases`` and ``--people`` override the sizes.

The machine is shared: compare ratios and medians, read the load average, and run the
whole set when the machine is otherwise quiet. Exit status 1 when a benchmark failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
from benchlib import ROOT, say

BENCHES = ("engine", "http", "query", "cycle", "timer", "memory")
JSON_BENCHES = ("query", "cycle", "memory")
DEFAULT_OUTPUT = ROOT / "docs" / "BENCHMARKS.md"
WHAT = {
    "engine": "Engine actions/s against SpiffWorkflow, raw UPDATE + INSERT and a baseline "
              "revision, and against a replay of its own SQL (SQLite, PostgreSQL)",
    "http": "HTTP actions/s through gunicorn (2 workers) against Engine.fire",
    "query": "queue and case-list latency, 1M cases, against the same SQL (target p95 ≤ 25 ms)",
    "cycle": "opening a period for 100,000 people against bulk COPY of the same rows",
    "timer": "timer drain rate and firing lag, 1 and 3 worker processes",
    "memory": "service worker memory, 1M cases against an empty database",
}


def arguments(name: str, quick: bool, cases: int | None, people: int | None) -> list[str]:
    """The command-line arguments of one benchmark for this run."""
    if name == "engine":
        return ["--cases", "30", "--repeat", "1"] if quick else []
    if name == "http":
        return (["--cases", "800", "--duration", "3", "--engine-cases", "200", "--staff", "100",
                 "--units", "5"] if quick else [])
    if name == "timer":
        return ["--due", "300", "--pending", "3000", "--spread", "5"] if quick else []
    if name == "query":
        n = cases or (50_000 if quick else 1_000_000)
        # EXPLAIN plans are for investigating (query_bench.py --explain miss), not for the page.
        return ["--cases", str(n), "--explain", "none"] + (["--rounds", "10"] if quick else [])
    if name == "cycle":
        return ["--people", str(people or (5_000 if quick else 100_000))]
    if name == "memory":
        n = cases or (50_000 if quick else 1_000_000)
        return ["--cases", str(n), "--requests", "300" if quick else "2000"]
    raise ValueError(name)


# --------------------------------------------------------------------------- parsing


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def parse_engine(out: str) -> list[dict[str, Any]]:
    rows = []
    for m in re.finditer(r"^(sqlite|postgresql)\s+([\d,]+)\s+([\d,]+)\s+(\d+)%", out, re.M):
        rows.append({"what": f"actions/s, {m[1]}, against the replay", "value": _num(m[2]),
                     "ceiling": _num(m[3]), "ratio": _num(m[4]) / 100, "unit": "actions/s",
                     "note": "engine / its own statements replayed (not the database's limit)"})
    return parse_peers(out) + rows


def parse_peers(out: str) -> list[dict[str, Any]]:
    """The peers table of bench/peer_bench.py: civflow against each peer, as ratios."""
    base = re.search(r"; baseline (\S+) = ", out)
    names = ("SpiffWorkflow", "raw UPDATE + INSERT",
             f"baseline {base[1]}" if base else "baseline")
    cell = r"([\d,]+|—)"
    rows = []
    for m in re.finditer(rf"^peer (sqlite|postgresql)\s+(fire-only|start\+fire)\s+{cell}\s+"
                         rf"{cell}\s+{cell}\s+{cell}", out, re.M):
        if m[3] == "—":
            continue
        mine = _num(m[3])
        for name, theirs in zip(names, (m[4], m[5], m[6]), strict=True):
            if theirs == "—":
                continue
            rows.append({"what": f"civflow vs {name}, {m[1]}, {m[2]}", "value": mine,
                         "ceiling": _num(theirs), "ratio": round(mine / _num(theirs), 2),
                         "unit": "steps/s" if m[2] == "fire-only" else "transactions/s",
                         "note": "civflow / peer (medians of one run)"})
    return rows


def parse_http(out: str) -> list[dict[str, Any]]:
    rates: dict[str, tuple[float, str, str]] = {}
    for m in re.finditer(r"^((?:HTTP|engine), .+?)\s{2,}([\d,]+)\s+([\d.]+ ms)\s+([\d.]+ ms)",
                         out, re.M):
        rates[m[1]] = (_num(m[2]), m[3], m[4])
    http = next(((k, v) for k, v in rates.items() if k.startswith("HTTP")), None)
    rows = []
    for label, (rate, p50, _p99) in rates.items():
        if http is None or label == http[0]:
            continue
        rows.append({"what": f"{http[0]} vs {label}", "value": http[1][0], "ceiling": rate,
                     "ratio": round(http[1][0] / rate, 3), "unit": "actions/s",
                     "note": f"HTTP p50 {http[1][1]}, p99 {http[1][2]}; engine p50 {p50}"})
    return rows


def parse_timer(out: str) -> list[dict[str, Any]]:
    rows = []
    pattern = (r"^\s*(\d+)\s+(drain|lag)\s+([\d,]+)\s+(at once|[\d,]+)\s+([\d.]+)\s+([\d,]+)"
               r"(?:\s+([\d.]+)s\s+([\d.]+)s\s+([\d.]+)s)?")
    for m in re.finditer(pattern, out, re.M):
        if m[2] == "drain":
            rows.append({"what": f"drain, {m[1]} worker(s)", "value": _num(m[6]),
                         "ceiling": None, "ratio": None, "unit": "timers/s",
                         "note": f"{m[3]} due at once, done in {m[5]} s"})
        else:
            rows.append({"what": f"lag p99, {m[1]} worker(s)", "value": _num(m[8]),
                         "ceiling": None, "ratio": None, "unit": "s",
                         "note": f"p50 {m[7]} s, max {m[9]} s; {m[3]} due at {m[4]}/s"})
    one = next((r for r in rows if r["what"] == "drain, 1 worker(s)"), None)
    three = next((r for r in rows if r["what"] == "drain, 3 worker(s)"), None)
    if one and three:
        three["ceiling"], three["ratio"] = one["value"], round(three["value"] / one["value"], 2)
        three["note"] += "; reference: 1 worker"
    return rows


def verdicts(out: str) -> list[str]:
    """The benchmark's own verdict lines (target…, answers…, result…)."""
    return [line for line in out.splitlines()
            if re.match(r"^(target|answers|result|ratio)\b", line)]


# --------------------------------------------------------------------------- running


@dataclass
class Outcome:
    name: str
    command: str
    code: int
    output: str
    seconds: float
    started: str
    load: tuple[tuple[float, ...], tuple[float, ...]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.code == 0


def run(name: str, args: list[str]) -> Outcome:
    script = f"bench/{name}_bench.py"
    with tempfile.TemporaryDirectory(prefix="run_all_") as tmp:
        summary = Path(tmp) / "summary.json"
        extra = ["--json", str(summary)] if name in JSON_BENCHES else []
        cmd = [".venv/bin/python", script, *args]
        say(f"{name}: {' '.join(shlex.quote(c) for c in cmd)}")
        load = os.getloadavg()
        started, t0 = benchlib.now_iso(), time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(ROOT / script), *args, *extra], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True, bufsize=1)
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line)
        code = proc.wait()
        out = Outcome(name, " ".join(shlex.quote(c) for c in cmd), code, "".join(lines),
                      time.perf_counter() - t0, started, (load, os.getloadavg()))
        if summary.exists():
            data = json.loads(summary.read_text(encoding="utf-8"))
            out.rows, out.notes = data["rows"], [n for n in data["notes"] if n]
        elif name == "engine":
            out.rows = parse_engine(out.output)
        elif name == "http":
            out.rows = parse_http(out.output)
        elif name == "timer":
            out.rows = parse_timer(out.output)
        out.notes += verdicts(out.output)
    say(f"{name}: exit {code} after {out.seconds:.0f} s")
    return out


def skipped(name: str, reason: str) -> Outcome:
    say(f"{name}: skipped: {reason}")
    return Outcome(name, "", -1, f"skipped: {reason}", 0.0, benchlib.now_iso(),
                   (os.getloadavg(), os.getloadavg()), notes=[f"skipped: {reason}"])


# --------------------------------------------------------------------------- the document

TEMPLATE = """# Benchmarks

What each benchmark measures, and how, is in the docstring of its script (`bench/`); every
one compares the real code with a ceiling measured in the same run, so read the ratios
first and the absolute figures with the machine and its load in mind. They are written here
by `bench/run_all.py`, which replaces only the generated sections below (between the
`run_all` markers); the text outside them is kept.

    make bench-all                              # everything, the issue's sizes (~12 minutes)
    make bench-all ARGS="--only query,memory"   # a subset; the other sections stay
    .venv/bin/python bench/run_all.py --quick   # small sizes, a smoke run; writes nothing

<!-- run_all:machine:begin -->
<!-- run_all:machine:end -->
"""


def fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,.0f}" if isinstance(value, int | float) else str(value)


def section(o: Outcome, quick: bool) -> str:
    lines = [f"### {o.name}: {WHAT[o.name]}", ""]
    if o.code == -1:
        return "\n".join(lines + [f"Not run: {o.output.removeprefix('skipped: ')}.", ""])
    load = " → ".join("/".join(f"{x:.2f}" for x in avg) for avg in o.load)
    lines += [f"- date: {o.started} ({o.seconds:.0f} s)" + (" — quick (smoke) sizes" if quick
                                                              else ""),
              f"- command: `{o.command}`",
              f"- load average (1/5/15 min), start → end: {load}",
              "- result: " + ("ok" if o.ok else f"**FAILED** (exit {o.code})"), ""]
    if o.rows:
        lines += ["| measured | median | ceiling / reference | ratio | unit | note |",
                  "|---|---:|---:|---:|---|---|"]
        for r in o.rows:
            ratio = r.get("ratio")
            lines.append(f"| {r['what']} | {fmt(r.get('value'))} | {fmt(r.get('ceiling'))} | "
                         f"{'—' if ratio is None else f'{ratio:.2f}'} | {r.get('unit', '')} | "
                         f"{r.get('note', '')} |")
        lines.append("")
    lines += [f"- {n}" for n in o.notes]
    lines += ["", "<details><summary>full output</summary>", "", "```text",
              o.output.rstrip(), "```", "", "</details>", ""]
    return "\n".join(lines)


def machine_block(command: str, ran: list[str]) -> str:
    m = benchlib.machine()
    return "\n".join([
        "## Machine and last run", "",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['ram']} RAM; {m['os']}",
        f"- software: {m['postgresql']}; {m['sqlite']}; {m['python']}",
        f"- last run: `{command}` on {benchlib.now_iso()} ({', '.join(ran)})",
        "- the figures of each benchmark are from the run shown in its section", ""])


def replace_between(text: str, key: str, body: str, before: str | None = None) -> str:
    begin, end = f"<!-- run_all:{key}:begin -->", f"<!-- run_all:{key}:end -->"
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        return head + block + rest.split(end, 1)[1]
    anchor = f"<!-- run_all:{before}:begin -->" if before else None
    if anchor and anchor in text:
        head, rest = text.split(anchor, 1)
        return head + block + "\n\n" + anchor + rest
    return text.rstrip() + "\n\n" + block + "\n"


def write(path: Path, outcomes: list[Outcome], command: str, quick: bool) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else TEMPLATE
    text = replace_between(text, "machine", machine_block(command, [o.name for o in outcomes]))
    if "## Latest results" not in text:
        text = text.replace("<!-- run_all:machine:end -->",
                            "<!-- run_all:machine:end -->\n\n## Latest results", 1)
    for name in BENCHES:
        o = next((o for o in outcomes if o.name == name), None)
        if o is not None:
            later = [b for b in BENCHES[BENCHES.index(name) + 1:]
                     if f"<!-- run_all:{b}:begin -->" in text]
            text = replace_between(text, name, section(o, quick), later[0] if later else None)
    path.write_text(text, encoding="utf-8")
    say(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--only", default=",".join(BENCHES),
                    help=f"comma-separated subset of {', '.join(BENCHES)}")
    ap.add_argument("--quick", action="store_true", help="small sizes; writes nothing unless "
                                                         "--output is given")
    ap.add_argument("--cases", type=int, default=None, help="cases for query and memory")
    ap.add_argument("--people", type=int, default=None, help="people for cycle")
    ap.add_argument("--output", default=None, help=f"default {DEFAULT_OUTPUT.relative_to(ROOT)}")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = [b for b in chosen if b not in BENCHES]
    if unknown or not chosen:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    command = benchlib.command_line("bench/run_all.py", argv)
    outcomes = []
    for name in BENCHES:
        if name not in chosen:
            continue
        if name == "http" and not shutil.which("wrk"):
            outcomes.append(skipped(name, "wrk is not installed (apt-get install -y wrk)"))
            continue
        outcomes.append(run(name, arguments(name, args.quick, args.cases, args.people)))
    print("\nsummary")
    for o in outcomes:
        print(f"  {o.name:<8}{'ok' if o.ok else 'skipped' if o.code == -1 else 'FAILED':<9}"
              f"{o.seconds:>6.0f} s  {len(o.rows)} figures")
    output = Path(args.output) if args.output else (None if args.quick else DEFAULT_OUTPUT)
    if output is not None and not args.no_write:
        write(output, outcomes, command, args.quick)
    return 0 if all(o.ok or o.code == -1 for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
