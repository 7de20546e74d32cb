"""Would HOT case updates pay? civflow's `cases` indexes against the ones no action changes.

    .venv/bin/python bench/hot_bench.py [--cases N] [--repeat R] [--side raw|civflow]

PostgreSQL can update a row in place (a HOT update: no new index entries) only when no
indexed column changes. Every action changes `state`, `updated_at` and `state_entered_at`
(and usually `deadline_at`), and five indexes of `cases` key on them — the ones the queue
and the lists read at a million cases (docs/BENCHMARKS.md, “HOT updates of cases”). This
measures what dropping them would buy: the same side of ``bench/peer_bench.py`` (default
the raw UPDATE + INSERT per step, the database's limit, where index upkeep weighs most;
or civflow's engine) on a freshly migrated scratch database as it is (11 indexes), and on
one with the five dropped and a fillfactor of 80 (6 indexes, updates HOT-able), the two
alternating, R repeats each. Printed: steps/s (medians) and the HOT share of the case
updates from pg_stat_user_tables. PostgreSQL only; nothing is kept.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import benchlib
import peer_bench
import psycopg

# The indexes of `cases` on columns every action changes (workflows/models.py).
VOLATILE = ("ix_cases_updated_at_id", "ix_cases_deadline_at_id", "ix_cases_open_due",
            "ix_cases_open_step", "ix_cases_flow_id_state")
VARIANTS = ("11 indexes (as shipped)", "6 indexes, fillfactor 80")


def measure(side: str, n: int, repeats: int) -> dict[str, list[tuple[float, int, int]]]:
    """Per variant: (steps/s, case updates, HOT ones) for each repeat."""
    from workflows.db import upgrade

    out: dict[str, list[tuple[float, int, int]]] = {v: [] for v in VARIANTS}
    for r in range(repeats):
        for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
            benchlib.say(f"hot: repeat {r + 1}/{repeats}: {side}, {variant}")
            with peer_bench.scratch("postgresql", benchlib) as url:
                upgrade(url)
                if variant == VARIANTS[1]:
                    with psycopg.connect(peer_bench.libpq(url), autocommit=True) as conn:
                        for name in VOLATILE:
                            conn.execute(f"DROP INDEX {name}")
                        conn.execute("ALTER TABLE cases SET (fillfactor = 80)")
                timed = peer_bench.spawn(side, "postgresql", url, n, peer_bench.ROOT)
                updates, hot = peer_bench.hot_counts(url)
                out[variant].append((timed.fire_rate, updates, hot))
    return out


def report(side: str, n: int, out: dict[str, list[tuple[float, int, int]]]) -> None:
    print(f"\nHOT case updates: {side} side of bench/peer_bench.py, {n} cases × 4 steps, "
          f"median of {len(out[VARIANTS[0]])} repeat(s), alternating")
    print(f"{'cases indexes':<28}{'steps/s':>9}{'HOT':>7}   per repeat")
    rates = {}
    for variant, rows in out.items():
        rates[variant] = statistics.median(r for r, _u, _h in rows)
        hot = sum(h for _r, _u, h in rows) / max(1, sum(u for _r, u, _h in rows))
        print(f"{variant:<28}{rates[variant]:>9,.0f}{hot:>7.0%}   "
              + " ".join(f"{r:,.0f}" for r, _u, _h in rows))
    print(f"ratio 6 indexes / 11: {rates[VARIANTS[1]] / rates[VARIANTS[0]]:.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--cases", type=int, default=300, metavar="N")
    ap.add_argument("--repeat", type=int, default=4, metavar="R")
    ap.add_argument("--side", choices=("raw", "civflow"), default="raw")
    args = ap.parse_args(argv)
    if args.cases < 5 or args.repeat < 1:
        ap.error("--cases must be at least 5 and --repeat at least 1")
    report(args.side, args.cases, measure(args.side, args.cases, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
