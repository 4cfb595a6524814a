"""A rate limit shared by every worker of a fleet, on the brokers that keep start slots."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from celeriac import Celeriac
from tests.e2e.conftest import WorkerProcess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("broker", ["sqlite", "redis"], indirect=True),
]
StartWorker = Callable[..., WorkerProcess]


def test_two_workers_share_one_rate_limit(start_worker: StartWorker, client: Celeriac) -> None:
    workers = [start_worker(pool="threads", concurrency=2) for _ in range(2)]
    replies = client.control.rate_limit("sigproj.add", "5/s", reply=True, timeout=2.0)

    started = time.monotonic()
    results = [client.send_task("sigproj.add", (n, n)) for n in range(11)]
    assert [result.get(timeout=20) for result in results] == [2 * n for n in range(11)]
    took = time.monotonic() - started

    # Both workers write to one signal log; only the add tasks ran.
    ran_in = {record["pid"] for record in workers[0].signals() if record["signal"] == "task_prerun"}
    assert len(replies or []) == 2
    # 11 starts 0.2 s apart take 2 s when the slots are shared; 1 s with one limit each.
    assert took >= 1.9
    assert ran_in == {worker.pid for worker in workers}


def test_a_rate_limited_task_waits_in_the_broker_without_blocking_others(
    start_worker: StartWorker, client: Celeriac
) -> None:
    start_worker(pool="threads", concurrency=1)
    client.control.rate_limit("sigproj.add", "1/m", reply=True, timeout=2.0)
    limited = [client.send_task("sigproj.add", (n, 1)) for n in range(3)]
    assert limited[0].get(timeout=10) == 1

    started = time.monotonic()
    free = client.send_task("sigproj.whoami")
    free.get(timeout=10)
    took = time.monotonic() - started

    assert took < 5
    assert not limited[1].ready()
    assert not limited[2].ready()
    assert client.transport.queue_size("celery") == 2
