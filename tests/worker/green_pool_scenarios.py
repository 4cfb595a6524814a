"""What the gevent pool does, seen from inside a process patched by gevent at its start.

The pool runs only in such a process, so ``test_gevent_pool.py`` runs ``main()`` in a
child (``python -c "<PATCH>; from tests.worker.green_pool_scenarios import main; main()"``)
and reads the JSON object it prints: one entry per scenario.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import gevent

from celeriac import signals
from celeriac.exceptions import SoftTimeLimitExceeded
from celeriac.worker.pools import create_pool
from celeriac.worker.pools.base import Job, JobOutcome, Pool
from tests.worker.support import Outcomes, sleep_target

PATCH = "from gevent import monkey; monkey.patch_all()"

SIGNALS = (
    "eventlet_pool_started",
    "eventlet_pool_apply",
    "eventlet_pool_preshutdown",
    "eventlet_pool_postshutdown",
)


class SignalLog:
    """Connects to the green pool signals and keeps what each carried."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        for name in SIGNALS:
            getattr(signals, name).connect(self._receiver(name), weak=False)

    def _receiver(self, name: str) -> Any:
        def receive(sender: Any = None, **kwargs: Any) -> None:
            arguments = {key: value for key, value in kwargs.items() if key != "signal"}
            record: dict[str, Any] = {
                "signal": name,
                "sender": type(sender).__name__,
                "kwargs": sorted(arguments),
            }
            if name == "eventlet_pool_apply":
                record["target"] = arguments["target"].__name__
                record["args"] = [type(argument).__name__ for argument in arguments["args"]]
                record["kwargs_value"] = arguments["kwargs"]
            self.records.append(record)

        return receive

    def names(self) -> list[str]:
        return [record["signal"] for record in self.records]


def describe(outcome: JobOutcome) -> dict[str, Any]:
    return {
        "task_id": outcome.task_id,
        "state": outcome.state,
        "lost": outcome.lost,
        "requeue": outcome.requeue,
        "exception": type(outcome.exception).__name__ if outcome.exception else None,
        "info": {key: value for key, value in outcome.info.items() if key != "pid"},
    }


def sleep_job(task_id: str, seconds: float, **limits: float) -> Job:
    return Job(task_id, "tasks.sleep", {"seconds": seconds}, **limits)


def soft_limit_target(job: Job) -> JobOutcome:
    """Sleep as asked; report whether SoftTimeLimitExceeded reached the task."""
    try:
        time.sleep(job.payload["seconds"])
    except SoftTimeLimitExceeded:
        return JobOutcome(job.task_id, "FAILURE", info={"soft_time_limit_seen": True})
    return JobOutcome(job.task_id, "SUCCESS")


def many_jobs_at_once() -> dict[str, Any]:
    log = SignalLog()
    pool = create_pool("gevent", sleep_target, 100)
    pool.start()
    outcomes = Outcomes()
    began = time.monotonic()

    for number in range(100):
        pool.apply(sleep_job(f"id-{number}", 0.5), outcomes)
    finished = [describe(outcomes.next()) for _ in range(100)]
    elapsed = time.monotonic() - began
    pool.stop(graceful=True)

    return {
        "elapsed": elapsed,
        "states": sorted({outcome["state"] for outcome in finished}),
        "task_ids": len({outcome["task_id"] for outcome in finished}),
        "signals": log.names(),
        "senders": sorted({record["sender"] for record in log.records}),
        "apply": log.records[1],
        "is_pool": isinstance(pool, Pool),
        "info": pool.info(),
    }


def backlog_and_resizing() -> dict[str, Any]:
    pool = create_pool("gevent", sleep_target, 2)
    pool.start()
    outcomes = Outcomes()
    began = time.monotonic()

    for number in range(4):
        pool.apply(sleep_job(f"id-{number}", 0.3), outcomes)
    for _ in range(4):
        outcomes.next()
    elapsed = time.monotonic() - began
    pool.grow(2)
    grown = pool.info()["max-concurrency"]
    pool.shrink(3)
    shrunk = pool.info()["max-concurrency"]
    try:
        pool.shrink(1)
        refused = False
    except ValueError:
        refused = True
    pool.stop(graceful=True)

    return {"elapsed": elapsed, "grown": grown, "shrunk": shrunk, "refused": refused}


def time_limits() -> dict[str, Any]:
    soft_pool = create_pool("gevent", soft_limit_target, 2, soft_time_limit=0.2)
    hard_pool = create_pool("gevent", sleep_target, 2)
    soft_pool.start()
    hard_pool.start()
    outcomes = Outcomes()
    began = time.monotonic()

    soft_pool.apply(sleep_job("soft", 5), outcomes)
    soft = describe(outcomes.next())
    soft_elapsed = time.monotonic() - began
    hard_pool.apply(sleep_job("hard", 5, time_limit=0.3), outcomes)
    hard = describe(outcomes.next())
    hard_elapsed = time.monotonic() - began - soft_elapsed
    soft_pool.stop(graceful=True)
    hard_pool.stop(graceful=True)

    return {"soft": soft, "soft_elapsed": soft_elapsed, "hard": hard, "hard_elapsed": hard_elapsed}


def terminating_a_job() -> dict[str, Any]:
    pool = create_pool("gevent", sleep_target, 2)
    pool.start()
    outcomes = Outcomes()

    pool.apply(sleep_job("doomed", 5), outcomes)
    gevent.sleep(0.2)
    found = pool.terminate_job("doomed", 15)
    missing = pool.terminate_job("nobody", 15)
    outcome = describe(outcomes.next(timeout=2))
    pool.stop(graceful=True)

    return {"found": found, "missing": missing, "outcome": outcome}


def cold_stop() -> dict[str, Any]:
    log = SignalLog()
    pool = create_pool("gevent", sleep_target, 1)
    pool.start()
    outcomes = Outcomes()

    pool.apply(sleep_job("running", 5), outcomes)
    pool.apply(sleep_job("waiting", 5), outcomes)
    gevent.sleep(0.2)
    began = time.monotonic()
    pool.stop(graceful=False)
    stopped_in = time.monotonic() - began
    reported = sorted((describe(outcomes.next(timeout=2)) for _ in range(2)), key=str)
    pool.apply(sleep_job("late", 0), outcomes)
    late = describe(outcomes.next(timeout=1))

    return {
        "stopped_in": stopped_in,
        "outcomes": {outcome["task_id"]: outcome for outcome in reported},
        "late": late,
        "signals": log.names(),
    }


def graceful_stop() -> dict[str, Any]:
    log = SignalLog()
    pool = create_pool("gevent", sleep_target, 1)
    pool.start()
    outcomes = Outcomes()

    pool.apply(sleep_job("last", 0.5), outcomes)
    began = time.monotonic()
    pool.stop(graceful=True)
    waited = time.monotonic() - began
    outcome = describe(outcomes.next(timeout=1))

    return {"waited": waited, "outcome": outcome, "signals": log.names()}


SCENARIOS = {
    "many_jobs_at_once": many_jobs_at_once,
    "backlog_and_resizing": backlog_and_resizing,
    "time_limits": time_limits,
    "terminating_a_job": terminating_a_job,
    "cold_stop": cold_stop,
    "graceful_stop": graceful_stop,
}


def main() -> None:
    """Run every scenario and print what each saw, as one JSON object."""
    sys.stdout.write(json.dumps({name: scenario() for name, scenario in SCENARIOS.items()}) + "\n")
