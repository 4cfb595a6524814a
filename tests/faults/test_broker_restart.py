"""The broker restarted 3 times under a busy acks_late worker running 10,000 tasks.

Each broker is a private server of the test's own, stopped as an operator would and
started again 5 s later: Redis with an append-only file, RabbitMQ as a node on free ports
(durable queues, persistent messages). Every task completes, and the worker runs tasks
again within 5 s of each return, measured from the broker accepting connections to the
next run a task records. On Redis nothing runs twice: regression test for acks that
failed during an outage being dropped, which left tasks pending under the live worker
to run again under the next one. On RabbitMQ an ack is bound to the channel that the
restart closes, so the tasks a worker held unacknowledged at a restart are delivered
again; those duplicates are counted and bounded by what the worker holds.

Results go to the shared Redis under a prefix of the test's own, so that only the broker
goes away. Restarting a server that holds the results too adds the result store's retry
pauses (Celery's ``result_backend_max_sleep_between_retries_ms``, full jitter up to 10 s
by default) to the time a task that finished during the outage holds its process.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
import redis

from celeriac import Celeriac
from celeriac.publisher import batch_publish
from celeriac.states import SUCCESS
from tests.faults.battery import record_row
from tests.faults.support import FaultBroker, faultproj_worker, run_times
from tests.servers import delete_redis_keys, private_rabbitmq, private_redis, require

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

SCENARIO = "broker restarted 3 times during 10,000 tasks"
TASKS = 10_000
RESTART_AT = (1_500, 4_500, 7_500)
"""Tasks run before each restart."""
OUTAGE_SECONDS = 5.0
RESUME_SECONDS = 5.0
CONCURRENCY = 2
HELD_PER_RESTART = CONCURRENCY * 4 * 2
"""What a worker may hold unacknowledged at a restart: its prefetch window (concurrency
times the default multiplier of 4) and as many finished tasks whose batched acks were
still on their way."""


class Restartable(Protocol):
    """A private broker server."""

    url: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class RestartRun:
    """What a run of the scenario measured."""

    runs: dict[str, list[float]]  # task id -> when it ran
    ids: list[str]
    states: list[str]
    resumes: list[float]  # seconds from each return of the broker to the next run
    outages: list[float]  # seconds from each stop of the broker to its return
    pending: int = 0  # Redis: entries delivered and never acknowledged

    @property
    def lost(self) -> int:
        return sum(1 for task_id in self.ids if not self.runs.get(task_id))

    @property
    def duplicates(self) -> int:
        return sum(len(started) - 1 for started in self.runs.values() if started)

    def figures(self) -> str:
        completed = self.states.count(SUCCESS)
        resumes = ", ".join(f"{seconds:.2f}" for seconds in self.resumes)
        outages = ", ".join(f"{seconds:.1f}" for seconds in self.outages)
        return (
            f"completed {completed}/{TASKS}, lost {self.lost}, duplicates {self.duplicates},"
            f" seconds to resume after each restart: {resumes or 'none'}"
            f" (outages of {outages or 'none'} s)"
        )

    def resumed_in_time(self) -> bool:
        return len(self.resumes) == len(RESTART_AT) and max(self.resumes) <= RESUME_SECONDS


def test_redis_restarted_3_times_loses_and_repeats_nothing(tmp_path: Path) -> None:
    with result_store() as backend, private_redis(tmp_path, appendonly=True) as server:
        broker = FaultBroker(server.url, backend)
        result = run_through_restarts(
            server, broker, tmp_path, lambda: wait_until_no_pending(server.url, timeout=30)
        )
    pending = result.pending

    is_good = (
        result.lost == 0
        and result.duplicates == 0
        and pending == 0
        and set(result.states) == {SUCCESS}
        and result.resumed_in_time()
    )
    record_row(SCENARIO, "redis", "ok" if is_good else "FAILED", result.figures())
    assert result.lost == 0
    assert result.duplicates == 0
    assert pending == 0
    assert set(result.states) == {SUCCESS}
    assert result.resumed_in_time(), result.resumes


def test_rabbitmq_restarted_3_times_loses_nothing(tmp_path: Path) -> None:
    with result_store() as backend, private_rabbitmq(tmp_path) as server:
        broker = FaultBroker(server.url, backend)
        result = run_through_restarts(server, broker, tmp_path)

    is_good = (
        result.lost == 0
        and result.duplicates <= HELD_PER_RESTART * len(RESTART_AT)
        and set(result.states) == {SUCCESS}
        and result.resumed_in_time()
    )
    record_row(SCENARIO, "rabbitmq", "ok" if is_good else "FAILED", result.figures())
    assert result.lost == 0
    assert result.duplicates <= HELD_PER_RESTART * len(RESTART_AT)
    assert set(result.states) == {SUCCESS}
    assert result.resumed_in_time(), result.resumes


def test_the_embedded_sqlite_broker_has_no_server_to_restart() -> None:
    reason = (
        "no server to restart: the embedded broker is a file each process opens itself"
        " (closed and reopened around every fork, tests/faults/test_sqlite_prefork.py);"
        " its crashes are the SIGKILL row of test_sqlite_durability.py"
    )
    record_row(SCENARIO, "sqlite", "n/a", reason)
    pytest.skip(reason)


@contextmanager
def result_store() -> Iterator[str]:
    """A result backend on the shared Redis under a prefix of its own, deleted after."""
    url = require("redis")
    prefix = f"faults-{uuid.uuid4().hex}:"
    try:
        yield f"{url}?global_keyprefix={prefix}"
    finally:
        delete_redis_keys(url, prefix)


def run_through_restarts(
    server: Restartable,
    broker: FaultBroker,
    folder: Path,
    unacknowledged: Callable[[], int] = lambda: 0,
) -> RestartRun:
    """Send the tasks, run a worker, restart ``server`` at each of ``RESTART_AT`` runs.

    ``unacknowledged`` counts, once every result is stored and while the worker still
    runs, the deliveries the broker still waits an ack for.
    """
    client = Celeriac("client", broker=broker.url, backend=broker.backend)
    ids = publish(client, TASKS)
    returns: list[float] = []
    outages: list[float] = []
    with faultproj_worker(broker, folder, "-P", "prefork", "-c", str(CONCURRENCY)):
        for threshold in RESTART_AT:
            if not wait_until_runs(folder, threshold, timeout=120):
                break
            stopped = time.time()
            server.stop()
            time.sleep(OUTAGE_SECONDS)
            server.start()
            returns.append(time.time())
            outages.append(returns[-1] - stopped)
        wait_until_runs(folder, TASKS, timeout=300)
        states = wait_until_stored(client, ids, timeout=60)
        pending = unacknowledged()
    client.close()
    runs = run_times(folder)
    return RestartRun(runs, ids, states, resumes(returns, runs), outages, pending)


def publish(client: Celeriac, count: int) -> list[str]:
    """Send ``count`` record tasks in batches of 500; return their ids."""
    ids: list[str] = []
    for start in range(0, count, 500):
        with batch_publish(client):
            ids += [
                client.send_task("faultproj.record", (number,)).id
                for number in range(start, min(start + 500, count))
            ]
    return ids


def resumes(returns: list[float], runs: dict[str, list[float]]) -> list[float]:
    """Seconds from each return of the broker to the first task run after it."""
    started = sorted(itertools.chain.from_iterable(runs.values()))
    found = []
    for back in returns:
        after = [moment for moment in started if moment >= back]
        found.append(after[0] - back if after else float("inf"))
    return found


def wait_until_runs(folder: Path, wanted: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(run_times(folder)) >= wanted:
            return True
        time.sleep(0.2)
    return False


def wait_until_stored(client: Celeriac, ids: list[str], timeout: float) -> list[str]:
    """The stored state of each task, once every one is stored or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while True:
        found = client.backend.get_many(ids)
        if len(found) == len(ids) or time.monotonic() > deadline:
            return [found[task_id]["status"] if task_id in found else "PENDING" for task_id in ids]
        time.sleep(0.2)


def pending_entries(url: str) -> int:
    """Entries delivered to a consumer and not acknowledged, over every celeriac stream."""
    with redis.Redis.from_url(url) as client:
        total = 0
        for key in client.scan_iter(match="*celeriac*:p[0-9]", _type="stream"):
            for group in client.xinfo_groups(key):
                total += int(group["pending"])
        return total


def wait_until_no_pending(url: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while (pending := pending_entries(url)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return pending
