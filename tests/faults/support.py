"""Helpers of the fault tests: a private place on each broker, a faultproj worker process,
the runs it recorded, its processes and memory from /proc, and the battery row of a test."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac.states import READY_STATES
from tests.e2e.conftest import wait_for
from tests.faults.battery import record_row
from tests.servers import delete_redis_keys, rabbitmq_vhost, require

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
    broker: FaultBroker,
    folder: Path,
    *extra: str,
    name: str = "fault",
    environment: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``celeriac -A faultproj worker`` until the block ends, then kill it by PID.

    Its output goes to ``<folder>/<name>.log``; the block starts once it logged ready.
    ``environment`` adds variables to the worker's (a faked clock, say).
    """
    log = folder / f"{name}.log"
    command = [
        sys.executable, "-m", "celeriac", "-A", "faultproj", "worker",
        "-l", "info", "-n", f"{name}@faults", *extra,
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**broker.env(folder), **(environment or {})},
            cwd=folder,
        )
    try:
        if not wait_for(lambda: " ready: pool " in log.read_text(errors="replace"), 30):
            raise AssertionError(f"worker did not become ready:\n{log.read_text()}")
        yield process
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


BROKERS = ("sqlite", "redis", "rabbitmq")
"""The brokers every scenario of the battery runs on."""


@contextmanager
def fault_broker(
    kind: str,
    folder: Path,
    *,
    max_deliveries: int = 10,
    lease_seconds: float | None = None,
) -> Iterator[FaultBroker]:
    """A place of the test's own on broker ``kind``: a SQLite file in ``folder``, a Redis key
    prefix, or a RabbitMQ virtual host with results under a Redis key prefix.

    ``lease_seconds`` shortens the lease of the brokers that have one (SQLite, Redis); on
    RabbitMQ the lease is the connection. The Redis keys are deleted afterwards.
    """
    options: dict[str, Any] = {} if lease_seconds is None else {"lease_seconds": lease_seconds}
    if kind == "sqlite":
        yield FaultBroker(f"sqlite:///{folder}/broker.db", None, options, max_deliveries)
        return
    redis_url = require("redis")
    prefix = f"faults-{uuid.uuid4().hex}:"
    backend = f"{redis_url}?global_keyprefix={prefix}"
    try:
        if kind == "rabbitmq":
            with rabbitmq_vhost("faults") as url:
                yield FaultBroker(url, backend, {}, max_deliveries)
        else:
            options["global_keyprefix"] = prefix
            yield FaultBroker(redis_url, backend, options, max_deliveries)
    finally:
        delete_redis_keys(redis_url, prefix)


def fault_client(broker: FaultBroker) -> Celeriac:
    """An app in the test process on ``broker``'s broker and result store."""
    client = Celeriac("client", broker=broker.url, backend=broker.backend)
    client.conf.broker_transport_options = broker.options
    return client


@contextmanager
def battery_row(scenario: str, broker: str) -> Iterator[dict[str, object]]:
    """Record the scenario's row when the block ends: ``ok``, or ``FAILED`` if it raised.

    The block puts what it measures in the yielded dict as it goes, so a failed row still
    shows the figures measured before the failure.
    """
    figures: dict[str, object] = {}
    try:
        yield figures
    except pytest.skip.Exception:
        raise
    except BaseException as exc:
        figures["error"] = type(exc).__name__
        record_row(scenario, broker, "FAILED", describe(figures))
        raise
    record_row(scenario, broker, "ok", describe(figures))


def describe(figures: dict[str, object]) -> str:
    """``name=value`` pairs, floats to two decimals, for the table."""
    shown = (
        f"{name}={value:.2f}" if isinstance(value, float) else f"{name}={value}"
        for name, value in figures.items()
    )
    return ", ".join(shown)


def children(pid: int) -> set[int]:
    """The child processes of ``pid``, from /proc (every thread's list: each prefork slot
    thread forks its own)."""
    found: set[int] = set()
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.update(int(child) for child in listing.read_text().split())
        except (FileNotFoundError, ProcessLookupError):  # the thread ended while we looked
            continue
    return found


def kill_whole_worker(worker: subprocess.Popen[bytes]) -> float:
    """SIGKILL the worker and each of its children; return the time the signals went.

    The parent goes first so that it cannot fork a replacement for a child killed after it.
    """
    victims = [worker.pid, *children(worker.pid)]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    killed = time.time()
    worker.wait(timeout=10)
    if not wait_for(lambda: not any(map(is_alive, victims[1:])), 10):
        raise AssertionError(f"children of the killed worker {worker.pid} still run")
    return killed


def is_alive(pid: int) -> bool:
    """Tell whether process ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def wait_for_run(folder: Path, task_id: str, timeout: float) -> int:
    """The process that recorded a run of ``task_id`` in its run file, once one has."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in folder.glob("*.runs"):
            if task_id in path.read_text():
                return int(path.stem)
        time.sleep(0.02)
    raise AssertionError(f"no process ran {task_id} within {timeout} s")


def wait_until_stored(client: Celeriac, ids: list[str], timeout: float) -> list[str]:
    """The state of each task once every one is ready, or as it stands after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = client.backend.get_many(ids)
        states = [found[task_id]["status"] if task_id in found else "PENDING" for task_id in ids]
        if set(states) <= READY_STATES or time.monotonic() > deadline:
            return states
        time.sleep(0.1)
