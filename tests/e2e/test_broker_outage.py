"""The broker goes away: a real worker on a private redis-server that the tests kill and restart.

Covers ``broker_connection_retry_on_startup``, ``broker_connection_retry``,
``broker_connection_max_retries`` and the masking of the broker password in what the
worker logs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from celeriac import Celeriac
from tests.e2e.conftest import wait_for
from tests.servers import PrivateRedis, private_redis

APP = textwrap.dedent(
    """
    import json, os
    from pathlib import Path
    from celeriac import Celeriac
    from celeriac.signals import worker_ready

    app = Celeriac("outage", broker=os.environ["OUTAGE_BROKER"])
    app.conf.result_backend = os.environ["OUTAGE_BACKEND"]
    app.conf.update(json.loads(os.environ["OUTAGE_CONF"]))

    @app.task
    def add(x, y):
        return x + y

    @worker_ready.connect
    def ready(sender, **kwargs):
        Path(os.environ["OUTAGE_READY"]).touch()
    """
)


class Worker:
    """A ``celeriac worker`` on the outage app, its log in a file, killed by PID at the end."""

    def __init__(self, folder: Path, broker: str, backend: str, conf: dict[str, object]) -> None:
        (folder / "outage_app.py").write_text(APP)
        self.log_path = folder / "worker.log"
        self.ready_path = folder / "ready"
        env = dict(os.environ, PYTHONPATH=str(folder), OUTAGE_BROKER=broker)
        env.update(OUTAGE_BACKEND=backend, OUTAGE_CONF=json.dumps(conf))
        env["OUTAGE_READY"] = str(self.ready_path)
        command = [sys.executable, "-m", "celeriac", "-A", "outage_app", "worker"]
        command += ["-P", "threads", "-c", "2", "-l", "info", "-n", "outage@test"]
        with self.log_path.open("wb") as sink:
            self.process = subprocess.Popen(
                command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=folder
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self) -> bool:
        return self.ready_path.exists()

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(broker: str, backend: str, **conf: object) -> Worker:
        worker = Worker(tmp_path, broker, backend, conf)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    with private_redis(tmp_path, started=False) as server:
        yield server


def client(url: str) -> Celeriac:
    app = Celeriac("outage-client", broker=url, backend=url)

    @app.task(name="outage_app.add")
    def add(x: int, y: int) -> int:
        raise AssertionError("runs on the worker only")

    return app


def test_worker_waits_for_a_broker_that_is_not_up_yet(
    redis_server: PrivateRedis, start_worker: Callable[..., Worker]
) -> None:
    worker = start_worker(redis_server.url, redis_server.url)
    assert wait_for(lambda: "Trying again in 2.00 seconds... (1/100)" in worker.log(), 15)
    assert not worker.ready()
    redis_server.start()
    assert wait_for(worker.ready, 20), worker.log()
    app = client(redis_server.url)
    try:
        assert app.tasks["outage_app.add"].delay(2, 3).get(timeout=10) == 5
    finally:
        app.close()


def test_without_retry_on_startup_the_worker_exits_at_once_and_masks_the_password(
    redis_server: PrivateRedis, start_worker: Callable[..., Worker]
) -> None:
    url = f"redis://:hunter2@127.0.0.1:{redis_server.port}/0"
    worker = start_worker(url, url, broker_connection_retry_on_startup=False)
    assert worker.process.wait(timeout=20) == 1
    log = worker.log()
    assert f"Cannot connect to redis://:****@127.0.0.1:{redis_server.port}/0" in log
    assert "hunter2" not in log
    assert "Trying again" not in log


def test_worker_reconnects_after_the_broker_restarts(
    redis_server: PrivateRedis, start_worker: Callable[..., Worker]
) -> None:
    redis_server.start()
    worker = start_worker(redis_server.url, redis_server.url)
    assert wait_for(worker.ready, 20), worker.log()
    app = client(redis_server.url)
    add = app.tasks["outage_app.add"]
    try:
        assert add.delay(1, 1).get(timeout=10) == 2
        redis_server.kill()
        assert wait_for(lambda: "Connection to broker lost" in worker.log(), 10), worker.log()
        redis_server.start()
        assert wait_for(lambda: "Connected to redis://127.0.0.1" in worker.log(), 20), worker.log()
        assert add.delay(20, 22).get(timeout=10) == 42
        assert worker.process.poll() is None
    finally:
        app.close()


def test_without_connection_retry_a_lost_broker_stops_the_worker(
    redis_server: PrivateRedis, start_worker: Callable[..., Worker]
) -> None:
    redis_server.start()
    worker = start_worker(redis_server.url, redis_server.url, broker_connection_retry=False)
    assert wait_for(worker.ready, 20), worker.log()
    redis_server.kill()
    assert worker.process.wait(timeout=30) == 1, worker.log()
    assert "broker_connection_retry is off" in worker.log()


def test_retries_give_up_after_broker_connection_max_retries(
    redis_server: PrivateRedis, start_worker: Callable[..., Worker]
) -> None:
    worker = start_worker(redis_server.url, redis_server.url, broker_connection_max_retries=1)
    assert worker.process.wait(timeout=30) == 1, worker.log()
    log = worker.log()
    assert "Trying again in 2.00 seconds... (1/1)" in log
    assert "Giving up" in log
