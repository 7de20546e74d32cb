"""Flow versions (流程版本): upload a definition as a draft, publish it, and the compiled
form of every stored version, cached per process (immutable, so never invalidated)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .actors import OrgNeeds, action_needs, start_needs
from .core import DRAFT, PUBLISHED, PublishResult
from .db import Database
from .errors import CivflowError, NotFound, NotPublished
from .machine import CompiledFlow
from .messages import msg
from .models import FlowVersion
from .spec import FLOW_ID, FlowSpec, load_definition

VERSIONS = FlowVersion.__table__
SOURCE_OF = select(VERSIONS.c.id, VERSIONS.c.version, VERSIONS.c.source,
                   VERSIONS.c.filename)


class Versions:
    """Stores and compiles flow versions. One per process (inside `Engine`)."""

    def __init__(self, db: Database, clock: Callable[[], dt.datetime]):
        self.db = db
        self.clock = clock
        self._flows: dict[int, CompiledFlow] = {}
        self._lock = threading.Lock()
        # Triggers that have rules or effects in some compiled version: an action by one of
        # them reads the case's history with the case, in the same round trip.
        self.judged: set[str] = set()
        # Per trigger, the organisation an action by it asks about in any compiled version
        # (`actors.action_needs`): read along with the case, in the same round trip.
        self.org_needs: dict[str, OrgNeeds] = {}
        # Per flow, the organisation opening a case asks about in any compiled version
        # (`actors.start_needs`): read along with the person, in the same round trip.
        self.start_needs: dict[str, OrgNeeds] = {}

    def upload(self, source: str, filename: str, by: int | None = None) -> PublishResult:
        """Validate a definition and store it as a draft version, unless its content exists.

        Identical content (the content hash) creates nothing and returns the version that
        holds it, draft or published.
        """
        spec = load_definition(source, filename)
        for _attempt in range(3):
            try:
                with self.db.unit_of_work() as s:
                    return self._upload(s, spec, source, filename, by)
            except IntegrityError:
                continue  # another node stored the same flow at the same moment: look again
        raise CivflowError(msg("engine.could_not_store_version"))

    def publish_version(self, flow: str, version: int, by: int | None = None) -> PublishResult:
        """Make a draft version the one new cases start on (发布). Publishing twice is a no-op."""
        with self.db.unit_of_work() as s:
            row = s.execute(select(FlowVersion).where(FlowVersion.flow_id == flow,
                                                      FlowVersion.version == version)
                            .with_for_update()).scalar_one_or_none()
            if row is None:
                raise NotFound(msg("engine.flow_has_no_version", flow=flow, version=version))
            created = row.status != PUBLISHED
            if created:
                row.status, row.published_at, row.published_by = PUBLISHED, self.clock(), by
            return PublishResult(row.flow_id, row.version, row.id, row.content_hash, created,
                                 row.status)

    def publish(self, source: str, filename: str, by: int | None = None) -> PublishResult:
        """Upload and publish in one step (the CLI and first start use this)."""
        draft = self.upload(source, filename, by)
        published = self.publish_version(draft.flow, draft.version, by)
        return replace(published, created=draft.created or published.created)

    def _upload(self, s: Session, spec: FlowSpec, source: str, filename: str,
                by: int | None) -> PublishResult:
        existing = s.execute(
            select(FlowVersion).where(FlowVersion.flow_id == spec.flow,
                                      FlowVersion.content_hash == spec.content_hash)
        ).scalar_one_or_none()
        if existing is not None:
            return PublishResult(spec.flow, existing.version, existing.id, spec.content_hash,
                                 False, existing.status)
        latest = s.execute(
            select(func.max(FlowVersion.version)).where(FlowVersion.flow_id == spec.flow)
        ).scalar() or 0
        row = FlowVersion(flow_id=spec.flow, version=latest + 1, content_hash=spec.content_hash,
                          title=spec.title.zh, filename=filename, source=source, status=DRAFT,
                          created_at=self.clock(), created_by=by)
        s.add(row)
        s.flush()
        return PublishResult(spec.flow, row.version, row.id, spec.content_hash, True, DRAFT)

    def versions(self, flow: str | None = None, version: int | None = None,
                 with_source: bool = False) -> list[Any]:
        """Version rows (metadata; the source text only when asked) by flow and version."""
        columns = [FlowVersion.id, FlowVersion.flow_id, FlowVersion.version,
                   FlowVersion.status, FlowVersion.content_hash, FlowVersion.title,
                   FlowVersion.filename, FlowVersion.created_at, FlowVersion.published_at]
        if with_source:
            columns.append(FlowVersion.source)
        q = select(*columns).order_by(FlowVersion.flow_id, FlowVersion.version)
        if flow is not None:
            q = q.where(FlowVersion.flow_id == flow)
        if version is not None:
            q = q.where(FlowVersion.version == version)
        with self.db.unit_of_work(write=False) as s:
            return list(s.execute(q).all())

    def version(self, flow: str, version: int, with_source: bool = False) -> Any:
        """One version row, draft or published; NotFound when there is none."""
        rows = self.versions(flow, version, with_source) if FLOW_ID.match(flow) else []
        if not rows:
            raise NotFound(msg("engine.flow_has_no_version", flow=flow, version=version))
        return rows[0]

    def compiled(self, s: Session | Connection, version_id: int) -> CompiledFlow:
        """The compiled (cached) definition of a stored version, draft or published."""
        flow = self._flows.get(version_id)
        if flow is None:
            row = s.execute(SOURCE_OF.where(VERSIONS.c.id == version_id)).first()
            if row is None:
                raise NotFound(msg("engine.flow_version_does_not", version_id=version_id))
            flow = CompiledFlow(load_definition(row.source, row.filename), row.id, row.version)
            with self._lock:
                self._flows[version_id] = flow
                self.judged.update(t.trigger for t in flow.spec.transitions
                                   if t.rules or t.effects)
                for trigger in {t.trigger for t in flow.spec.transitions}:
                    self.org_needs[trigger] = (self.org_needs.get(trigger, OrgNeeds())
                                               | action_needs(flow.spec, trigger))
                self.start_needs[flow.spec.flow] = (
                    self.start_needs.get(flow.spec.flow, OrgNeeds()) | start_needs(flow.spec))
        return flow

    def version_id(self, s: Session | Connection, flow: str, version: int | None) -> int:
        """The latest published version of a flow, or the given one if it is published."""
        q = select(FlowVersion.id, FlowVersion.status).where(FlowVersion.flow_id == flow)
        if version is None:
            q = q.where(FlowVersion.status == PUBLISHED).order_by(
                FlowVersion.version.desc()).limit(1)
        else:
            q = q.where(FlowVersion.version == version)
        found = s.execute(q).first()
        return published_id(flow, version, *(found or (None, None)))

    def all_flows(self, s: Session | Connection) -> dict[int, CompiledFlow]:
        """Every stored version, compiled (a small table; compiled once per process)."""
        ids = s.execute(select(FlowVersion.id)).scalars().all()
        return {vid: self.compiled(s, vid) for vid in ids}


def published_id(flow: str, version: int | None, version_id: int | None,
                 status: str | None) -> int:
    """The id of the version found for `flow` (the latest published, or `version`):
    NotFound when none was, NotPublished when `version` is a draft."""
    if version_id is None:
        what = msg("engine.what_version", version=version, flow=flow) if version \
            else msg("engine.what_flow", flow=flow)
        raise NotFound(msg("engine.not_published", what=what))
    if status != PUBLISHED:
        raise NotPublished(msg("engine.version_flow_draft_publish", version=version,
                               flow=flow))
    return version_id
