"""The scheduler every civflow process runs: APScheduler 3 ticking the timers table.

APScheduler cannot share a job store between processes (docs/architecture.md, "Time": three
processes on one SQLAlchemyJobStore ran every tick three times, and a one-off job added by
a process that exited was lost). So each process has its own **in-memory** job store that
holds only periodic jobs: the timer tick (`workflows.timers.TimerWorker.tick`, about every
second) and whatever else is passed in (the cycle check, notification delivery). What is
due, and whether it has happened, lives in the database; any number of processes may tick
the same database, and a tick that runs late, runs twice or is skipped loses nothing — the
next one finds the same due rows.

Job options, for every job:

- `max_instances=1`: a tick still running when the next is due is not doubled. The start
  APScheduler skips then is not lost either: the guard runs the job again as soon as the
  running one returns (once, however many starts were skipped), and says so on the
  job's own log line instead of APScheduler's warning per skipped start.
- `coalesce=True`: after a stall (a suspended VM, a long GC) the missed runs collapse into
  one.
- `misfire_grace_time=None`: a late run still runs, however late. APScheduler's default
  (1 s) would drop it silently.

Each job runs inside a guard: an exception is logged (with its traceback; a streak of the
same error is shortened to one line per failure after the first) and the scheduler goes
on. A tick that did something logs one INFO line with its counts; an extra job logs its
return value at INFO when it is truthy, so it should return something falsy (None, 0) when
it did nothing.

`civflow serve` calls `start_scheduler` (a BackgroundScheduler next to the web server);
`civflow worker` runs the scheduler alone.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from workflows.engine import Engine
from workflows.timers import TimerWorker

log = logging.getLogger("civflow.scheduler")
ENV_TZ = "CIVFLOW_TIMEZONE"
DEFAULT_TZ = "Asia/Shanghai"
TICK = "timers.tick"
DEFAULT_LEASE = dt.timedelta(seconds=30)

# (name, callable(now), seconds between runs); `now` is the engine's clock (aware, UTC).
Job = tuple[str, Callable[[dt.datetime], Any], float]


def scheduler_timezone(name: str | None = None) -> ZoneInfo:
    """The scheduler's time zone: `name`, else $CIVFLOW_TIMEZONE, else Asia/Shanghai."""
    name = name or os.environ.get(ENV_TZ) or DEFAULT_TZ
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{ENV_TZ}={name!r} is not a known time zone "
                         "(use an IANA name such as Asia/Shanghai)") from None


class StoppableTimerWorker(TimerWorker):
    """A TimerWorker that claims nothing more once `stop()` is called, so that a tick in
    progress ends after the batch it holds (which it fires and commits) instead of
    draining the whole backlog while the process is asked to stop."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    def claim(self, now: dt.datetime) -> list[int]:
        if self.stopping.is_set():
            return []
        return super().claim(now)


class _Guard:
    """Runs one job: never lets an exception reach APScheduler, logs what happened, and
    runs the job again at once when a start came (and was skipped) while it ran."""

    def __init__(self, name: str, call: Callable[[], Any], stopping: Callable[[], bool]):
        self.name, self.call, self.stopping = name, call, stopping
        self.skipped = 0  # starts skipped while this run was going (max_instances=1)
        self._streak = 0
        self._last_error = ""

    def __call__(self) -> Any:
        while True:
            self.skipped = 0
            started = time.monotonic()
            try:
                result = self.call()
            except Exception as exc:  # noqa: BLE001 - a failing job must not stop the scheduler
                self._failed(exc)
                return None
            if self._streak:
                log.info("%s: recovered after %d failed run(s)", self.name, self._streak)
                self._streak, self._last_error = 0, ""
            # A start skipped while this run went on is not dropped but run now, once
            # (coalesced), instead of at the next interval: a tick that outlasts its
            # interval under load would otherwise leave due timers waiting a whole extra
            # interval.
            again = bool(self.skipped) and not self.stopping()
            self._report(result, time.monotonic() - started, again)
            if not again:
                return result

    def _failed(self, exc: Exception) -> None:
        self._streak += 1
        error = f"{exc.__class__.__name__}: {exc}"
        if error != self._last_error:
            log.exception("%s failed", self.name)
        else:
            log.error("%s failed again (%d in a row, same error as above): %s",
                      self.name, self._streak, error.splitlines()[0][:300])
        self._last_error = error

    def _report(self, result: Any, seconds: float, again: bool) -> None:
        overlap = "; a start came while it ran: running again now" if again else ""
        if self.name == TICK:
            if result is None or not result.claimed:
                return
            log.info("tick: claimed=%d fired=%d dropped=%d retried=%d failed=%d skipped=%d "
                     "in %.2fs%s", result.claimed, result.fired, result.dropped,
                     result.retried, result.failed, result.skipped, seconds, overlap)
        elif result or again:
            log.info("%s: %s in %.2fs%s", self.name, result, seconds, overlap)


class _DropSkipWarnings(logging.Filter):
    """APScheduler warns on every start skipped because the job is still running. For our
    jobs that is expected (a tick draining a backlog outlasts the interval) and harmless:
    the guard runs the job again as soon as it returns, and says so on its own line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.WARNING
                    and "maximum number of running instances reached" in record.msg)


_APS_LOG = logging.getLogger("civflow.scheduler.apscheduler")
_APS_LOG.addFilter(_DropSkipWarnings())


def build_scheduler(engine: Engine, jobs: Iterable[Job] | None = None,
                    tick_seconds: float = 1.0, blocking: bool = False, *,
                    lease: dt.timedelta = DEFAULT_LEASE, batch: int = 200,
                    on_event: Callable[..., None] | None = None,
                    timezone: str | None = None) -> BaseScheduler:
    """An APScheduler 3 scheduler (not started) whose only job store is in memory.

    Jobs: the timer tick every `tick_seconds`, then each extra `(name, callable(now),
    seconds)`. `lease`, `batch` and `on_event` configure the TimerWorker (see
    `workflows.timers`); the worker is `scheduler.civflow_worker`. `blocking=True` gives a
    BlockingScheduler (its `start()` runs the jobs in the calling thread's loop).
    """
    tz = scheduler_timezone(timezone)
    # APScheduler's own INFO lines ("Adding job tentatively", …) only at DEBUG; ours say
    # when the scheduler starts and stops.
    _APS_LOG.setLevel(logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.WARNING)
    worker = StoppableTimerWorker(engine, lease=lease, batch=batch, on_event=on_event)
    specs: list[tuple[str, Callable[[], Any], float]] = [(TICK, worker.tick, tick_seconds)]
    for name, fn, seconds in jobs or ():
        if any(name == n for n, _f, _s in specs):
            raise ValueError(f"job name {name!r} is used twice")
        specs.append((name, _with_now(fn, engine), seconds))
    for name, _fn, seconds in specs:
        if not seconds > 0:
            raise ValueError(f"job {name!r}: the interval must be positive, not {seconds!r}")
    cls = BlockingScheduler if blocking else BackgroundScheduler
    scheduler = cls(
        jobstores={"default": MemoryJobStore()},
        # One thread per job: a long tick never delays the cycle check and vice versa.
        executors={"default": ThreadPoolExecutor(max_workers=len(specs))},
        job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
        timezone=tz, logger=_APS_LOG)
    guards: dict[str, _Guard] = {}
    first = dt.datetime.now(tz)  # every job runs once at start: overdue work goes first
    for name, call, seconds in specs:
        guard = guards[name] = _Guard(name, call, worker.stopping.is_set)
        scheduler.add_job(guard, IntervalTrigger(seconds=seconds, timezone=tz), id=name,
                          name=name, next_run_time=first, replace_existing=True)

    def skipped(event: JobSubmissionEvent) -> None:
        if event.job_id in guards:
            guards[event.job_id].skipped += 1

    scheduler.add_listener(skipped, EVENT_JOB_MAX_INSTANCES)
    scheduler.civflow_worker = worker
    scheduler.civflow_tick_seconds = tick_seconds
    return scheduler


def _with_now(fn: Callable[[dt.datetime], Any], engine: Engine) -> Callable[[], Any]:
    def run() -> Any:
        return fn(engine.clock())

    run.__name__ = getattr(fn, "__name__", "job")
    return run


def stop_scheduler(scheduler: BaseScheduler, wait: bool = True) -> None:
    """Stop claiming timers, let the running jobs finish their batch, shut down."""
    worker = getattr(scheduler, "civflow_worker", None)
    if worker is not None:
        worker.stop()
    if scheduler.running:
        scheduler.shutdown(wait=wait)


def start_scheduler(app_or_engine: Any, jobs: Iterable[Job] | None = None,
                    tick_seconds: float = 1.0, **kwargs: Any) -> BackgroundScheduler:
    """Start a BackgroundScheduler for a Flask app made by `service.app.create_app` (its
    engine) or for an Engine; it is stopped at interpreter exit. Returns it."""
    engine = app_or_engine
    extensions = getattr(app_or_engine, "extensions", None)
    if isinstance(extensions, dict):
        engine = extensions["civflow"]
    if not isinstance(engine, Engine):
        raise TypeError(f"start_scheduler needs a civflow app or Engine, not {app_or_engine!r}")
    if jobs is None:
        from .runtime import background

        kwargs = {**background(engine), **kwargs}
    else:
        kwargs["jobs"] = jobs
    scheduler = build_scheduler(engine, tick_seconds=tick_seconds, blocking=False, **kwargs)
    scheduler.start()
    if isinstance(extensions, dict):
        extensions["civflow_scheduler"] = scheduler
    atexit.register(stop_scheduler, scheduler)
    log.info("scheduler started: node %s, tick every %gs, lease %gs, time zone %s, jobs %s",
             scheduler.civflow_worker.node, tick_seconds,
             scheduler.civflow_worker.lease.total_seconds(), scheduler.timezone,
             ", ".join(j.id for j in scheduler.get_jobs()))
    return scheduler
