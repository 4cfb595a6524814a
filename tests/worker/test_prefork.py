"""The prefork pool with real child processes: hooks, time limits, lost and recycled children."""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac.exceptions import (
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
    WorkerLostError,
)
from celeriac.worker.pools.base import ChildHooks, Job, JobOutcome
from tests.processes import rss_bytes
from tests.worker.support import (
    Outcomes,
    PoolFactory,
    is_running,
    sleep_target,
    wait_for_file,
    wait_until_gone,
)

# Python 3.12+ warns when forking a process that runs threads; the prefork pool does so
# on purpose (see its module docstring).
pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning"
)

MIB = 1024 * 1024


def soft_limited_target(job: Job) -> JobOutcome:
    """Sleep, and say whether the soft time limit interrupted the sleep."""
    try:
        time.sleep(job.payload["seconds"])
    except SoftTimeLimitExceeded:
        return JobOutcome(job.task_id, "SUCCESS", info={"caught": True})
    return JobOutcome(job.task_id, "SUCCESS", info={"caught": False})


def allocating_target(job: Job) -> JobOutcome:
    """Hold ``payload["mib"]`` MiB of resident memory for a moment."""
    block = b"x" * (job.payload["mib"] * MIB)
    time.sleep(0.01)
    return JobOutcome(job.task_id, "SUCCESS", info={"pid": os.getpid(), "size": len(block)})


class NeedsTwoArguments(Exception):
    """An exception that pickles but cannot be unpickled: its __init__ wants two arguments."""

    def __init__(self, first: str, second: str) -> None:
        super().__init__(f"{first} and {second}")


def unpicklable_outcome_target(job: Job) -> JobOutcome:
    return JobOutcome(job.task_id, "FAILURE", exception=NeedsTwoArguments("a", "b"))


def append_line(path: Path, *words: object) -> None:
    with path.open("a") as file:
        file.write(" ".join(str(word) for word in words) + "\n")


def note_start(path: Path) -> None:
    append_line(path, "start", os.getpid())


def note_exit(path: Path, pid: int, exitcode: int) -> None:
    append_line(path, "exit", pid, exitcode)


def fail_first_start(marker: Path) -> None:
    if not marker.exists():
        marker.touch()
        raise RuntimeError("cannot connect to the database")


def hang_first_start(marker: Path) -> None:
    if not marker.exists():
        marker.touch()
        time.sleep(30)


@pytest.fixture
def make_pool() -> Iterator[PoolFactory]:
    factory = PoolFactory()
    yield factory
    factory.stop_all()


def test_jobs_run_in_child_processes_that_run_the_start_and_exit_hooks(make_pool, tmp_path):
    notes = tmp_path / "notes"
    hooks = ChildHooks(
        on_start=functools.partial(note_start, notes),
        on_exit=functools.partial(note_exit, notes),
    )
    pool = make_pool("prefork", sleep_target, concurrency=2, hooks=hooks)
    outcomes = Outcomes()

    pool.apply(Job("id-1", "tasks.sleep", {"seconds": 0}), outcomes)
    pid = outcomes.next().info["pid"]
    children = make_pool.children(pool)
    pool.stop(graceful=True)

    assert pid != os.getpid()
    assert pid in children
    lines = notes.read_text().splitlines()
    assert sorted(lines) == sorted(
        [f"start {child}" for child in children] + [f"exit {child} 0" for child in children]
    )


def test_soft_time_limit_raises_inside_the_task_which_can_catch_it(make_pool):
    pool = make_pool("prefork", soft_limited_target)
    outcomes = Outcomes()
    began = time.monotonic()

    pool.apply(Job("id-1", "tasks.slow", {"seconds": 5}, soft_time_limit=0.2), outcomes)
    outcome = outcomes.next()

    assert outcome.info == {"caught": True}
    assert time.monotonic() - began < 2


def test_soft_time_limit_is_cleared_after_the_job(make_pool):
    pool = make_pool("prefork", soft_limited_target, soft_time_limit=0.3)
    outcomes = Outcomes()

    pool.apply(Job("id-1", "tasks.quick", {"seconds": 0.2}), outcomes)
    first = outcomes.next()
    time.sleep(0.2)
    pool.apply(Job("id-2", "tasks.quick", {"seconds": 0.2}), outcomes)
    second = outcomes.next()

    assert first.info == second.info == {"caught": False}


def test_hard_time_limit_kills_the_child_and_the_pool_goes_on(make_pool, caplog):
    pool = make_pool("prefork", sleep_target)
    outcomes = Outcomes()
    [first_child] = make_pool.children(pool)

    with caplog.at_level(logging.ERROR):
        pool.apply(Job("id-1", "tasks.sleep", {"seconds": 30}, time_limit=0.3), outcomes)
        killed = outcomes.next()
    pool.apply(Job("id-2", "tasks.sleep", {"seconds": 0}), outcomes)
    after = outcomes.next()

    assert (killed.state, killed.lost) == ("FAILURE", True)
    assert isinstance(killed.exception, TimeLimitExceeded)
    assert killed.exception.args == (0.3,)
    assert "Hard time limit (0.3s) exceeded for tasks.sleep[id-1]" in caplog.text
    assert after.state == "SUCCESS"
    assert after.info["pid"] != first_child
    assert not is_running(first_child)


def test_child_killed_during_a_job_is_reported_lost_and_replaced(make_pool, tmp_path):
    pool = make_pool("prefork", sleep_target)
    outcomes = Outcomes()
    started = tmp_path / "started"
    pool.apply(Job("id-1", "tasks.sleep", {"seconds": 30, "started": str(started)}), outcomes)
    child = int(wait_for_file(started))

    os.kill(child, signal.SIGKILL)
    lost = outcomes.next()
    pool.apply(Job("id-2", "tasks.sleep", {"seconds": 0}), outcomes)
    after = outcomes.next()

    assert (lost.state, lost.lost) == ("FAILURE", True)
    assert isinstance(lost.exception, WorkerLostError)
    assert str(lost.exception).startswith("Worker exited prematurely: signal 9 (SIGKILL) Job: ")
    assert after.state == "SUCCESS"
    assert after.info["pid"] != child


def test_child_that_died_while_idle_is_replaced_before_the_next_job(make_pool):
    pool = make_pool("prefork", sleep_target)
    outcomes = Outcomes()
    [child] = make_pool.children(pool)

    os.kill(child, signal.SIGKILL)
    assert wait_until_gone(child)
    pool.apply(Job("id-1", "tasks.sleep", {"seconds": 0}), outcomes)
    outcome = outcomes.next()

    assert outcome.state == "SUCCESS"
    assert outcome.info["pid"] != child


def test_terminate_job_signals_its_child_and_reports_it_revoked(make_pool, tmp_path):
    pool = make_pool("prefork", sleep_target)
    outcomes = Outcomes()
    started = tmp_path / "started"
    pool.apply(Job("id-1", "tasks.sleep", {"seconds": 30, "started": str(started)}), outcomes)
    child = int(wait_for_file(started))

    found = pool.terminate_job("id-1", signal.SIGTERM)
    revoked = outcomes.next()
    pool.apply(Job("id-2", "tasks.sleep", {"seconds": 0}), outcomes)
    after = outcomes.next()

    assert found is True
    assert (revoked.state, revoked.lost) == ("REVOKED", True)
    assert isinstance(revoked.exception, TaskRevokedError)
    assert revoked.exception.args == ("terminated",)
    assert revoked.info == {"signum": signal.SIGTERM}
    assert after.info["pid"] != child


def test_terminate_job_does_not_find_a_job_that_is_not_running(make_pool):
    pool = make_pool("prefork", sleep_target)

    assert pool.terminate_job("id-unknown", signal.SIGTERM) is False


def test_child_is_replaced_after_max_tasks_per_child(make_pool):
    pool = make_pool("prefork", sleep_target, max_tasks_per_child=2)
    outcomes = Outcomes()

    pids = []
    for number in range(3):
        pool.apply(Job(f"id-{number}", "tasks.sleep", {"seconds": 0}), outcomes)
        pids.append(outcomes.next().info["pid"])

    assert pids[0] == pids[1] != pids[2]
    assert pool.info()["max-tasks-per-child"] == 2
    assert wait_until_gone(pids[0])


def test_child_is_replaced_after_a_job_that_takes_it_over_max_memory_per_child(make_pool):
    # From resident memory now, which a forked child's peak starts from, not this
    # process's own peak: an earlier test that held a large buffer here would otherwise
    # put the limit out of the children's reach.
    limit_kib = rss_bytes(os.getpid()) // 1024 + 64 * 1024
    pool = make_pool("prefork", allocating_target, max_memory_per_child=limit_kib)
    outcomes = Outcomes()

    pool.apply(Job("id-1", "tasks.small", {"mib": 1}), outcomes)
    small = outcomes.next().info["pid"]
    pool.apply(Job("id-2", "tasks.large", {"mib": 160}), outcomes)
    large = outcomes.next()
    pool.apply(Job("id-3", "tasks.small", {"mib": 1}), outcomes)
    after = outcomes.next().info["pid"]

    assert large.state == "SUCCESS"
    assert small == large.info["pid"] != after


def test_graceful_stop_lets_the_running_job_finish(make_pool, tmp_path):
    pool = make_pool("prefork", sleep_target)
    outcomes = Outcomes()
    started = tmp_path / "started"
    pool.apply(Job("id-1", "tasks.sleep", {"seconds": 0.5, "started": str(started)}), outcomes)
    child = int(wait_for_file(started))

    pool.stop(graceful=True)

    assert outcomes.next(timeout=0).state == "SUCCESS"
    assert not is_running(child)


def test_non_graceful_stop_kills_the_running_job_at_once(make_pool, tmp_path):
    pool = make_pool("prefork", sleep_target)
    outcomes = Outcomes()
    started = tmp_path / "started"
    pool.apply(Job("id-1", "tasks.sleep", {"seconds": 30, "started": str(started)}), outcomes)
    child = int(wait_for_file(started))
    began = time.monotonic()

    pool.stop(graceful=False)
    lost = outcomes.next(timeout=0)

    assert time.monotonic() - began < 3
    assert lost.lost
    assert isinstance(lost.exception, WorkerLostError)
    assert not is_running(child)
    assert pool.info()["processes"] == []


def test_non_graceful_stop_cuts_short_a_graceful_stop_in_progress(make_pool, tmp_path):
    pool = make_pool("prefork", sleep_target)
    outcomes = Outcomes()
    started = tmp_path / "started"
    pool.apply(Job("id-1", "tasks.sleep", {"seconds": 30, "started": str(started)}), outcomes)
    wait_for_file(started)
    warm = threading.Thread(target=pool.stop, kwargs={"graceful": True})
    warm.start()
    time.sleep(0.1)

    pool.stop(graceful=False)
    warm.join(timeout=5)

    assert not warm.is_alive()
    assert outcomes.next(timeout=0).lost


def test_shrink_stops_the_children_of_the_removed_slots(make_pool, tmp_path):
    notes = tmp_path / "notes"
    hooks = ChildHooks(on_exit=functools.partial(note_exit, notes))
    pool = make_pool("prefork", sleep_target, concurrency=3, hooks=hooks)

    pool.shrink(2)
    deadline = time.monotonic() + 10
    while len(pool.info()["processes"]) > 1 and time.monotonic() < deadline:
        time.sleep(0.01)

    assert len(pool.info()["processes"]) == 1
    assert len(notes.read_text().splitlines()) == 2


def test_child_whose_start_hook_fails_is_replaced(make_pool, tmp_path, caplog):
    hooks = ChildHooks(on_start=functools.partial(fail_first_start, tmp_path / "marker"))
    outcomes = Outcomes()

    with caplog.at_level(logging.ERROR):
        pool = make_pool("prefork", sleep_target, hooks=hooks)
        pool.apply(Job("id-1", "tasks.sleep", {"seconds": 0}), outcomes)
        outcome = outcomes.next()

    assert outcome.state == "SUCCESS"
    assert "failed to start" in caplog.text
    assert "cannot connect to the database" in caplog.text


def test_child_whose_start_hook_is_too_slow_is_replaced(make_pool, tmp_path, caplog):
    hooks = ChildHooks(on_start=functools.partial(hang_first_start, tmp_path / "marker"))
    outcomes = Outcomes()

    with caplog.at_level(logging.ERROR):
        pool = make_pool("prefork", sleep_target, hooks=hooks, proc_alive_timeout=0.3)
        pool.apply(Job("id-1", "tasks.sleep", {"seconds": 0}), outcomes)
        outcome = outcomes.next()

    assert outcome.state == "SUCCESS"
    assert "did not start within 0.3 s" in caplog.text


def test_outcome_that_cannot_be_unpickled_is_replaced_by_a_runtime_error(make_pool):
    pool = make_pool("prefork", unpicklable_outcome_target)
    outcomes = Outcomes()

    pool.apply(Job("id-1", "tasks.odd", None), outcomes)
    outcome = outcomes.next()

    assert outcome.state == "FAILURE"
    assert isinstance(outcome.exception, RuntimeError)
    assert "cannot be pickled" in str(outcome.exception)


def test_job_that_cannot_be_pickled_fails_without_harming_the_child(make_pool):
    pool = make_pool("prefork", sleep_target)
    outcomes = Outcomes()
    [child] = make_pool.children(pool)

    pool.apply(Job("id-1", "tasks.sleep", {"seconds": 0, "lock": lambda: None}), outcomes)
    failed = outcomes.next()
    pool.apply(Job("id-2", "tasks.sleep", {"seconds": 0}), outcomes)
    after = outcomes.next()

    assert failed.state == "FAILURE"
    assert isinstance(failed.exception, RuntimeError)
    assert after.info["pid"] == child


def test_children_ignore_sigint_so_the_parent_decides_shutdown(make_pool):
    pool = make_pool("prefork", sleep_target)
    outcomes = Outcomes()
    [child] = make_pool.children(pool)

    os.kill(child, signal.SIGINT)
    pool.apply(Job("id-1", "tasks.sleep", {"seconds": 0.1}), outcomes)

    assert outcomes.next().info["pid"] == child


PARENT_SCRIPT = """
import time
from celeriac.worker.pools import create_pool
from celeriac.worker.pools.base import JobOutcome

def target(job):
    return JobOutcome(job.task_id, "SUCCESS")

pool = create_pool("prefork", target, 2)
pool.start()
print(*pool.info()["processes"], flush=True)
time.sleep(60)
"""


def test_children_do_not_outlive_a_killed_parent():
    parent = subprocess.Popen([sys.executable, "-c", PARENT_SCRIPT], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        children = [int(pid) for pid in parent.stdout.readline().split()]

        parent.kill()
        parent.wait(timeout=10)

        assert len(children) == 2
        assert all(wait_until_gone(child) for child in children)
    finally:
        parent.kill()
        parent.wait(timeout=10)
        if parent.stdout is not None:
            parent.stdout.close()


def test_before_create_runs_in_the_parent_before_every_fork(make_pool):
    forks: list[int] = []
    hooks = ChildHooks(before_create=lambda: forks.append(os.getpid()))
    pool = make_pool("prefork", sleep_target, concurrency=2, hooks=hooks, max_tasks_per_child=1)
    outcomes = Outcomes()

    pool.apply(Job("id-1", "tasks.sleep", {"seconds": 0}), outcomes)
    outcomes.next()
    deadline = time.monotonic() + 10
    while len(forks) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)

    assert forks == [os.getpid()] * 3
