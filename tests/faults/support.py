"""Helpers of the fault tests: a faultproj worker process and the runs it recorded."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.conftest import wait_for

HERE = Path(__file__).parent


@dataclass(frozen=True)
class FaultBroker:
    """Where a fault test's worker and client meet."""

    url: str
    backend: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    max_deliveries: int = 10

    def env(self, runs: Path) -> dict[str, str]:
        """The environment of a faultproj worker."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
        env.update(
            FAULTPROJ_BROKER=self.url,
            FAULTPROJ_BACKEND=self.backend or "",
            FAULTPROJ_TRANSPORT_OPTIONS=json.dumps(self.options),
            FAULTPROJ_MAX_DELIVERIES=str(self.max_deliveries),
            FAULTPROJ_RUNS=str(runs),
        )
        return env


def run_times(folder: Path) -> dict[str, list[float]]:
    """When each task id ran, in order, from every process's run file in ``folder``."""
    times: dict[str, list[float]] = collections.defaultdict(list)
    for path in folder.glob("*.runs"):
        for line in path.read_text().splitlines():
            task_id, _, started = line.partition(" ")
            if started:
                times[task_id].append(float(started))
    return {task_id: sorted(started) for task_id, started in times.items()}


def runs(folder: Path) -> collections.Counter[str]:
    """How many times each task id ran, from every process's run file in ``folder``."""
    return collections.Counter(
        {task_id: len(started) for task_id, started in run_times(folder).items()}
    )


@contextmanager
def faultproj_worker(
    broker: FaultBroker, folder: Path, *extra: str, name: str = "fault"
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``celeriac -A faultproj worker`` until the block ends, then kill it by PID.

    Its output goes to ``<folder>/<name>.log``; the block starts once it logged ready.
    """
    log = folder / f"{name}.log"
    command = [
        sys.executable, "-m", "celeriac", "-A", "faultproj", "worker",
        "-l", "info", "-n", f"{name}@faults", *extra,
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=broker.env(folder), cwd=folder
        )
    try:
        if not wait_for(lambda: " ready: pool " in log.read_text(errors="replace"), 30):
            raise AssertionError(f"worker did not become ready:\n{log.read_text()}")
        yield process
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
