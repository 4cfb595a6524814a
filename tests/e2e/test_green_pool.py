"""``celeriac -A sigproj worker -P gevent -c 500``: a real worker process running tasks as
greenlets, on the embedded SQLite broker, on Redis and on RabbitMQ (results in Redis).

Five hundred tasks that each sleep a second finish in a few seconds of wall time, the
green pool's signals arrive in the worker's main process with the pool as sender, and the
worker's own threads keep working under the patch: fetching, acknowledging (nothing is
left in the queue or delivered twice), renewing leases (a task longer than its lease runs
once) and the heartbeat.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from celeriac import Celeriac
from tests.e2e.conftest import WorkerProcess

pytestmark = pytest.mark.slow

TASKS = 500
WALL_TIME_LIMIT = 10.0
GREEN_SIGNALS = (
    "eventlet_pool_started",
    "eventlet_pool_apply",
    "eventlet_pool_preshutdown",
    "eventlet_pool_postshutdown",
)


@pytest.mark.timeout(120)
def test_five_hundred_sleeping_tasks_run_at_once_and_the_pool_signals_fire(
    start_worker: Callable[..., WorkerProcess], client: Celeriac
) -> None:
    worker = start_worker(pool="gevent", concurrency=TASKS)
    longer_than_its_lease = client.send_task("sigproj.slow", (4,))  # leases last 2 s

    began = time.monotonic()
    results = [client.send_task("sigproj.slow", (1,)) for _ in range(TASKS)]
    values = [result.get(timeout=30) for result in results]
    wall_time = time.monotonic() - began

    assert values == [1] * TASKS
    assert wall_time < WALL_TIME_LIMIT, f"{TASKS} one-second tasks took {wall_time:.1f} s"
    assert longer_than_its_lease.get(timeout=30) == 4
    # A warm stop of 500 greenlets' worker once took over 20 s in a loaded full run.
    assert worker.stop(signal.SIGTERM, timeout=60) == 0
    records = worker.signals()
    received = [r["task_id"] for r in records if r["signal"] == "task_received"]
    assert len(received) == len(set(received)) == TASKS + 1
    assert client.transport.queue_size("celery") == 0
    assert any(r["signal"] == "heartbeat_sent" for r in records)
    green = [r for r in records if r["signal"] in GREEN_SIGNALS]
    assert {(r["pid"], r["sender"]) for r in green} == {(worker.pid, "GeventPool")}
    names = [r["signal"] for r in green]
    assert names == [
        "eventlet_pool_started",
        *["eventlet_pool_apply"] * (TASKS + 1),
        "eventlet_pool_preshutdown",
        "eventlet_pool_postshutdown",
    ]
    applied = next(r for r in green if r["signal"] == "eventlet_pool_apply")
    assert applied["kwargs"] == ["args", "kwargs", "target"]
    ran_in = {r["pid"] for r in records if r["signal"] == "task_prerun"}
    assert ran_in == {worker.pid}
