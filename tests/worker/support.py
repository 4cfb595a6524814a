"""Helpers shared by the pool tests: targets, an outcome collector and a pool factory."""

from __future__ import annotations

import os
import queue
import time
from pathlib import Path
from typing import Any

from celeriac.worker.pools import create_pool
from celeriac.worker.pools.base import Job, JobOutcome, JobTarget, Pool


def sleep_target(job: Job) -> JobOutcome:
    """Note the start in ``payload["started"]`` if given, sleep, and report the pid."""
    started = job.payload.get("started")
    if started:
        Path(started).write_text(str(os.getpid()))
    time.sleep(job.payload.get("seconds", 0))
    return JobOutcome(job.task_id, "SUCCESS", info={"pid": os.getpid()})


class Outcomes:
    """An ``on_done`` callback that collects outcomes for the test to wait on."""

    def __init__(self) -> None:
        self._received: queue.SimpleQueue[JobOutcome] = queue.SimpleQueue()
        self.pids: set[int] = set()

    def __call__(self, outcome: JobOutcome) -> None:
        if "pid" in outcome.info:
            self.pids.add(outcome.info["pid"])
        self._received.put(outcome)

    def next(self, timeout: float = 10.0) -> JobOutcome:
        return self._received.get(timeout=timeout)


def is_running(pid: int) -> bool:
    """Tell whether ``pid`` exists and is not a zombie waiting to be reaped by someone else."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def wait_until_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while is_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def wait_for_file(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} was never written"
        time.sleep(0.01)
    return path.read_text()


class PoolFactory:
    """Start pools for a test; afterwards stop them and check that no child process is left."""

    def __init__(self) -> None:
        self.pools: list[Pool] = []
        self.pids: set[int] = set()

    def __call__(self, name: str, target: JobTarget, concurrency: int = 1, **options: Any) -> Pool:
        pool = create_pool(name, target, concurrency, **options)
        pool.start()
        self.pools.append(pool)
        self.children(pool)
        return pool

    def children(self, pool: Pool) -> list[int]:
        """The pool's processes now (the test process itself for solo and threads)."""
        pids: list[int] = pool.info()["processes"]
        self.pids.update(pids)
        return pids

    def stop_all(self) -> None:
        for pool in self.pools:
            self.children(pool)
            pool.stop(graceful=False)
        self.pids.discard(os.getpid())
        left = [pid for pid in self.pids if is_running(pid)]
        assert left == [], f"child processes left after stop: {left}"
