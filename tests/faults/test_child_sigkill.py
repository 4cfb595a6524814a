"""A prefork child SIGKILLed in the middle of a task, 50 times, on every broker.

Half the tasks have ``reject_on_worker_lost``: they go back to the broker and complete on
their second run; the other half fail with ``WorkerLostError``. None is lost, and the pool
is back to its full size within 2 s of each kill. (``test_sqlite_prefork.py`` adds the
embedded default's own regression: replacements forked while other tasks are written.)
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from celeriac.exceptions import WorkerLostError
from celeriac.states import FAILURE, SUCCESS
from tests.faults.support import (
    BROKERS,
    battery_row,
    children,
    fault_broker,
    fault_client,
    faultproj_worker,
    runs,
    wait_for_run,
    wait_until_stored,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(150)]

SCENARIO = "prefork child SIGKILLed mid-task 50x"
KILLS = 50
CONCURRENCY = 2
HOLD_SECONDS = 1.0
REFILL_SECONDS = 2.0
"""The pool must be back to full size this soon after each kill."""
TASKS = ("faultproj.hold", "faultproj.hold_requeued")
"""Alternated: without and with ``reject_on_worker_lost``."""


@pytest.mark.parametrize("kind", BROKERS)
def test_children_killed_mid_task_end_their_tasks_as_configured_and_are_replaced(
    kind: str, tmp_path: Path
) -> None:
    with fault_broker(kind, tmp_path) as broker, battery_row(SCENARIO, kind) as figures:
        client = fault_client(broker)
        worker_options = ("-P", "prefork", "-c", str(CONCURRENCY))
        with faultproj_worker(broker, tmp_path, *worker_options) as worker:
            refills: list[float] = []
            killed: dict[str, str] = {}  # task id -> task name
            for kill in range(KILLS):
                name = TASKS[kill % 2]
                task_id = client.send_task(name, (HOLD_SECONDS,)).id
                victim = wait_for_run(tmp_path, task_id, timeout=30)
                assert victim in children(worker.pid)
                refills.append(kill_and_time_refill(worker.pid, victim))
                killed[task_id] = name
            figures["kills"] = len(refills)
            figures["slowest refill (s)"] = max(refills)
            figures["mean refill (s)"] = sum(refills) / len(refills)
            ids = list(killed)
            states = dict(zip(ids, wait_until_stored(client, ids, timeout=60), strict=True))
        counts = runs(tmp_path)
        requeued = [task_id for task_id, name in killed.items() if name == TASKS[1]]
        failed = [task_id for task_id, name in killed.items() if name == TASKS[0]]
        completed = [task_id for task_id in requeued if states[task_id] == SUCCESS]
        lost_errors = [
            task_id
            for task_id in failed
            if states[task_id] == FAILURE
            and isinstance(client.AsyncResult(task_id).result, WorkerLostError)
        ]
        client.close()
        figures["requeued then completed"] = f"{len(completed)}/{len(requeued)}"
        figures["failed with WorkerLostError"] = f"{len(lost_errors)}/{len(failed)}"
        figures["lost"] = sum(state not in (SUCCESS, FAILURE) for state in states.values())

        assert max(refills) <= REFILL_SECONDS
        assert completed == requeued
        assert [counts[task_id] for task_id in requeued] == [2] * len(requeued)
        assert lost_errors == failed
        assert [counts[task_id] for task_id in failed] == [1] * len(failed)


def kill_and_time_refill(worker_pid: int, victim: int) -> float:
    """SIGKILL ``victim``; return the seconds until the pool has its full size again."""
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    deadline = killed + 10
    while time.monotonic() < deadline:
        current = children(worker_pid)
        if victim not in current and len(current) == CONCURRENCY:
            return time.monotonic() - killed
        time.sleep(0.005)
    return float("inf")
