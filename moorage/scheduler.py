"""One scheduler for every background job of the server, with one leader among the replicas.

Components and extensions register :class:`Job` s (``app[SCHEDULER].register(...)`` while the app
is built); the scheduler runs them from start-up to shutdown:

* a *periodic* job (``interval`` seconds) runs ``first_delay`` after start (default: one
  interval), then ``interval`` seconds after its previous run *ended* (a slow run never
  overlaps itself); ``trigger`` (an :class:`asyncio.Event`) makes it run now;
* a *continuous* job (``interval=None``: a worker loop such as the webhook outbox) is started
  once and restarted ``retry_delay`` seconds after it fails;
* a run that raises is logged with its traceback and counted; the job runs again at its next
  turn (the scheduler itself never dies of a job);
* ``leader_only`` jobs (garbage collection, mirror rules, pruning: work that one process does
  for the whole cluster) run only in the process that holds the leader lock
  (:mod:`moorage.metadata.leader`: a PostgreSQL advisory lock, a file lock for SQLite).  Every
  ``campaign_interval`` seconds the leader checks its lock and the others try to take it; a
  leader that loses it (its database connection died) cancels its leader-only runs at once.
  Leadership changes are logged (``scheduler: pid N is now the leader ...``) and exposed in
  ``/metrics`` (``moorage_scheduler_leader``);
* shutdown asks the jobs that have a ``stop`` hook to finish (each within its ``grace``), then
  cancels everything and waits for it, then gives the lock up.

Why in the core: before this, each extension ran its own ``asyncio`` task and invented its own
"only one of us" rule (a lock file per feature in the data directory, which replicas on
different machines do not share).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import BackendUnavailable
from .metadata.leader import LeaderLock

log = logging.getLogger("moorage.scheduler")

#: Seconds between leader-lock checks (the leader) and attempts to take it (the others): how
#: long a cluster may stay without a leader after the old one died.
CAMPAIGN_INTERVAL = 2.0


@dataclass
class Job:
    name: str
    #: One run (periodic) or the whole worker loop (continuous).
    run: Callable[[], Awaitable[Any]]
    #: Seconds from the end of one run to the start of the next; None: a continuous job.
    interval: float | None = None
    leader_only: bool = False
    #: Seconds before the first run (after start, or after this process became leader);
    #: None: one ``interval`` for periodic jobs, 0 for continuous ones.
    first_delay: float | None = None
    #: Set it to run a periodic job now (cleared when the run starts).
    trigger: asyncio.Event | None = None
    #: Asks a running job to finish by itself at shutdown (e.g. drain in-flight work).
    stop: Callable[[], Awaitable[None]] | None = None
    #: Seconds a run may take to finish after ``stop`` before it is cancelled (or a function
    #: giving them at shutdown).
    grace: float | Callable[[], float] = 0.0
    #: Continuous jobs: seconds before a failed (or returned) worker loop is started again.
    retry_delay: float = 5.0


@dataclass
class JobState:
    job: Job
    runs: int = 0
    failures: int = 0
    running: bool = False
    last_start: float | None = None
    last_end: float | None = None
    last_success: float | None = None
    last_error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    current: asyncio.Task[Any] | None = field(default=None, repr=False)


#: Seconds :meth:`Scheduler.stop` waits for its cancelled tasks before it leaves them behind.
STOP_BOUND = 30.0


async def _cancel_all(tasks: list[asyncio.Task[Any]], bound: float = STOP_BOUND) -> None:
    """Cancel ``tasks`` and wait until they are done: cancelled again every second while one still
    runs, given up (logged) after ``bound`` seconds.

    One ``cancel()`` is not always enough: on Python 3.11 ``asyncio.wait_for`` swallows a
    cancellation that arrives as the awaited operation completes (it returns the result), and
    the task goes on -- a ``stop()`` that waited for it without a bound never returned (the leader
    lock's database calls did that under load; they use ``asyncio.timeout`` now).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(1.0, max(0.0, deadline - loop.time())))
        if pending and loop.time() >= deadline:
            log.error(
                "scheduler: %s still running %g s after being cancelled; left behind",
                ", ".join(sorted(t.get_name() for t in pending)),
                bound,
            )
            return


class Scheduler:
    def __init__(
        self, lock: LeaderLock | Callable[[], LeaderLock] | None = None, *, campaign_interval: float = CAMPAIGN_INTERVAL
    ) -> None:
        """``lock`` (or a factory, called at start): how this process competes for leadership;
        None: it always leads (one process, nothing to share)."""
        self._lock_source = lock
        self._lock: LeaderLock | None = None
        self.campaign_interval = campaign_interval
        self.jobs: dict[str, JobState] = {}
        self.is_leader = False
        self.leadership_changes = 0
        self._leading = asyncio.Event()
        self._started = False
        self._stopping = False
        self._campaign: asyncio.Task[None] | None = None
        self._campaign_failing = False

    # -- registration ---------------------------------------------------------------------
    def register(self, job: Job) -> None:
        if job.name in self.jobs:
            raise ValueError(f"two background jobs are named {job.name!r}")
        if job.interval is not None and job.interval <= 0:
            raise ValueError(f"job {job.name!r}: interval must be positive (None for a continuous job)")
        state = self.jobs[job.name] = JobState(job)
        if self._started and not self._stopping:
            state.task = asyncio.create_task(self._loop(state), name=f"moorage-job-{job.name}")
            if job.leader_only and self._campaign is None:
                self._campaign = asyncio.create_task(self._campaign_loop(), name="moorage-scheduler-campaign")

    def trigger(self, name: str) -> None:
        trigger = self.jobs[name].job.trigger
        if trigger is None:
            raise ValueError(f"job {name!r} has no trigger")
        trigger.set()

    # -- running --------------------------------------------------------------------------
    async def start(self) -> None:
        self._started = True
        self._leading = asyncio.Event()  # bound to the running loop
        if any(s.job.leader_only for s in self.jobs.values()):
            self._lock = self._lock_source() if callable(self._lock_source) else self._lock_source
            await self._campaign_once()  # decide before the first runs are scheduled
            self._campaign = asyncio.create_task(self._campaign_loop(), name="moorage-scheduler-campaign")
        for state in self.jobs.values():
            state.task = asyncio.create_task(self._loop(state), name=f"moorage-job-{state.job.name}")

    async def stop(self) -> None:
        """Graceful jobs first (their ``stop`` hook, then up to ``grace`` seconds), then cancel the rest."""
        self._stopping = True
        graceful = [s for s in self.jobs.values() if s.job.stop is not None and s.task is not None]
        for state in graceful:
            try:
                await state.job.stop()  # type: ignore[misc]
            except Exception:  # noqa: BLE001 - a broken stop hook must not keep the others running
                log.exception("scheduler: stopping job %s failed", state.job.name)
        waits = [
            asyncio.wait_for(asyncio.shield(s.task), s.job.grace() if callable(s.job.grace) else s.job.grace)
            for s in graceful
            if s.task is not None
        ]
        for outcome in await asyncio.gather(*waits, return_exceptions=True):
            if isinstance(outcome, asyncio.TimeoutError):
                log.warning("scheduler: a job did not finish within its grace period; cancelled")
        tasks = [t for t in (*(s.task for s in self.jobs.values()), self._campaign) if t is not None]
        await _cancel_all(tasks)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.warning("scheduler: %s ended with %r", task.get_name(), task.exception())
        self._campaign = None
        if self._lock is not None:
            try:
                await self._lock.release()
            except Exception:  # noqa: BLE001 - the lock goes with the connection/process anyway
                log.warning("scheduler: releasing the leader lock failed", exc_info=True)
            if self.is_leader:
                self._set_leader(False, "shutting down")

    async def _sleep(self, seconds: float, trigger: asyncio.Event | None) -> None:
        if trigger is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):  # the interval passed: run
            async with asyncio.timeout(seconds):  # not wait_for: see _cancel_all
                await trigger.wait()
        trigger.clear()

    async def _loop(self, state: JobState) -> None:
        job = state.job
        periodic = job.interval is not None
        first = job.first_delay if job.first_delay is not None else (job.interval if periodic else 0.0)
        delay = first
        while not self._stopping:
            if job.leader_only and not self.is_leader:
                await self._leading.wait()
                delay = first  # a new leader starts the job's schedule afresh
                continue
            if delay:
                await self._sleep(delay, job.trigger)
            if self._stopping:
                return
            if job.leader_only and not self.is_leader:
                continue
            ok = await self._run_once(state)
            delay = (job.interval or 0.0) if periodic else job.retry_delay
            if not periodic and ok and not self._stopping:
                log.warning("scheduler: job %s returned; started again in %g s", job.name, delay)

    async def _run_once(self, state: JobState) -> bool:
        job = state.job
        state.running, state.last_start = True, time.time()
        run = asyncio.ensure_future(job.run())
        state.current = run
        try:
            await asyncio.wait({run})
        except asyncio.CancelledError:  # the scheduler stops: the run goes with it
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
            raise
        finally:
            state.running, state.last_end, state.current = False, time.time(), None
            state.runs += 1
        if run.cancelled():  # leadership lost mid-run
            state.failures += 1
            state.last_error = "cancelled: leadership lost"
            return False
        exc = run.exception()
        if exc is not None:
            state.failures += 1
            state.last_error = f"{type(exc).__name__}: {exc}"[:500]
            next_in = job.interval if job.interval is not None else job.retry_delay
            if isinstance(exc, BackendUnavailable):  # an outage, not a bug: one line, no traceback
                log.warning("scheduler: job %s failed (%s); next run in %g s", job.name, exc, next_in)
            else:
                log.error("scheduler: job %s failed (%s); next run in %g s", job.name, state.last_error, next_in, exc_info=exc)
            return False
        state.last_success, state.last_error = state.last_end, None
        return True

    # -- leadership -----------------------------------------------------------------------
    async def _campaign_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.campaign_interval)
            await self._campaign_once()

    async def _campaign_once(self) -> None:
        lock = self._lock
        if lock is None:
            if not self.is_leader:
                self._set_leader(True, "no lock: the only process")
            return
        try:
            if self.is_leader:
                if not await lock.still_held():
                    self._set_leader(False, f"{lock.description} lost")
            elif await lock.acquire():
                self._set_leader(True, lock.description)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the database may be away: not leader, try again next tick
            if self.is_leader:
                self._set_leader(False, f"{lock.description}: {type(exc).__name__}: {exc}")
                try:
                    await lock.release()
                except Exception:  # noqa: BLE001 - the lock dies with its connection anyway
                    log.debug("scheduler: releasing a failed leader lock", exc_info=True)
            elif not self._campaign_failing:  # once per outage, not every tick
                log.warning(
                    "scheduler: cannot compete for leadership (%s: %s); trying again every %g s",
                    type(exc).__name__,
                    exc,
                    self.campaign_interval,
                )
            self._campaign_failing = True
            return
        if self._campaign_failing:
            self._campaign_failing = False
            log.info("scheduler: leader lock reachable again")

    def _set_leader(self, leading: bool, how: str) -> None:
        self.is_leader = leading
        self.leadership_changes += 1
        leader_jobs = sorted(n for n, s in self.jobs.items() if s.job.leader_only)
        if leading:
            self._leading.set()
            log.info("scheduler: pid %d is now the leader (%s); runs %s", os.getpid(), how, ", ".join(leader_jobs))
            return
        self._leading.clear()
        log.warning("scheduler: pid %d is no longer the leader (%s)", os.getpid(), how)
        for state in self.jobs.values():
            if state.job.leader_only and state.current is not None:
                state.current.cancel()

    # -- observation ----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "leader": self.is_leader,
            "pid": os.getpid(),
            "jobs": {
                name: {
                    "leader_only": s.job.leader_only,
                    "interval": s.job.interval,
                    "runs": s.runs,
                    "failures": s.failures,
                    "running": s.running,
                    "last_start": s.last_start,
                    "last_end": s.last_end,
                    "last_success": s.last_success,
                    "last_error": s.last_error,
                }
                for name, s in self.jobs.items()
            },
        }

    def collector(self) -> Any:
        """A Prometheus collector (registered by the metrics extension): leadership and job runs."""
        return _Collector(self)


class _Collector:
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.scheduler
        yield GaugeMetricFamily(
            "moorage_scheduler_leader", "1 if this process runs the leader-only background jobs", value=1 if s.is_leader else 0
        )
        yield CounterMetricFamily(
            "moorage_scheduler_leadership_changes", "Times this process gained or lost leadership", value=s.leadership_changes
        )
        runs = CounterMetricFamily("moorage_scheduler_job_runs", "Background job runs by outcome", labels=["job", "outcome"])
        running = GaugeMetricFamily("moorage_scheduler_job_running", "1 while the job runs", labels=["job"])
        success = GaugeMetricFamily(
            "moorage_scheduler_job_last_success_timestamp_seconds",
            "End of the job's last successful run (Unix time)",
            labels=["job"],
        )
        for name, state in s.jobs.items():
            runs.add_metric([name, "ok"], state.runs - state.failures)
            runs.add_metric([name, "failed"], state.failures)
            running.add_metric([name], 1 if state.running else 0)
            if state.last_success is not None:
                success.add_metric([name], state.last_success)
        yield runs
        yield running
        yield success
