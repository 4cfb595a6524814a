"""The SQLite result backend shared by real processes: cross-process wake-ups and writers."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from celeriac.backends.base import Meta
from celeriac.backends.sqlite import SQLiteBackend
from tests.processes import run_forked_repeatedly

WRITER = """
import sys
from celeriac.backends.sqlite import SQLiteBackend

url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
backend = SQLiteBackend(url)
print("ready", flush=True)
sys.stdin.readline()
for index in range(count):
    own_id, shared_id = f"{name}-{index}", f"shared-{index % 10}"
    backend.store(own_id, {"status": "SUCCESS", "result": index, "task_id": own_id})
    backend.store(shared_id, {"status": "STARTED", "result": name, "task_id": shared_id})
    backend.store(shared_id, {"status": "SUCCESS", "result": name, "task_id": shared_id})
backend.close()
"""


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'results.db'}"


@pytest.fixture
def backend(url: str) -> Iterator[SQLiteBackend]:
    backend = SQLiteBackend(url)
    yield backend
    backend.close()


def start_python(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=10)


def success_meta(task_id: str) -> Meta:
    return {
        "status": "SUCCESS",
        "result": 5,
        "traceback": None,
        "children": [],
        "date_done": "2026-11-21T19:01:45.865316+00:00",
        "task_id": task_id,
    }


def test_concurrent_writers_in_several_processes_lose_no_rows(
    backend: SQLiteBackend, url: str
) -> None:
    names, count = ["writer-a", "writer-b", "writer-c", "writer-d"], 150
    with ExitStack() as stack:
        writers = [start_python(WRITER, url, name, str(count)) for name in names]
        for writer in writers:
            stack.callback(kill, writer)
        for writer in writers:
            assert writer.stdout is not None
            assert writer.stdout.readline() == "ready\n"

        outputs = [writer.communicate("go\n", timeout=30) for writer in writers]

    assert [writer.returncode for writer in writers] == [0, 0, 0, 0], outputs
    own_ids = [f"{name}-{index}" for name in names for index in range(count)]
    assert len(backend.get_many(own_ids)) == len(own_ids)
    shared = backend.get_many([f"shared-{index}" for index in range(10)])
    assert {meta["status"] for meta in shared.values()} == {"SUCCESS"}
    assert len(shared) == 10


def store_from_child(backend: SQLiteBackend, task_id: str) -> None:
    time.sleep(0.2)
    backend.store(task_id, success_meta(task_id))


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_opens_its_own_connection_and_wakes_the_parent(
    backend: SQLiteBackend,
) -> None:
    backend.store("before-fork", success_meta("before-fork"))
    child = multiprocessing.get_context("fork").Process(
        target=store_from_child, args=(backend, "from-child")
    )
    child.start()
    try:
        started = time.monotonic()
        meta = backend.wait("from-child", timeout=10.0, interval=30.0)
        waited = time.monotonic() - started
        child.join(timeout=10)
    finally:
        if child.is_alive() and child.pid is not None:
            os.kill(child.pid, signal.SIGKILL)
        child.join(timeout=10)
    child.close()

    assert meta == success_meta("from-child")
    assert waited < 2.0
    assert backend.get("before-fork") == success_meta("before-fork")


def test_child_forked_while_another_thread_writes_can_store(url: str) -> None:
    # Regression: SQLite's per-process lock records and mutexes crossed the fork, so a
    # child forked during the thread's write saw the WAL write lock as taken for ever,
    # or waited for ever on a mutex nobody in the child would release. The busy timeout
    # is long because a thread writing without pause can hold SQLite's lock, which is
    # not fair, through a short one.
    backend = SQLiteBackend(url, busy_timeout=6.0)
    is_done, has_written = threading.Event(), threading.Event()

    def count_until_done() -> None:
        # A chord counter is a transaction of several statements: the thread spends most
        # of its time inside one.
        while not is_done.is_set():
            backend.add_to_chord("parent")
            has_written.set()

    def store(number: int) -> None:
        backend.store(f"child-{number}", success_meta(f"child-{number}"))

    writer = threading.Thread(target=count_until_done)
    writer.start()
    try:
        assert has_written.wait(timeout=10)
        exit_codes = run_forked_repeatedly(store, times=20, timeout=10)
    finally:
        is_done.set()
        writer.join(timeout=10)
    stored = backend.get_many(f"child-{number}" for number in range(20))
    backend.close()

    assert exit_codes == [0] * 20
    assert len(stored) == 20
