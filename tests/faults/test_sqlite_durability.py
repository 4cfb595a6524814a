"""The SQLite broker file through worker crashes mid-commit and through a full disk.

A worker busy leasing, acking and storing results in the file is SIGKILLed 200 times at
random moments while tasks are published between the kills; after every kill
``PRAGMA integrity_check`` is ok, and a last worker runs every task published. Then the
file sits on a tiny tmpfs that fills up: the sender gets a celeriac error saying the disk
is full, the file stays intact, and publishing works again once space is freed.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac, Task
from celeriac.publisher import batch_publish
from celeriac.transports.base import TransportError
from celeriac.transports.sqlite import database_path
from celeriac.worker import WorkController
from tests.faults.battery import record_row
from tests.faults.support import runs
from tests.processes import run_forked

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

RECORD = "durability.record"
KILLS = 200
SENT_BEFORE = 1_000
SENT_PER_KILL = 50
KILL_AFTER = (0.05, 0.4)
"""Bounds of the random time a worker lives, in seconds: it is up and running tasks
after about 0.05 s."""
LEASE_SECONDS = 2.0
"""Short, so the messages a killed worker held come back soon."""
WAITING = "SELECT COUNT(*) FROM messages WHERE queue = 'celery'"
"""Messages of the task queue still in the file, leased or not."""
DISK_BYTES = 1024 * 1024
FREE_BYTES = 128 * 1024
"""Left free when the disk is filled, for the tasks sent until it is full."""


def durability_app(url: str, folder: Path) -> Celeriac:
    """An acks_late app whose broker and result store are the file at ``url``, as the
    embedded default's are, with a task that records each run in ``folder``."""
    app = Celeriac("durability", broker=url, backend=url)
    app.conf.task_acks_late = True
    app.conf.broker_transport_options = {"lease_seconds": LEASE_SECONDS}

    @app.task(name=RECORD, bind=True)
    def record(self: Task[..., int], number: int) -> int:
        with (folder / f"{os.getpid()}.runs").open("a") as sink:
            sink.write(f"{self.request.id} {time.time()}\n")
        return number

    return app


def work(url: str, folder: Path, *, until_done: set[str] | None = None) -> None:
    """Run a thread-pool worker on ``url`` in this process; with ``until_done``, stop it
    warm once every one of those tasks has run and the queue is empty."""
    app = durability_app(url, folder)
    worker = WorkController(app, hostname=f"durability-{os.getpid()}@faults", pool="threads")
    if until_done is not None:
        path = database_path(url)
        threading.Thread(
            target=stop_when_done, args=(path, folder, until_done), daemon=True
        ).start()
    worker.start()


def stop_when_done(path: Path, folder: Path, ids: set[str]) -> None:
    while not ids <= set(runs(folder)) or count_rows(path, WAITING):
        time.sleep(0.1)
    os.kill(os.getpid(), signal.SIGTERM)


def test_broker_file_survives_200_sigkills_of_a_worker_mid_commit(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    url = f"sqlite:///{path}"
    client = durability_app(url, tmp_path)
    ids = publish(client, SENT_BEFORE)
    chooser = random.Random(15)
    started = time.monotonic()
    killed = 0
    damaged: list[str] = []
    for _ in range(KILLS):
        exit_code = run_forked(lambda: work(url, tmp_path), chooser.uniform(*KILL_AFTER))
        killed += exit_code is None
        damaged += [] if (check := integrity(path)) == "ok" else [check]
        ids += publish(client, SENT_PER_KILL)
    ran_before_last_worker = len(set(runs(tmp_path)) & set(ids))
    killing = time.monotonic() - started
    killed_with_runs = len(list(tmp_path.glob("*.runs")))
    last_exit = run_forked(lambda: work(url, tmp_path, until_done=set(ids)), timeout=120)
    client.close()

    counts = runs(tmp_path)
    lost = sum(1 for task_id in ids if counts[task_id] == 0)
    duplicates = sum(counts[task_id] - 1 for task_id in ids if counts[task_id] > 1)
    left = count_rows(path, WAITING)
    final_check = integrity(path)
    is_good = (
        killed == KILLS
        and not damaged
        and final_check == "ok"
        and lost == 0
        and last_exit == 0
        and left == 0
    )
    record_row(
        "SQLite file through 200 SIGKILLs mid-commit",
        "sqlite",
        "ok" if is_good else "FAILED",
        f"{killed} kills in {killing:.0f} s ({killed_with_runs} of the workers killed had run"
        f" tasks), integrity_check failed after {len(damaged)} of {killed} kills;"
        f" {len(ids)} tasks ({SENT_BEFORE} before, {len(ids) - SENT_BEFORE} during),"
        f" {ran_before_last_worker} ran before the last worker; lost {lost},"
        f" duplicates {duplicates}, {left} left in the queue",
    )
    assert killed == KILLS
    assert damaged == []
    assert final_check == "ok"
    assert lost == 0
    assert last_exit == 0
    assert left == 0


def test_full_disk_gives_the_sender_a_clear_error_and_leaves_the_file_intact(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "disk", DISK_BYTES) as disk:
        path = disk / "broker.db"
        client = durability_app(f"sqlite:///{path}", tmp_path)
        record = client.tasks[RECORD]
        accepted = [record.apply_async((0,)).id]
        fill(disk / "filler", leave=FREE_BYTES)
        refused, waited = send_until_refused(record, accepted)
        check_when_full = integrity(path)
        (disk / "filler").unlink()
        accepted.append(record.apply_async((-1,)).id)
        stored = count_rows(path, "SELECT COUNT(*) FROM messages")
        check_after = integrity(path)
        client.close()

    message = str(refused)
    is_clear = "disk is full" in message and str(path) in message
    is_good = is_clear and check_when_full == check_after == "ok" and stored == len(accepted)
    record_row(
        "SQLite broker on a full disk",
        "sqlite",
        "ok" if is_good else "FAILED",
        f"{len(accepted) - 2} tasks accepted in the last {FREE_BYTES // 1024} KiB of a tmpfs,"
        " then"
        f" {type(refused).__name__} after {waited:.1f} s: {message!r};"
        f" integrity_check {check_when_full} when full, {check_after} after;"
        f" publishing works again once space is freed; {stored}/{len(accepted)} rows stored",
    )
    assert is_clear, message
    assert check_when_full == "ok"
    assert check_after == "ok"
    assert stored == len(accepted)


def publish(client: Celeriac, count: int) -> list[str]:
    """Send ``count`` record tasks in one batch; return their ids."""
    with batch_publish(client):
        return [client.send_task(RECORD, (number,)).id for number in range(count)]


def integrity(path: Path) -> str:
    """What ``PRAGMA integrity_check`` says of the file, read by a connection of its own."""
    connection = sqlite3.connect(path)
    try:
        return "; ".join(row[0] for row in connection.execute("PRAGMA integrity_check"))
    finally:
        connection.close()


def count_rows(path: Path, statement: str) -> int:
    connection = sqlite3.connect(path)
    try:
        count: int = connection.execute(statement).fetchone()[0]
        return count
    finally:
        connection.close()


@contextmanager
def tmpfs(mount_point: Path, size: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` bytes at ``mount_point`` for the block (root only)."""
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True, timeout=30)


def fill(path: Path, leave: int) -> None:
    """Write ``path`` until the disk it is on is full, then give back ``leave`` bytes."""
    with path.open("wb", buffering=0) as sink:
        try:
            while True:
                sink.write(b"\0" * 4096)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        sink.truncate(max(0, sink.tell() - leave))


def send_until_refused(task: Task[..., Any], accepted: list[str]) -> tuple[TransportError, float]:
    """Send tasks, adding their ids to ``accepted``, until the broker refuses one; return
    the error and how long the refused ``apply_async`` took."""
    while len(accepted) < 100_000:
        asked = time.monotonic()
        try:
            accepted.append(task.apply_async((len(accepted),)).id)
        except TransportError as exc:
            return exc, time.monotonic() - asked
    raise AssertionError("the disk never filled up")
