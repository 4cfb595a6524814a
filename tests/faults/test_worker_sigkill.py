"""A whole acks_late worker, parent and prefork children, SIGKILLed five times mid-run.

A fresh worker then finishes the run: no task is lost. A task runs twice only if a kill
came while it ran (at most concurrency x kills of those) or after it finished and before
its acknowledgement reached the broker, the window acks_late leaves open: both are counted
and reported, and every repeated run must have started less than a second before a kill.
"""

from __future__ import annotations

import math
import random
import re
import time
from pathlib import Path

import pytest

from celeriac.publisher import batch_publish
from celeriac.states import SUCCESS
from tests.faults.support import (
    BROKERS,
    battery_row,
    fault_broker,
    fault_client,
    faultproj_worker,
    kill_whole_worker,
    run_times,
    runs,
    wait_until_stored,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(150)]

SCENARIO = "worker SIGKILLed 5x, 1,000 acks_late tasks"
TASKS = 1000
KILLS = 5
CONCURRENCY = 2
LEASE_SECONDS = 2.0
"""A dead worker's leases run out this fast on SQLite and Redis, so the next worker
need not wait out the default 30 s (on RabbitMQ the closed connection gives them back)."""
IN_FLIGHT_SECONDS = 1.0
"""A task that runs twice must have started at most this long before a kill: it was
running, or had finished and its acknowledgement had not reached the broker yet (the
tasks take a millisecond; one ack round trip under load takes well under this)."""


@pytest.mark.parametrize("kind", BROKERS)
def test_worker_killed_five_times_loses_nothing_and_repeats_only_running_tasks(
    kind: str, tmp_path: Path
) -> None:
    seed = random.randrange(1_000_000)
    chooser = random.Random(seed)
    with (
        fault_broker(kind, tmp_path, lease_seconds=LEASE_SECONDS) as broker,
        battery_row(SCENARIO, kind) as figures,
    ):
        figures["seed"] = seed
        client = fault_client(broker)
        with batch_publish(client):
            results = [client.send_task("faultproj.record", (number,)) for number in range(TASKS)]
        ids = [result.id for result in results]
        started = time.monotonic()
        killed_at: list[int] = []
        kill_times: list[float] = []
        worker_options = ("-P", "prefork", "-c", str(CONCURRENCY))
        for kill in range(KILLS):
            before = sum(runs(tmp_path).values())
            name = f"killed{kill}"
            with faultproj_worker(broker, tmp_path, *worker_options, name=name) as worker:
                # A random moment while it works: after it ran between 20 and 150 tasks.
                wanted = before + chooser.randint(20, 150)
                assert wait_until_total_runs(tmp_path, wanted, timeout=60)
                kill_times.append(kill_whole_worker(worker))
            killed_at.append(sum(runs(tmp_path).values()))
        figures["runs at each kill"] = "/".join(map(str, killed_at))
        with faultproj_worker(broker, tmp_path, *worker_options, name="fresh"):
            states = wait_until_stored(client, ids, timeout=90)
        figures["seconds"] = time.monotonic() - started
        client.close()

        times = run_times(tmp_path)
        lost = [task_id for task_id, state in zip(ids, states, strict=True) if state != SUCCESS]
        never_ran = [task_id for task_id in ids if task_id not in times]
        # Every run but a task's last was cut off by a kill: which one, how long after.
        cut_off = [
            (task_id, next_kill(run, kill_times), run)
            for task_id, runs_of_task in times.items()
            for run in runs_of_task[:-1]
        ]
        finished = [finished_in(tmp_path / f"killed{kill}.log") for kill in range(KILLS)]
        ages = [kill_times[kill] - run if kill < KILLS else math.inf for _, kill, run in cut_off]
        running = [
            task_id
            for task_id, kill, _ in cut_off
            if kill < KILLS and task_id not in finished[kill]
        ]
        figures["lost"] = len(lost)
        figures["duplicates"] = len(cut_off)
        figures["of them running at a kill"] = len(running)
        figures["finished with the ack on its way"] = len(cut_off) - len(running)
        figures["running bound (concurrency x kills)"] = CONCURRENCY * KILLS
        figures["oldest repeated run (s before its kill)"] = max(ages, default=0.0)
        assert lost == []
        assert never_ran == []
        assert max(ages, default=0.0) < IN_FLIGHT_SECONDS
        assert len(running) <= CONCURRENCY * KILLS


def next_kill(run: float, kill_times: list[float]) -> int:
    """The index of the first kill after a run started (``len(kill_times)`` if none)."""
    return next((kill for kill, moment in enumerate(kill_times) if moment >= run), len(kill_times))


def finished_in(log: Path) -> set[str]:
    """The ids of the tasks a worker logged as succeeded before it was killed."""
    return set(re.findall(r"\[([0-9a-f-]{36})\] succeeded in", log.read_text(errors="replace")))


def wait_until_total_runs(folder: Path, wanted: int, timeout: float) -> bool:
    """Wait until the run files hold ``wanted`` runs in all."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(runs(folder).values()) >= wanted:
            return True
        time.sleep(0.02)
    return False
