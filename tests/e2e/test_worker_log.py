"""What a worker at ``-l info`` tells a newcomer: Celery's line for each task received,
succeeded, retried and failed (under the shadow name when one was sent), its banner with
the registered tasks and the embedded file's absolute path, and a warning when the app
has no tasks at all. At the default level (WARNING) the per-task lines stay out."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from celeriac import Celeriac
from tests.e2e.conftest import (
    Broker,
    WorkerProcess,
    kill_worker,
    launch_worker,
    wait_for,
    wait_until_ready,
)

pytestmark = pytest.mark.slow
SQLITE_ONLY = pytest.mark.parametrize("broker", ["sqlite"], indirect=True)
StartWorker = Callable[..., WorkerProcess]

EMPTY_APP = """
import os

from celeriac import Celeriac

app = Celeriac("emptyproj", broker=os.environ["SIGPROJ_BROKER"])
"""


@SQLITE_ONLY
def test_each_task_gets_celerys_info_lines_in_the_worker_log_format(
    start_worker: StartWorker, client: Celeriac
) -> None:
    worker = start_worker(pool="prefork")

    added = client.send_task("sigproj.add", (2, 3))
    shadowed = client.send_task("sigproj.add", (1, 1), shadow="adding.one.and.one")
    retried = client.send_task("sigproj.flaky", (1,))
    failed = client.send_task("sigproj.boom", ("bad thing",))
    assert added.get(timeout=10) == 5
    assert shadowed.get(timeout=10) == 2
    assert retried.get(timeout=10) == 1
    with pytest.raises(ValueError, match="bad thing"):
        failed.get(timeout=10)

    assert wait_for(lambda: f"sigproj.boom[{failed.id}] raised" in worker.log())
    log = worker.log()
    prefix = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}: INFO/(MainProcess|ForkPoolWorker-\d)\] "
    assert re.search(f"{prefix}Task sigproj.add\\[{added.id}\\] received\n", log)
    assert re.search(
        f"{prefix}Task sigproj.add\\[{added.id}\\] succeeded in \\d+\\.\\d{{4}}s: 5\n", log
    )
    assert f"Task adding.one.and.one[{shadowed.id}] received" in log
    assert f"Task adding.one.and.one[{shadowed.id}] succeeded in " in log
    assert f"Task sigproj.flaky[{retried.id}] retry: Retry in 0.1s: KeyError('again')" in log
    assert "ERROR/ForkPoolWorker-" in log
    assert f"Task sigproj.boom[{failed.id}] raised unexpected: ValueError('bad thing')" in log


@SQLITE_ONLY
def test_at_the_default_level_the_worker_logs_nothing_per_task(
    start_worker: StartWorker, client: Celeriac
) -> None:
    worker = start_worker("-l", "warning")

    assert client.send_task("sigproj.add", (2, 3)).get(timeout=10) == 5

    time.sleep(0.2)
    log = worker.log()
    assert " received" not in log
    assert " succeeded in " not in log
    assert "[tasks]" not in log


@SQLITE_ONLY
def test_the_banner_lists_the_apps_tasks_and_the_stores_absolute_path(
    start_worker: StartWorker, broker: Broker, tmp_path: Path
) -> None:
    worker = start_worker()

    banner = worker.log().partition("[tasks]\n")[2].partition("\n\n")[0]
    listed = [line.removeprefix("  . ") for line in banner.splitlines() if line.startswith("  . ")]
    assert "sigproj.add" in listed
    assert listed == sorted(listed)
    assert not [name for name in listed if name.startswith("celery.")]
    assert f"  transport:   sqlite:///{tmp_path}/broker.db\n" in worker.log()
    assert broker.url == f"sqlite:///{tmp_path}/broker.db"


def test_the_banner_makes_a_relative_sqlite_path_absolute(tmp_path: Path) -> None:
    relative = Broker("sqlite:///relative.db", "sqlite:///results.db")

    worker = wait_until_ready(launch_worker("sigproj", relative, tmp_path, "relative"))
    kill_worker(worker)

    assert f"  transport:   sqlite:///{tmp_path}/relative.db\n" in worker.log()
    assert f"  results:     sqlite:///{tmp_path}/results.db\n" in worker.log()


@SQLITE_ONLY
def test_a_worker_of_an_app_without_tasks_says_so_at_start(broker: Broker, tmp_path: Path) -> None:
    (tmp_path / "emptyproj.py").write_text(EMPTY_APP)
    worker = launch_worker("emptyproj", broker, tmp_path, "empty", "-l", "warning")
    try:
        assert wait_for(lambda: "has no tasks registered" in worker.log(), timeout=30)
    finally:
        kill_worker(worker)

    assert (
        "WARNING/MainProcess] The app 'emptyproj' has no tasks registered, so this worker can"
        " run none: give -A the module that defines them, or name their modules with"
        " -I/--include or the include setting." in worker.log()
    )
