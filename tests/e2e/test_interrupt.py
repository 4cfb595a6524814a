"""Ctrl-C on a real worker, on the prefork and the threads pool: the first says how many
tasks it waits for and that a second stops them, and lets them finish; the second stops
them at once, gives the message of an ``acks_late`` task back to the broker, and stores
for any other task that the shutdown cut it off."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from celeriac import Celeriac
from celeriac.exceptions import WorkerLostError
from tests.e2e.conftest import WorkerProcess, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("broker", ["sqlite"], indirect=True)]
StartWorker = Callable[..., WorkerProcess]
POOLS = pytest.mark.parametrize("pool", ["prefork", "threads"])


def running(worker: WorkerProcess) -> int:
    return sum(1 for record in worker.signals() if record["signal"] == "task_prerun")


@POOLS
def test_the_first_ctrl_c_says_what_it_waits_for_and_lets_the_tasks_finish(
    start_worker: StartWorker, client: Celeriac, pool: str
) -> None:
    worker = start_worker(pool=pool, concurrency=2)
    results = [client.send_task(name, (1.5,)) for name in ("sigproj.slow", "sigproj.slow_late")]
    assert wait_for(lambda: running(worker) == 2)

    worker.process.send_signal(signal.SIGINT)
    exitcode = worker.process.wait(timeout=20)

    assert exitcode == 0
    log = worker.log()
    assert "] worker: Warm shutdown (SIGINT): waiting for 2 running tasks to finish\n" in log
    assert (
        "WARNING/MainProcess] worker: Hitting Ctrl+C again will initiate cold shutdown,"
        " terminating all running tasks!\n" in log
    )
    assert [result.get(timeout=5) for result in results] == [1.5, 1.5]


@POOLS
def test_the_second_ctrl_c_stops_the_tasks_and_gives_acks_late_ones_back(
    start_worker: StartWorker, client: Celeriac, pool: str
) -> None:
    worker = start_worker(pool=pool, concurrency=2)
    plain = client.send_task("sigproj.slow", (30,))
    late = client.send_task("sigproj.slow_late", (30,))
    assert wait_for(lambda: running(worker) == 2)
    worker.process.send_signal(signal.SIGINT)
    assert wait_for(lambda: "Hitting Ctrl+C again" in worker.log())
    began = time.monotonic()

    worker.process.send_signal(signal.SIGINT)
    exitcode = worker.process.wait(timeout=20)

    assert time.monotonic() - began < 5
    assert exitcode == 1
    log = worker.log()
    assert "] worker: Cold shutdown (SIGINT): stopping 2 running tasks\n" in log
    assert (
        f"WARNING/MainProcess] Task sigproj.slow_late[{late.id}] cut off by the cold shutdown:"
        " its message goes back to the broker\n" in log
    )
    assert f"ERROR/MainProcess] Task sigproj.slow[{plain.id}] was cut off by a cold shutdown" in log
    assert "SIGKILL" not in log
    with pytest.raises(WorkerLostError, match="set acks_late") as raised:
        plain.get(timeout=5)
    assert f"Task sigproj.slow[{plain.id}] was cut off by a cold shutdown of w0@e2e" in str(
        raised.value
    )
    assert late.state == "PENDING"
    assert client.transport.queue_size("celery") == 1


@POOLS
def test_a_second_ctrl_c_that_lands_while_the_first_is_handled_still_stops_cold(
    start_worker: StartWorker, client: Celeriac, pool: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGPROJ_SIGINT_WHILE_SHUTTING_DOWN", "1")
    worker = start_worker(pool=pool, concurrency=2)
    slow = client.send_task("sigproj.slow", (30,))
    assert wait_for(lambda: running(worker) == 1)

    worker.process.send_signal(signal.SIGINT)
    exitcode = worker.process.wait(timeout=20)

    assert exitcode == 1
    assert "] worker: Cold shutdown (SIGINT): stopping 1 running task\n" in worker.log()
    with pytest.raises(WorkerLostError, match="cold shutdown"):
        slow.get(timeout=5)
