"""A real worker process on the embedded SQLite broker, driven through the public API."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from celeriac import Celeriac, states
from celeriac.exceptions import TaskRevokedError
from celeriac.transports.base import dead_letter_queue
from tests.e2e.conftest import WorkerProcess, wait_for

pytestmark = pytest.mark.slow
StartWorker = Callable[..., WorkerProcess]


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_task_succeeds_and_result_comes_back(
    start_worker: StartWorker, client: Celeriac, pool: str
) -> None:
    start_worker(pool=pool)

    result = client.send_task("sigproj.add", (2, 3))

    assert result.get(timeout=10) == 5
    assert result.state == states.SUCCESS


def test_failure_reraises_the_original_exception_type(
    start_worker: StartWorker, client: Celeriac
) -> None:
    import sigproj  # type: ignore[import-not-found]

    start_worker()

    builtin = client.send_task("sigproj.boom", ("bad thing",))
    custom = client.send_task("sigproj.custom_boom")

    with pytest.raises(ValueError, match="bad thing"):
        builtin.get(timeout=10)
    with pytest.raises(sigproj.CustomError, match="mine"):
        custom.get(timeout=10)
    assert builtin.state == states.FAILURE
    assert "ValueError: bad thing" in (builtin.traceback or "")


def test_retry_then_succeed(start_worker: StartWorker, client: Celeriac) -> None:
    start_worker()

    result = client.send_task("sigproj.flaky", (2,))

    assert result.get(timeout=15) == 2


def test_retries_exhausted_raise_the_task_exception(
    start_worker: StartWorker, client: Celeriac
) -> None:
    start_worker()

    manual = client.send_task("sigproj.flaky", (10,))
    automatic = client.send_task("sigproj.always_down")

    with pytest.raises(KeyError, match="again"):
        manual.get(timeout=15)
    with pytest.raises(ConnectionError, match="down"):
        automatic.get(timeout=15)


def test_expired_task_is_revoked_not_run(start_worker: StartWorker, client: Celeriac) -> None:
    worker = start_worker()

    result = client.send_task("sigproj.add", (1, 1), expires=-1)

    with pytest.raises(TaskRevokedError, match="expired"):
        result.get(timeout=10)
    assert result.state == states.REVOKED
    assert wait_for(lambda: any(r["signal"] == "task_revoked" for r in worker.signals()))
    revoked = [r for r in worker.signals() if r["signal"] == "task_revoked"]
    assert revoked[0]["kwargs"] == ["expired", "request", "signum", "terminated"]


def test_unknown_task_fails_and_is_dead_lettered(
    start_worker: StartWorker, client: Celeriac
) -> None:
    worker = start_worker()

    result = client.send_task("sigproj.does_not_exist", (1,))

    with pytest.raises(KeyError, match=r"sigproj\.does_not_exist"):
        result.get(timeout=10)
    assert wait_for(lambda: client.transport.queue_size(dead_letter_queue("celery")) == 1)
    assert client.send_task("sigproj.add", (1, 2)).get(timeout=10) == 3
    assert any(r["signal"] == "task_unknown" for r in worker.signals())


def test_warm_shutdown_finishes_running_work_and_loses_nothing(
    start_worker: StartWorker, client: Celeriac, tmp_path: Path
) -> None:
    marker = tmp_path / "done.txt"
    worker = start_worker(concurrency=2)
    results = [client.send_task("sigproj.slow", (1.0, str(marker))) for _ in range(8)]
    assert wait_for(lambda: _started(worker) >= 2)

    exitcode = worker.stop(signal.SIGTERM)

    assert exitcode == 0
    finished_before_restart = len(marker.read_text().splitlines())
    assert finished_before_restart >= 2
    start_worker(concurrency=4)
    assert [result.get(timeout=30) for result in results] == [1.0] * 8
    assert len(marker.read_text().splitlines()) == 8
    shutting = [r for r in worker.signals() if r["signal"] == "worker_shutting_down"]
    assert shutting[0]["kwargs"] == ["exitcode", "how", "sig"]


def test_killed_worker_messages_come_back_to_another_worker(
    start_worker: StartWorker, client: Celeriac, tmp_path: Path
) -> None:
    first = start_worker("--prefetch-multiplier", "4", pool="threads", concurrency=1)
    results = [client.send_task("sigproj.slow_late", (0.5,)) for _ in range(4)]
    assert wait_for(lambda: _started(first) >= 1)

    first.stop(signal.SIGKILL)
    start_worker(pool="threads", concurrency=2)

    assert [result.get(timeout=60) for result in results] == [0.5] * 4


def _started(worker: WorkerProcess) -> int:
    return sum(1 for record in worker.signals() if record["signal"] == "task_prerun")
