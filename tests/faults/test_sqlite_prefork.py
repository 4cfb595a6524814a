"""The embedded default (SQLite broker and result store, no URL) with prefork children
forked after start-up: one for every task, and one replacing a child killed mid-task.

Regression test for children forked while a worker thread was inside a SQLite write:
SQLite's per-process lock records crossed the fork, so every write of the child waited
out the 30 s busy timeout and failed with "database is locked" (7 of 300 tasks ran in
45 s), and a warm shutdown waited on those children for more than 100 s.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from celeriac import Celeriac
from celeriac.states import SUCCESS
from tests.e2e.conftest import wait_for
from tests.faults.support import (
    FaultBroker,
    children,
    faultproj_worker,
    wait_for_run,
    wait_until_stored,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]

EMBEDDED = FaultBroker("")
"""No broker or result URL: the worker uses .celeriac/celeriac.sqlite3 beside the module
that makes its app, a copy of faultproj in its working folder (which -A searches first)."""
KILLS = 20
"""Children killed one after another: before the fix about one replacement in eight was
forked while a worker thread was writing, and hung."""


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Celeriac]:
    """An app on the file the worker in ``tmp_path`` defaults to; the environment names
    no other broker or result store, for the worker either."""
    for name in (
        "CELERIAC_BROKER_URL",
        "CELERY_BROKER_URL",
        "CELERIAC_RESULT_BACKEND",
        "CELERY_RESULT_BACKEND",
    ):
        monkeypatch.delenv(name, raising=False)
    shutil.copy(Path(__file__).with_name("faultproj.py"), tmp_path)
    url = f"sqlite:///{tmp_path / '.celeriac' / 'celeriac.sqlite3'}"
    app = Celeriac("client", broker=url, backend=url)
    yield app
    app.close()


def test_a_child_forked_for_every_task_runs_300_acks_late_tasks_at_full_speed(
    client: Celeriac, tmp_path: Path
) -> None:
    extra = ("-P", "prefork", "-c", "2", "--max-tasks-per-child", "1")
    with faultproj_worker(EMBEDDED, tmp_path, *extra) as worker:
        started = time.monotonic()
        ids = [client.send_task("faultproj.record", (number,)).id for number in range(300)]
        states = wait_until_stored(client, ids, timeout=20)
        elapsed = time.monotonic() - started
        exit_code, stopping = stop_warm(worker)

    assert states == [SUCCESS] * 300
    assert elapsed < 20
    assert exit_code == 0
    assert stopping < 5


def test_children_killed_mid_task_are_replaced_by_ones_that_run_at_full_speed(
    client: Celeriac, tmp_path: Path
) -> None:
    with faultproj_worker(EMBEDDED, tmp_path, "-P", "prefork", "-c", "2") as worker:
        rounds: list[KillRound] = []
        while len(rounds) < KILLS and all(map(KillRound.is_good, rounds)):
            rounds.append(kill_a_child_mid_task(client, tmp_path, worker.pid))
        exit_code, stopping = stop_warm(worker)

    assert [kill_round for kill_round in rounds if not kill_round.is_good()] == []
    assert len(rounds) == KILLS
    assert exit_code == 0
    assert stopping < 5


@dataclass(frozen=True)
class KillRound:
    """What followed the kill of one child in the middle of a task."""

    victim_was_a_child: bool
    is_replaced: bool
    states: list[str]  # of the 100 tasks sent just before the kill
    elapsed: float  # seconds from sending them until every one was stored

    def is_good(self) -> bool:
        """Tell whether a child was killed and replaced, and the 100 tasks ran at full speed."""
        return (
            self.victim_was_a_child
            and self.is_replaced
            and self.states == [SUCCESS] * 100
            and self.elapsed < 10
        )


def kill_a_child_mid_task(client: Celeriac, folder: Path, worker_pid: int) -> KillRound:
    """SIGKILL the child running a long task while 100 short ones flow beside it."""
    held = client.send_task("faultproj.hold", (60,))
    victim = wait_for_run(folder, held.id, timeout=10)
    before = children(worker_pid)
    started = time.monotonic()
    # The worker's threads are busy writing for these while the replacement is forked.
    ids = [client.send_task("faultproj.record", (number,)).id for number in range(100)]
    os.kill(victim, signal.SIGKILL)
    is_replaced = wait_for(
        lambda: victim not in children(worker_pid) and len(children(worker_pid)) == 2, 10
    )
    states = wait_until_stored(client, ids, timeout=20)
    return KillRound(victim in before, is_replaced, states, time.monotonic() - started)


def stop_warm(worker: subprocess.Popen[bytes]) -> tuple[int | None, float]:
    """Send SIGTERM; return the exit code (None if it ran 20 s more) and the seconds it took."""
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    try:
        exit_code: int | None = worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        exit_code = None
    return exit_code, time.monotonic() - started
