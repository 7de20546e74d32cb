"""The process `test_kill_bulk.py` kills: one `Engine.fire_bulk` approving (审定) every case
in `approval`, as the committee member, in one transaction.

    python -m tests.reliability.bulk_victim DB_URL COMMITTEE_ID PAUSE

It reports its progress on standard output, one line per event, flushed at once, for the
test to pick its moment from: `locked` (the cases are locked FOR UPDATE), `rows N` (N
history records written so far, uncommitted), `commit` (everything written, COMMIT about to
be sent), `done N` (committed, N cases moved). These are SQLAlchemy event listeners in this
test script only; the engine has no test hook. With PAUSE=commit it waits before sending
COMMIT (the one moment that cannot be caught from outside otherwise). Its database
connections are named `civflow-bulk-victim` (application_name) so that the test can watch
the transaction in pg_stat_activity.
"""

from __future__ import annotations

import sys
import time

from sqlalchemy import event, select

from workflows.db import Database
from workflows.engine import Actor, Engine
from workflows.models import Case

APPLICATION_NAME = "civflow-bulk-victim"


def main(url: str, committee: int, pause: str) -> None:
    db = Database(url, connect_args={"application_name": APPLICATION_NAME})
    rows = 0

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    @event.listens_for(db.engine, "after_cursor_execute")
    def _progress(_conn, _cursor, statement, *_args):
        nonlocal rows
        head = statement.lstrip().upper()
        if "FOR UPDATE" in head and head.startswith("SELECT"):
            say("locked")
        elif "INSERT INTO CASE_HISTORY" in head:  # alone, or in the CTE of `history.advance`
            rows += 1
            say(f"rows {rows}")

    @event.listens_for(db.engine, "commit")
    def _commit(_conn):
        if rows:  # the bulk transaction, not the reads before it
            say("commit")
            if pause == "commit":
                time.sleep(600)  # killed here

    with db.unit_of_work(write=False) as s:
        ids = list(s.execute(select(Case.id).where(Case.state == "approval")
                             .order_by(Case.id)).scalars())
    say(f"cases {len(ids)}")
    result = Engine(db).fire_bulk(ids, "approve", Actor.person(committee))
    say(f"done {len(result.done)} refused {len(result.refused)}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "")
