"""Behaviour every pool shares, run against the solo, threads and prefork pools."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator

import pytest

from celeriac.exceptions import ImproperlyConfigured, WorkerLostError
from celeriac.worker.pools import POOLS, create_pool
from celeriac.worker.pools.base import Job, JobOutcome, Pool
from tests.worker.support import Outcomes, PoolFactory, sleep_target, wait_for_file

# Python 3.12+ warns when forking a process that runs threads; the prefork pool does so
# on purpose (see its module docstring).
pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning"
)

ALL_POOLS = ["solo", "threads", "prefork"]
CONCURRENT_POOLS = ["threads", "prefork"]


def raising_target(job: Job) -> JobOutcome:
    raise ValueError(f"bad payload {job.payload!r}")


@pytest.fixture
def make_pool() -> Iterator[PoolFactory]:
    factory = PoolFactory()
    yield factory
    factory.stop_all()


@pytest.mark.parametrize("name", ALL_POOLS)
def test_job_runs_and_its_outcome_comes_back(make_pool, name):
    pool = make_pool(name, sleep_target)
    outcomes = Outcomes()

    pool.apply(Job("id-1", "tasks.sleep", {"seconds": 0}), outcomes)
    outcome = outcomes.next()

    assert outcome.task_id == "id-1"
    assert outcome.state == "SUCCESS"
    assert not outcome.lost


@pytest.mark.parametrize("name", ALL_POOLS)
def test_exception_escaping_the_target_becomes_a_failure_outcome(make_pool, name, caplog):
    pool = make_pool(name, raising_target)
    outcomes = Outcomes()

    with caplog.at_level(logging.ERROR):
        pool.apply(Job("id-1", "tasks.bad", 42), outcomes)
        outcome = outcomes.next()

    assert outcome.state == "FAILURE"
    assert isinstance(outcome.exception, ValueError)
    assert str(outcome.exception) == "bad payload 42"


@pytest.mark.parametrize("name", CONCURRENT_POOLS)
def test_jobs_run_concurrently(make_pool, name):
    pool = make_pool(name, sleep_target, concurrency=2)
    outcomes = Outcomes()
    began = time.monotonic()

    pool.apply(Job("id-1", "tasks.sleep", {"seconds": 0.3}), outcomes)
    pool.apply(Job("id-2", "tasks.sleep", {"seconds": 0.3}), outcomes)
    finished = {outcomes.next().task_id, outcomes.next().task_id}

    assert finished == {"id-1", "id-2"}
    assert time.monotonic() - began < 0.55


@pytest.mark.parametrize("name", CONCURRENT_POOLS)
def test_grow_and_shrink_change_max_concurrency(make_pool, name):
    pool = make_pool(name, sleep_target, concurrency=2)

    pool.grow(2)
    grown = pool.info()["max-concurrency"]
    pool.shrink(3)
    shrunk = pool.info()["max-concurrency"]

    assert (grown, shrunk) == (4, 1)
    assert pool.limit == 1


@pytest.mark.parametrize("name", CONCURRENT_POOLS)
def test_pool_keeps_serving_after_it_was_resized(make_pool, name):
    pool = make_pool(name, sleep_target, concurrency=1)
    outcomes = Outcomes()

    pool.grow(1)
    pool.shrink(1)
    pool.apply(Job("id-1", "tasks.sleep", {"seconds": 0}), outcomes)

    assert outcomes.next().state == "SUCCESS"


@pytest.mark.parametrize("name", CONCURRENT_POOLS)
def test_shrinking_to_no_slot_is_refused(make_pool, name):
    pool = make_pool(name, sleep_target, concurrency=2)

    with pytest.raises(ValueError, match="Cannot shrink"):
        pool.shrink(2)


def test_solo_pool_cannot_be_resized(make_pool):
    pool = make_pool("solo", sleep_target)

    with pytest.raises(ValueError, match="cannot grow"):
        pool.grow(1)
    with pytest.raises(ValueError, match="cannot shrink"):
        pool.shrink(1)


@pytest.mark.parametrize("name", CONCURRENT_POOLS)
def test_graceful_stop_waits_for_the_running_job(make_pool, name, tmp_path):
    pool = make_pool(name, sleep_target)
    outcomes = Outcomes()
    pool.apply(
        Job("id-1", "tasks.sleep", {"seconds": 0.5, "started": str(tmp_path / "s")}), outcomes
    )
    wait_for_file(tmp_path / "s")

    pool.stop(graceful=True)
    outcome = outcomes.next(timeout=0)

    assert outcome.state == "SUCCESS"


def test_non_graceful_stop_of_threads_cuts_off_running_jobs_and_gives_queued_jobs_back(
    make_pool, tmp_path
):
    pool = make_pool("threads", sleep_target)
    outcomes = Outcomes()
    started = tmp_path / "started"
    pool.apply(Job("id-1", "tasks.sleep", {"seconds": 0.5, "started": str(started)}), outcomes)
    pool.apply(Job("id-2", "tasks.sleep", {"seconds": 0}), outcomes)
    wait_for_file(started)
    began = time.monotonic()

    pool.stop(graceful=False)
    stopped_after = time.monotonic() - began
    reported = sorted((outcomes.next(), outcomes.next()), key=lambda outcome: outcome.task_id)

    assert stopped_after < 0.3
    cut_off, given_back = reported
    assert (cut_off.task_id, cut_off.state, cut_off.lost) == ("id-1", "FAILURE", True)
    assert isinstance(cut_off.exception, WorkerLostError)
    assert "cold shutdown" in str(cut_off.exception)
    assert (given_back.task_id, given_back.state, given_back.requeue) == ("id-2", "REJECTED", True)
    with pytest.raises(queue.Empty):
        outcomes.next(timeout=1.0)  # the cut-off job's thread ends unheard


def test_non_graceful_stop_of_threads_cuts_short_a_graceful_stop_waiting_in_another_thread(
    make_pool, tmp_path
):
    pool = make_pool("threads", sleep_target)
    outcomes = Outcomes()
    started = tmp_path / "started"
    pool.apply(Job("id-1", "tasks.sleep", {"seconds": 5, "started": str(started)}), outcomes)
    wait_for_file(started)
    graceful = threading.Thread(target=pool.stop, kwargs={"graceful": True})
    graceful.start()
    time.sleep(0.2)
    began = time.monotonic()

    pool.stop(graceful=False)
    graceful.join(timeout=2)

    assert not graceful.is_alive()
    assert time.monotonic() - began < 1
    assert outcomes.next(timeout=0).lost


@pytest.mark.parametrize("name", CONCURRENT_POOLS)
def test_failing_on_done_callback_is_logged_and_the_pool_goes_on(make_pool, name, caplog):
    pool = make_pool(name, sleep_target)
    outcomes = Outcomes()

    def broken_callback(outcome: JobOutcome) -> None:
        raise RuntimeError("worker bookkeeping failed")

    with caplog.at_level(logging.ERROR):
        pool.apply(Job("id-1", "tasks.sleep", {"seconds": 0}), broken_callback)
        pool.apply(Job("id-2", "tasks.sleep", {"seconds": 0}), outcomes)
        outcome = outcomes.next()

    assert outcome.task_id == "id-2"
    assert "Reporting the outcome of task id-1 failed" in caplog.text


@pytest.mark.parametrize("name", ALL_POOLS)
def test_job_applied_after_stop_is_given_back_unrun(make_pool, name):
    pool = make_pool(name, sleep_target)
    outcomes = Outcomes()
    pool.stop(graceful=True)

    pool.apply(Job("id-1", "tasks.sleep", {"seconds": 0}), outcomes)
    outcome = outcomes.next(timeout=1)

    assert (outcome.state, outcome.requeue) == ("REJECTED", True)


@pytest.mark.parametrize("name", ["solo", "threads"])
def test_in_process_pools_cannot_terminate_a_job(make_pool, name):
    pool = make_pool(name, sleep_target)

    assert pool.terminate_job("id-1", 15) is False


@pytest.mark.parametrize("name", ["solo", "threads"])
def test_in_process_pools_warn_once_that_time_limits_are_not_enforced(make_pool, name, caplog):
    pool = make_pool(name, sleep_target)
    outcomes = Outcomes()

    with caplog.at_level(logging.WARNING, logger="celeriac.worker"):
        for number in range(3):
            job = Job(f"id-{number}", "tasks.sleep", {"seconds": 0}, time_limit=5)
            pool.apply(job, outcomes)
            outcomes.next()

    warnings = [r for r in caplog.records if "cannot enforce time limits" in r.getMessage()]
    assert len(warnings) == 1
    assert "tasks.sleep[id-0]" in warnings[0].getMessage()


def test_thread_pool_calls_on_done_from_its_own_thread(make_pool):
    pool = make_pool("threads", sleep_target)
    threads: queue.SimpleQueue[str] = queue.SimpleQueue()

    pool.apply(
        Job("id-1", "tasks.sleep", {"seconds": 0}),
        lambda outcome: threads.put(threading.current_thread().name),
    )

    assert threads.get(timeout=5).startswith("celeriac-pool-thread-")


@pytest.mark.parametrize("name", ALL_POOLS)
def test_info_describes_the_pool(make_pool, name):
    pool = make_pool(name, sleep_target, soft_time_limit=5, time_limit=10)

    info = pool.info()

    assert info["implementation"].startswith(f"celeriac.worker.pools.{name}:")
    assert info["max-concurrency"] == 1
    assert len(info["processes"]) == 1
    assert info["max-tasks-per-child"] == "N/A"
    assert info["timeouts"] == [5, 10]


@pytest.mark.parametrize("name", ALL_POOLS)
def test_every_pool_implements_the_pool_protocol(name):
    pool = create_pool(name, sleep_target, 1)

    assert isinstance(pool, Pool)


def test_unknown_pool_name_is_refused_with_the_known_names():
    with pytest.raises(ImproperlyConfigured, match="eventlet") as excinfo:
        create_pool("eventlet", sleep_target, 1)

    assert all(name in str(excinfo.value) for name in POOLS)


def test_concurrency_below_one_is_refused():
    with pytest.raises(ImproperlyConfigured, match="at least 1"):
        create_pool("threads", sleep_target, 0)
