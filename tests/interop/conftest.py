"""Real Celery 5 beside celeriac on the loopback RabbitMQ, results in the loopback Redis.

One Celery worker and one celeriac worker per test module, each on a queue of its own,
both running :mod:`interop_tasks`; clients of either kind in the test process. Every
worker is killed by PID and every queue deleted at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac
from tests.servers import require

HERE = Path(__file__).parent
READY_TIMEOUT = 30.0


@dataclass
class InteropWorker:
    """A worker subprocess of either framework, on its own queue."""

    side: str
    queue: str
    hostname: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@dataclass(frozen=True)
class Servers:
    broker: str
    backend: str


@pytest.fixture(scope="module")
def servers() -> Servers:
    return Servers(require("rabbitmq"), require("redis"))


def start_worker(side: str, servers: Servers, folder: Path, *extra: str) -> InteropWorker:
    """Start a ``side`` worker (``celery`` or ``celeriac``) and wait until it is ready.

    ``extra`` are more command-line options for the worker.
    """
    queue = f"interop-{side}-{uuid.uuid4().hex[:12]}"
    hostname = f"{side}-{uuid.uuid4().hex[:8]}@interop"
    env = dict(os.environ, PYTHONPATH=str(HERE), INTEROP_SIDE=side, INTEROP_QUEUE=queue)
    env.update(INTEROP_BROKER=servers.broker, INTEROP_BACKEND=servers.backend)
    common = ["-A", "interop_tasks", "worker", "-Q", queue, "-n", hostname, "-l", "info", *extra]
    if side == "celery":
        command = [sys.executable, "-m", "celery", *common, "-P", "solo"]
        command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        ready = f"{hostname} ready."
    else:
        command = [sys.executable, "-m", "celeriac", *common, "-P", "threads", "-c", "2"]
        ready = f"{hostname} ready:"
    log_path = folder / f"{side}-worker.log"
    with log_path.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    worker = InteropWorker(side, queue, hostname, process, log_path)
    deadline = time.monotonic() + READY_TIMEOUT
    while ready not in worker.log():
        if process.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            pytest.fail(f"the {side} worker did not become ready:\n{worker.log()}")
        time.sleep(0.05)
    return worker


def delete_queue(broker: str, queue: str) -> None:
    """Remove a test's queue and the direct exchange of the same name Celery declared."""
    from kombu.connection import Connection

    with Connection(broker) as connection:
        channel = connection.default_channel
        channel.queue_delete(queue)
        channel.exchange_delete(queue)


@contextmanager
def module_worker(
    side: str, servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InteropWorker]:
    """A ``side`` worker for a test module; killed by PID and its queue deleted after."""
    worker = start_worker(side, servers, tmp_path_factory.mktemp(side))
    try:
        yield worker
    finally:
        worker.kill()
        delete_queue(servers.broker, worker.queue)


@pytest.fixture(scope="module")
def celery_worker(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InteropWorker]:
    """A real Celery worker (solo pool) running the interop tasks."""
    with module_worker("celery", servers, tmp_path_factory) as worker:
        yield worker


@pytest.fixture(scope="module")
def celeriac_worker(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InteropWorker]:
    """A celeriac worker (threads pool) running the same interop tasks."""
    with module_worker("celeriac", servers, tmp_path_factory) as worker:
        yield worker


@pytest.fixture
def celery_client(servers: Servers) -> Iterator[Any]:
    """A Celery app in the test process, with no tasks of its own: it sends by name."""
    from celery import Celery

    app = Celery("celery-client", broker=servers.broker, backend=servers.backend)
    yield app
    app.close()


@pytest.fixture
def celeriac_client(servers: Servers) -> Iterator[Celeriac]:
    """A celeriac app in the test process, sending by name."""
    app = Celeriac("celeriac-client", broker=servers.broker, backend=servers.backend)
    yield app
    app.close()
