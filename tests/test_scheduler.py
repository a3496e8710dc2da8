"""The background-job scheduler (moorage/scheduler.py) and its leader election (moorage/metadata/leader.py).

In-process: a failing job is logged and retried, shutdown drains graceful jobs and cancels the rest,
two schedulers on one lock elect one leader, and a leader whose PostgreSQL session dies loses
leadership to the other.  With real servers: two replicas on one PostgreSQL database -- only one
collects garbage; kill -9 it and the other takes over; the same with two workers on SQLite.
No absolute timing asserts: every wait is a bounded loop on an observable state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from moorage.metadata.leader import FileLeaderLock, PostgresLeaderLock
from moorage.scheduler import Job, Scheduler
from tests.support.registry_proc import read_log, start_moorage

BOUND = 60.0  # seconds any "eventually" below may take before the test fails


async def _until(cond: Callable[[], bool], what: str, bound: float = BOUND) -> None:
    deadline = time.monotonic() + bound
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {bound:g} s: {what}")
        await asyncio.sleep(0.02)


# -- in-process --------------------------------------------------------------------------------


def test_failing_job_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[float] = []
    healthy: list[float] = []

    async def flaky() -> None:
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise RuntimeError(f"boom {len(calls)}")

    async def other() -> None:
        healthy.append(time.monotonic())

    async def scenario() -> Scheduler:
        s = Scheduler()
        s.register(Job("flaky", flaky, interval=0.05, first_delay=0))
        s.register(Job("other", other, interval=0.05, first_delay=0))
        await s.start()
        try:
            await _until(lambda: len(calls) >= 4, "the failing job runs again after its failures")
            await _until(lambda: len(healthy) >= 4, "the other job keeps running")
        finally:
            await s.stop()
        return s

    with caplog.at_level(logging.ERROR, logger="moorage.scheduler"):
        s = asyncio.run(scenario())
    state = s.jobs["flaky"]
    assert state.failures == 2 and state.runs >= 4 and state.last_error is None and state.last_success
    failures = [r for r in caplog.records if "job flaky failed" in r.getMessage()]
    assert len(failures) == 2 and "boom 1" in failures[0].getMessage() and failures[0].exc_info is not None
    with pytest.raises(ValueError):
        Scheduler().register(Job("x", other, interval=0))


def test_continuous_job_restarted_after_failure() -> None:
    starts: list[int] = []

    async def worker() -> None:
        starts.append(1)
        if len(starts) < 3:
            raise ConnectionError("database away")
        await asyncio.Event().wait()

    async def scenario() -> None:
        s = Scheduler()
        s.register(Job("worker", worker, retry_delay=0.01))
        await s.start()
        try:
            await _until(lambda: len(starts) >= 3, "the worker loop is started again")
            assert s.jobs["worker"].running
        finally:
            await s.stop()

    asyncio.run(scenario())


def test_shutdown_drains_graceful_jobs_and_cancels_the_rest() -> None:
    events: list[str] = []

    class Worker:
        def __init__(self) -> None:
            self.stopping = asyncio.Event()

        async def run(self) -> None:
            events.append("worker started")
            await self.stopping.wait()
            await asyncio.sleep(0.05)  # "drains" in-flight work
            events.append("worker drained")

        async def stop(self) -> None:
            events.append("worker asked to stop")
            self.stopping.set()

    async def hangs() -> None:
        events.append("periodic run started")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            events.append("periodic run cancelled")
            raise

    async def scenario() -> None:
        s = Scheduler()
        w = Worker()
        s.register(Job("worker", w.run, stop=w.stop, grace=30))
        s.register(Job("periodic", hangs, interval=3600, first_delay=0))
        s.register(Job("never", hangs, interval=3600))  # waits an hour: cancelled while waiting
        await s.start()
        await _until(lambda: "periodic run started" in events and "worker started" in events, "jobs started")
        await s.stop()
        tasks = [st.task for st in s.jobs.values()]
        assert all(t is not None and t.done() for t in tasks)
        assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()], "tasks left behind"
        assert not s.jobs["worker"].failures, "the graceful job was cancelled instead of drained"

    asyncio.run(scenario())
    assert events.index("worker asked to stop") < events.index("worker drained")
    assert "periodic run cancelled" in events and events.count("periodic run started") == 1


def test_stop_ends_tasks_that_swallow_a_cancellation() -> None:
    """``stop()`` returns even when its tasks swallow a cancel, as Python 3.11's
    ``asyncio.wait_for`` does when the awaited call completes in the same loop iteration (the
    leader lock's database calls hung stop() that way under load)."""
    swallowed: list[str] = []

    class SwallowingLock:
        description = "a lock whose liveness check swallows cancellation"

        async def acquire(self) -> bool:
            return True

        async def still_held(self) -> bool:
            if "campaign" in swallowed:
                await asyncio.sleep(3600)  # once only: a lost race, not a task that never ends
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed.append("campaign")
            return True

        async def release(self) -> None:
            pass

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.append("job")
        await asyncio.sleep(3600)  # the second cancel ends it

    async def scenario() -> None:
        s = Scheduler(SwallowingLock(), campaign_interval=0.01)
        s.register(Job("stubborn", stubborn, interval=3600, first_delay=0, leader_only=True))
        await s.start()
        await _until(lambda: s.jobs["stubborn"].running and s._campaign is not None, "the job runs")
        await asyncio.sleep(0.1)  # the campaign is inside still_held()
        async with asyncio.timeout(20):  # the test's own bound: stop() waited here forever before
            await s.stop()
        assert sorted(swallowed) == ["campaign", "job"]
        assert all(st.task is not None and st.task.done() for st in s.jobs.values())

    asyncio.run(scenario())


async def _two_schedulers(
    make_lock: Callable[[], object], interval: float = 0.05, campaign: float = 0.1
) -> tuple[list[Scheduler], dict[int, list[float]]]:
    runs: dict[int, list[float]] = {0: [], 1: []}
    schedulers = []
    for i in (0, 1):

        async def job(i: int = i) -> None:
            runs[i].append(time.monotonic())
            await asyncio.sleep(interval)

        s = Scheduler(make_lock(), campaign_interval=campaign)  # type: ignore[arg-type]
        s.register(Job("collect", job, interval=interval, first_delay=0, leader_only=True))
        await s.start()
        schedulers.append(s)
    return schedulers, runs


def _leaders(schedulers: list[Scheduler]) -> list[int]:
    return [i for i, s in enumerate(schedulers) if s.is_leader]


def test_file_lock_one_leader_then_handover(tmp_path: Path) -> None:
    async def scenario() -> None:
        schedulers, runs = await _two_schedulers(lambda: FileLeaderLock(tmp_path / "db.leader"))
        try:
            assert len(_leaders(schedulers)) == 1
            leader = _leaders(schedulers)[0]
            other = 1 - leader
            await _until(lambda: len(runs[leader]) >= 5, "the leader runs the job")
            assert runs[other] == [] and _leaders(schedulers) == [leader]
            await schedulers[leader].stop()  # gives the lock up
            await _until(lambda: schedulers[other].is_leader, "the other process takes over")
            await _until(lambda: len(runs[other]) >= 3, "the new leader runs the job")
        finally:
            for s in schedulers:
                await s.stop()

    asyncio.run(scenario())


@pytest.mark.services
def test_postgres_lock_lost_connection_is_lost_leadership(postgres_url: str) -> None:
    from tests.support.postgres import create_database

    url = create_database(postgres_url, f"leader_{uuid.uuid4().hex[:8]}")

    async def terminate_leader_session() -> int:
        import asyncpg

        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            pid = await conn.fetchval(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            assert pid is not None, "no advisory lock held"
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
            return pid
        finally:
            await conn.close()

    async def scenario() -> None:
        schedulers, runs = await _two_schedulers(lambda: PostgresLeaderLock(url), interval=0.2)
        try:
            await _until(lambda: len(_leaders(schedulers)) == 1, "one leader")
            leader = _leaders(schedulers)[0]
            other = 1 - leader
            await _until(lambda: len(runs[leader]) >= 3, "the leader runs the job")
            assert runs[other] == []
            await terminate_leader_session()
            await _until(lambda: schedulers[leader].leadership_changes >= 2, "the leader notices its session is gone")
            await _until(lambda: len(_leaders(schedulers)) == 1, "a leader again")
            # whoever leads now, only it runs the job from here on
            now = _leaders(schedulers)[0]
            before = {i: len(runs[i]) for i in (0, 1)}
            await _until(lambda: len(runs[now]) >= before[now] + 3, "the new leader runs the job")
            assert len(runs[1 - now]) <= before[1 - now] + 1  # at most a run that was starting
        finally:
            for s in schedulers:
                await s.stop()

    asyncio.run(scenario())


# -- real servers -----------------------------------------------------------------------------


def _metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _state(url: str) -> tuple[bool, float]:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return (
        _metric(text, "moorage_scheduler_leader") == 1,
        _metric(text, "moorage_scheduler_job_runs_total", '{job="gc",outcome="ok"}'),
    )


def _wait(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {BOUND:g} s: {what}")
        time.sleep(0.2)


GC_EVERY_SECOND = {"MOORAGE_GC__INTERVAL": "1", "MOORAGE_GC__GRACE": "0"}


@pytest.mark.services
def test_two_servers_on_postgres_one_collects_kill9_hands_over(postgres_url: str, tmp_path: Path) -> None:
    from tests.support.postgres import create_database

    url = create_database(postgres_url, f"sched_{uuid.uuid4().hex[:8]}")
    env = {
        "MOORAGE_DATABASE__URL": url,
        "MOORAGE_DATABASE__AUTO_MIGRATE": "true",
        **GC_EVERY_SECOND,
        "MOORAGE_STORAGE__FILESYSTEM__ROOT": str(tmp_path / "shared-storage"),
    }
    a = start_moorage(tmp_path / "a", env=env)
    b = start_moorage(tmp_path / "b", env=env)
    try:
        servers = [a, b]
        _wait(
            lambda: sum(_state(s.url)[0] for s in servers) == 1 and max(_state(s.url)[1] for s in servers) >= 3,
            "one leader, collecting",
        )
        leader = next(s for s in servers if _state(s.url)[0])
        other = b if leader is a else a
        for _ in range(5):  # while the leader lives, the other never collects
            assert _state(other.url) == (False, 0.0)
            assert _state(leader.url)[0]
            time.sleep(0.5)
        os.kill(leader.proc.pid, signal.SIGKILL)
        leader.proc.wait(timeout=30)
        _wait(lambda: _state(other.url)[0], "the other replica becomes leader")
        _wait(lambda: _state(other.url)[1] >= 2, "the new leader collects")
        assert "is now the leader (PostgreSQL advisory lock)" in other.log(400)
    finally:
        a.stop()
        b.stop()


def _collectors(log_path: Path) -> list[int]:
    """The pid of each in-server collection, in order."""
    return [int(m) for m in re.findall(r"^gc: .* \(pid (\d+)\)$", read_log(log_path), re.M)]


def _leader_lines(log_path: Path) -> list[int]:
    return [int(m) for m in re.findall(r"scheduler: pid (\d+) is now the leader", read_log(log_path))]


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def test_two_workers_on_sqlite_one_collects_kill9_hands_over(tmp_path: Path) -> None:
    srv = start_moorage(tmp_path / "srv", env={"MOORAGE_WORKERS": "2", **GC_EVERY_SECOND})
    try:
        log_path = srv.log_path
        assert log_path is not None
        _wait(lambda: len(_collectors(log_path)) >= 3, "collections run")
        lines = _leader_lines(log_path)
        assert len(lines) == 1, lines  # both workers run; one of them leads
        leader = lines[0]
        workers = _children(srv.proc.pid)
        assert leader in workers and len(workers) == 2, (leader, workers)
        before = _collectors(log_path)
        assert set(before) == {leader}, before  # only the leader collected
        os.kill(leader, signal.SIGKILL)
        _wait(lambda: len(_leader_lines(log_path)) == 2, "the other worker takes over")
        assert _leader_lines(log_path)[1] == next(w for w in workers if w != leader)
        new_leader = _leader_lines(log_path)[1]
        _wait(lambda: new_leader in _collectors(log_path), "the new leader collects")
        after = _collectors(log_path)[len(before) :]
        assert set(after) <= {leader, new_leader}, after  # (a line the old leader wrote as it died)
        assert requests.get(f"{srv.url}/v2/", timeout=10).status_code in (200, 401)
    finally:
        srv.stop()
