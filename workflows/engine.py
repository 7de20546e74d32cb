"""The engine: the one front door the service, the CLI and the scheduler hold.

`Engine` is a thin facade over the engine's capabilities, each in its own module and none
importing another in a circle:

- `versions.Versions` — upload, publish and compile flow versions (cached per process);
- `kernel.Kernel` — every change of a case: start, fire, bulk, claim, release, delegate;
- `history` — the one writer of history records and of the hash chain's head;
- `reads.Reads` — one case, lists, the queue, history and timers per viewer, audits;
- `core` — the actor and the typed results.

Every entrance has one calling convention: it opens exactly one unit of work (`db.run` for
changes: a connection found dead before any statement ran is retried once; `unit_of_work`
for reads), applies the viewer's access in the kernel (`Kernel.may_see`) and returns a typed
result (`CaseView`, `FireResult`, `BulkResult`, …). Each change is one transaction: the
case read, the checks (role, fields, rules), the versioned update, the history insert and
the timers commit together or not at all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import provenance, queries
from .access import Viewer
from .accounts import SignedIn, sign_in
from .calendar import WorkCalendar
from .core import (  # noqa: F401 - the names callers import from here
    CLAIM,
    DELEGATE,
    DRAFT,
    PUBLISHED,
    RELEASE,
    START,
    SYSTEM_ACTOR,
    Action,
    Actor,
    BulkResult,
    CaseView,
    FireResult,
    PublishResult,
    request_hash,
    utcnow,
)
from .db import Database, Work
from .errors import Conflict
from .kernel import Kernel
from .machine import CompiledFlow
from .reads import Reads
from .spec import FlowSpec
from .versions import Versions

R = TypeVar("R")


@dataclass(frozen=True)
class Signed(Generic[R]):
    """A change done for a token's holder in the transaction that signed them in
    (`Engine.fire_signed`, `Engine.start_signed`), with who they are."""

    signed: SignedIn
    result: R


SignedFire = Signed[FireResult]


class Engine:
    """One per process. Holds the database and the compiled flows (immutable, cached)."""

    def __init__(self, db: Database, clock: Callable[[], dt.datetime] = utcnow,
                 calendar: WorkCalendar | None = None):
        self.db = db
        self._clock, self._calendar = clock, calendar or WorkCalendar()
        self.flows = Versions(db, clock)
        self.kernel = Kernel(self.flows, clock, self._calendar)
        self.reads = Reads(db, self.flows, self.kernel, clock)
        from .frontdoor import FrontDoor  # the service's one way in beside the kernel
        self.door = FrontDoor(self)

    # The clock and the calendar may be swapped on a running engine (tests move time):
    # every capability sees the same ones.
    @property
    def clock(self) -> Callable[[], dt.datetime]:
        return self._clock

    @clock.setter
    def clock(self, clock: Callable[[], dt.datetime]) -> None:
        self._clock = self.flows.clock = self.kernel.clock = self.reads.clock = clock

    @property
    def calendar(self) -> WorkCalendar:
        return self._calendar

    @calendar.setter
    def calendar(self, calendar: WorkCalendar) -> None:
        self._calendar = self.kernel.calendar = calendar

    # ------------------------------------------------------------------ flow versions

    def upload(self, source: str, filename: str, by: int | None = None) -> PublishResult:
        return self.flows.upload(source, filename, by)

    def publish_version(self, flow: str, version: int, by: int | None = None) -> PublishResult:
        return self.flows.publish_version(flow, version, by)

    def publish(self, source: str, filename: str, by: int | None = None) -> PublishResult:
        return self.flows.publish(source, filename, by)

    def versions(self, flow: str | None = None, version: int | None = None,
                 with_source: bool = False) -> list[Any]:
        return self.flows.versions(flow, version, with_source)

    def version(self, flow: str, version: int, with_source: bool = False) -> Any:
        return self.flows.version(flow, version, with_source)

    def spec_of(self, version_id: int) -> FlowSpec:
        """The compiled (cached) definition of a stored version, draft or published."""
        with self.db.unit_of_work(write=False) as s:
            return self.flows.compiled(s, version_id).spec

    def compiled(self, s: Any, version_id: int) -> CompiledFlow:
        return self.flows.compiled(s, version_id)

    def flow(self, flow: str, version: int | None = None) -> CompiledFlow:
        with self.db.unit_of_work(write=False) as s:
            return self.flows.compiled(s, self.flows.version_id(s, flow, version))

    def all_flows(self, s: Any) -> dict[int, CompiledFlow]:
        return self.flows.all_flows(s)

    # ------------------------------------------------------------------ changes of a case

    def start_case(self, flow: str, subject_id: int, *, actor: Actor = SYSTEM_ACTOR,
                   unit_id: int | None = None, period_key: str | None = None,
                   data: dict[str, Any] | None = None, version: int | None = None,
                   comment: str | None = None) -> CaseView:
        """Open a case of the latest (or given) version for a person; it pins that version."""
        return self.db.run(lambda w: self.kernel.start_case(
            w, flow, subject_id, actor=actor, unit_id=unit_id, period_key=period_key,
            data=data, version=version, comment=comment))

    def start_case_for(self, viewer: Viewer, flow: str, subject_id: int, **kwargs: Any
                       ) -> CaseView:
        """`start_case` by a signed-in person, who must be allowed to start it."""
        return self.db.run(lambda w: self.kernel.start_case(
            w, flow, subject_id, actor=Actor.person(viewer.person_id), viewer=viewer,
            **kwargs))

    def start_signed(self, token: str, now: dt.datetime, flow: str, subject_id: int,
                     **kwargs: Any) -> Signed[CaseView]:
        """`start_case_for` by whoever holds `token` (an API request): the token and their
        roles are read in the transaction that opens the case (`accounts.sign_in`)."""
        return self._signed(token, now, lambda w, actor, v: self.kernel.start_case(
            w, flow, subject_id, actor=actor, viewer=v, **kwargs))

    def fire(self, case_id: int, trigger: str, actor: Actor, *,
             data: dict[str, Any] | None = None, comment: str | None = None,
             expected_version: int | None = None, idempotency_key: str | None = None,
             viewer: Viewer | None = None) -> FireResult:
        """Move one case by `trigger` (`Kernel.fire`)."""
        return self._fire(lambda _w: (actor, viewer), case_id, trigger, data, comment,
                          expected_version, idempotency_key)

    def fire_signed(self, token: str, now: dt.datetime, case_id: int, trigger: str, *,
                    data: dict[str, Any] | None = None, comment: str | None = None,
                    expected_version: int | None = None, idempotency_key: str | None = None
                    ) -> SignedFire:
        """`fire` by whoever holds `token` (an API request): the token, their roles and the
        case are read, and the action done, in one transaction (`accounts.sign_in`).
        AuthFailed as the sign-in gives it; the action's errors as `fire` gives them."""
        signed: list[SignedIn] = []

        def who(w: Work) -> tuple[Actor, Viewer]:
            signed.append(sign_in(w.conn, token, now))
            return Actor.person(signed[-1].viewer.person_id), signed[-1].viewer
        result = self._fire(who, case_id, trigger, data, comment, expected_version,
                            idempotency_key)
        return Signed(signed[-1], result)

    def _fire(self, who: Callable[[Work], tuple[Actor, Viewer | None]], case_id: int,
              trigger: str, data: dict[str, Any] | None, comment: str | None,
              expected_version: int | None, idempotency_key: str | None) -> FireResult:
        def act(w: Work) -> FireResult:
            actor, viewer = who(w)
            return self.kernel.fire(w, case_id, trigger, actor, data=data, comment=comment,
                                    expected_version=expected_version,
                                    idempotency_key=idempotency_key, viewer=viewer)

        def replayed(w: Work) -> FireResult | None:
            actor, viewer = who(w)
            return self.kernel.replayed(w, case_id, trigger, actor, idempotency_key or "",
                                        data, comment, viewer)
        try:
            return self.db.run(act)
        except (Conflict, IntegrityError):
            if idempotency_key:  # the same request may have won in another session
                replay = self.db.run(replayed, write=False)
                if replay:
                    return replay
            raise

    def fire_bulk(self, case_ids: Iterable[int], trigger: str, actor: Actor, *,
                  data: dict[str, Any] | None = None, comment: str | None = None,
                  viewer: Viewer | None = None) -> BulkResult:
        """One trigger over many cases (批量审定, `Kernel.fire_bulk`)."""
        return self.db.run(lambda w: self.kernel.fire_bulk(
            w, case_ids, trigger, actor, data=data, comment=comment, viewer=viewer))

    def bulk_signed(self, token: str, now: dt.datetime, case_ids: Iterable[int],
                    trigger: str, *, data: dict[str, Any] | None = None,
                    comment: str | None = None) -> Signed[BulkResult]:
        """`fire_bulk` by whoever holds `token` (an API request): the token and their roles
        are read in the transaction that moves the cases."""
        return self._signed(token, now, lambda w, actor, v: self.kernel.fire_bulk(
            w, case_ids, trigger, actor, data=data, comment=comment, viewer=v))

    def _signed(self, token: str, now: dt.datetime,
                act: Callable[[Work, Actor, Viewer], R]) -> Signed[R]:
        """`act` as the holder of `token`, signed in (`accounts.sign_in`) inside the unit of
        work that does it; AuthFailed as the sign-in gives it."""
        signed: list[SignedIn] = []

        def run(w: Work) -> R:
            signed.append(sign_in(w.conn, token, now))
            v = signed[-1].viewer
            return act(w, Actor.person(v.person_id), v)
        result = self.db.run(run)
        return Signed(signed[-1], result)

    def claim(self, case_id: int, actor: Actor, expected_version: int | None = None,
              viewer: Viewer | None = None) -> FireResult:
        """Reserve the current step for `actor` (认领)."""
        return self.db.run(lambda w: self.kernel.claim(w, case_id, actor, expected_version,
                                                       viewer))

    def release(self, case_id: int, actor: Actor, expected_version: int | None = None,
                viewer: Viewer | None = None) -> FireResult:
        """Give a claimed step back to every holder of the role."""
        return self.db.run(lambda w: self.kernel.release(w, case_id, actor, expected_version,
                                                         viewer))

    def delegate(self, case_id: int, actor: Actor, to_person: int,
                 comment: str | None = None, expected_version: int | None = None,
                 viewer: Viewer | None = None) -> FireResult:
        """Hand the current step to another holder of the role (转办)."""
        return self.db.run(lambda w: self.kernel.delegate(w, case_id, actor, to_person,
                                                          comment, expected_version, viewer))

    def claim_signed(self, token: str, now: dt.datetime, case_id: int,
                     expected_version: int | None = None) -> Signed[FireResult]:
        """`claim` by whoever holds `token`, signed in inside its transaction."""
        return self._signed(token, now, lambda w, actor, v: self.kernel.claim(
            w, case_id, actor, expected_version, v))

    def release_signed(self, token: str, now: dt.datetime, case_id: int,
                       expected_version: int | None = None) -> Signed[FireResult]:
        """`release` by whoever holds `token`, signed in inside its transaction."""
        return self._signed(token, now, lambda w, actor, v: self.kernel.release(
            w, case_id, actor, expected_version, v))

    def delegate_signed(self, token: str, now: dt.datetime, case_id: int, to_person: int,
                        comment: str | None = None, expected_version: int | None = None
                        ) -> Signed[FireResult]:
        """`delegate` by whoever holds `token`, signed in inside its transaction."""
        return self._signed(token, now, lambda w, actor, v: self.kernel.delegate(
            w, case_id, actor, to_person, comment, expected_version, v))

    def release_claims_of(self, s: Session, person_id: int, by: int | None) -> int:
        """`Kernel.release_claims_of` inside the caller's session (the organisation import
        deactivating a person)."""
        return self.kernel.release_claims_of(Work(s.connection(), s), person_id, by)

    # ------------------------------------------------------------------ reads

    def get_case(self, case_id: int) -> CaseView:
        return self.reads.get_case(case_id)

    def history(self, case_id: int) -> list[dict[str, Any]]:
        return self.reads.history(case_id)

    def actions(self, case_id: int, actor: Actor, lang: str = "zh") -> list[Action]:
        return self.reads.actions(case_id, actor, lang)

    def list_cases(self, viewer: Viewer, f: queries.CaseFilter, lang: str = "zh"
                   ) -> tuple[list[queries.CaseRow], int]:
        return self.reads.list_cases(viewer, f, lang)

    def count_stuck(self) -> int:
        return self.reads.count_stuck()

    def queue(self, viewer: Viewer, f: queries.CaseFilter, lang: str = "zh"
              ) -> tuple[list[queries.CaseRow], int]:
        return self.reads.queue(viewer, f, lang)

    def case_for(self, viewer: Viewer, case_id: int, lang: str = "zh") -> queries.CaseRow:
        return self.reads.case_for(viewer, case_id, lang)

    def history_for(self, viewer: Viewer, case_id: int) -> list[dict[str, Any]]:
        return self.reads.history_for(viewer, case_id)

    def timers_for(self, viewer: Viewer, case_id: int) -> list[Any]:
        return self.reads.timers_for(viewer, case_id)

    def counts_by_state(self, version_id: int, viewer: Viewer | None = None
                        ) -> dict[str, int]:
        return self.reads.counts_by_state(version_id, viewer)

    def verify_history(self) -> tuple[int, int, list[Any]]:
        return self.reads.verify_history()

    def audit_case_data(self, flow: str | None = None, batch: int = 2000
                        ) -> tuple[int, list[provenance.Finding]]:
        return self.reads.audit_case_data(flow, batch)
