"""Fixtures that start real ``celeriac worker`` processes, on the embedded SQLite broker
in tmp_path, on the loopback Redis (broker and result store, in a key prefix of the
test's own) and on the loopback RabbitMQ (in a virtual host of the test's own, with
results in Redis); and, for the canvas tests, one ``canvasproj`` worker per broker and
result store pair, PostgreSQL results included (in a schema of their own)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac
from tests.servers import delete_redis_keys, rabbitmq_vhost, require

HERE = Path(__file__).parent
READY_TIMEOUT = 30.0


@dataclass
class WorkerProcess:
    """A worker subprocess with its output and signal log."""

    process: subprocess.Popen[bytes]
    output: Path
    signal_log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def signals(self) -> list[dict[str, Any]]:
        """The signal records written so far, by every process."""
        if not self.signal_log.exists():
            return []
        return [json.loads(line) for line in self.signal_log.read_text().splitlines() if line]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``sig`` and wait for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        return self.output.read_text(errors="replace")


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@dataclass(frozen=True)
class Broker:
    """Where the workers and clients of one test meet: broker, result store, options."""

    url: str
    backend: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    backend_options: dict[str, Any] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """The variables ``sigproj`` and ``canvasproj`` read to reach this broker."""
        return {
            "SIGPROJ_BROKER": self.url,
            "SIGPROJ_BACKEND": self.backend or "",
            "SIGPROJ_TRANSPORT_OPTIONS": json.dumps(self.options),
            "SIGPROJ_BACKEND_OPTIONS": json.dumps(self.backend_options),
        }


def subprocess_env(broker: Broker, signal_log: Path) -> dict[str, str]:
    """The environment of worker and client subprocesses."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env.update(broker.env())
    env["SIGNAL_LOG"] = str(signal_log)
    return env


def run_celeriac(
    broker: Broker, folder: Path, *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m celeriac -A sigproj ARGS`` in ``folder`` on ``broker``; its output is
    captured, and it is killed if it overruns ``timeout``."""
    return subprocess.run(
        [sys.executable, "-m", "celeriac", "-A", "sigproj", *args],
        cwd=folder,
        env=subprocess_env(broker, folder / "signals.jsonl"),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(params=["sqlite", "redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    if request.param == "sqlite":
        yield Broker(f"sqlite:///{tmp_path}/broker.db")
        return
    if request.param == "rabbitmq":
        redis_url = require("redis")
        prefix = f"e2e-{uuid.uuid4().hex}:"
        with rabbitmq_vhost("e2e") as url:
            yield Broker(url, f"{redis_url}?global_keyprefix={prefix}")
        delete_redis_keys(redis_url, prefix)
        return
    url = require("redis")
    prefix = f"e2e-{uuid.uuid4().hex}:"
    yield Broker(url, f"{url}?global_keyprefix={prefix}", {"global_keyprefix": prefix})
    delete_redis_keys(url, prefix)


@pytest.fixture
def client(broker: Broker) -> Iterator[Celeriac]:
    """An app in the test process on the workers' broker and result store."""
    os.environ.setdefault("SIGPROJ_BROKER", "memory://sigproj-import")
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    # The worker imports it as `sigproj` (PYTHONPATH), so the test process must too.
    import sigproj  # type: ignore[import-not-found]  # noqa: F401

    app = Celeriac("client", broker=broker.url, backend=broker.backend)
    app.conf.broker_transport_options = broker.options
    yield app
    app.close()


def launch_worker(
    app: str,
    broker: Broker,
    folder: Path,
    name: str,
    *extra: str,
    pool: str = "prefork",
    concurrency: int = 2,
) -> WorkerProcess:
    """Start ``celeriac -A <app> worker -n <name>@e2e`` in ``folder``, its output in
    ``<name>.log``; the caller waits for it to be ready and kills it (by PID) afterwards."""
    output = folder / f"{name}.log"
    signal_log = folder / "signals.jsonl"
    command = [
        sys.executable, "-m", "celeriac", "-A", app, "worker",
        "-P", pool, "-c", str(concurrency), "-l", "info", "-n", f"{name}@e2e", *extra,
    ]  # fmt: skip
    with output.open("wb") as sink:
        process = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=subprocess_env(broker, signal_log),
            cwd=folder,
        )
    return WorkerProcess(process, output, signal_log)


def wait_until_ready(worker: WorkerProcess) -> WorkerProcess:
    """Return ``worker`` once it has sent worker_ready; fail the test if it never does."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        ready = [r for r in worker.signals() if r["signal"] == "worker_ready"]
        if any(record["pid"] == worker.pid for record in ready):
            return worker
        if worker.process.poll() is not None:
            break
        time.sleep(0.05)
    pytest.fail(f"worker did not become ready:\n{worker.log()}")


def kill_worker(worker: WorkerProcess) -> None:
    """Kill a worker by PID if it still runs."""
    if worker.process.poll() is None:
        os.kill(worker.pid, signal.SIGKILL)
        worker.process.wait(timeout=10)


@pytest.fixture
def start_worker(tmp_path: Path, broker: Broker) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``celeriac -A sigproj worker`` (or another ``app``); every worker is killed by
    PID afterwards."""
    started: list[WorkerProcess] = []

    def start(
        *extra: str, pool: str = "prefork", concurrency: int = 2, app: str = "sigproj"
    ) -> WorkerProcess:
        name = f"w{len(started)}"
        worker = launch_worker(
            app, broker, tmp_path, name, *extra, pool=pool, concurrency=concurrency
        )
        started.append(worker)
        return wait_until_ready(worker)

    yield start
    for worker in started:
        kill_worker(worker)


# ---- the canvas matrix -------------------------------------------------------------

CANVAS_PAIRS = (
    "sqlite/sqlite",
    "redis/redis",
    "redis/postgres",
    "rabbitmq/redis",
    "rabbitmq/postgres",
)
"""The broker/result-store pairs the canvas tests run a real worker on."""


class CanvasWorkers:
    """One ``canvasproj`` worker per broker/result-store pair, started when a test first
    needs it and kept for the session, so the canvas tests start five workers per pytest
    process rather than one per test. Everything a pair made (Redis keys, the RabbitMQ
    virtual host, the PostgreSQL schema, the worker) goes at the end of the session."""

    def __init__(self, folder: Path, cleanup: ExitStack) -> None:
        self.folder = folder
        self.cleanup = cleanup
        self.started: dict[str, tuple[Broker, WorkerProcess]] = {}

    def get(self, pair: str) -> tuple[Broker, WorkerProcess]:
        """The pair's broker and its ready worker, started on first use."""
        if pair not in self.started:
            folder = self.folder / pair.replace("/", "-")
            folder.mkdir()
            broker = self._broker(pair, folder)
            worker = launch_worker(
                "canvasproj", broker, folder, folder.name, pool="prefork", concurrency=4
            )
            self.cleanup.callback(kill_worker, worker)
            self.started[pair] = (broker, wait_until_ready(worker))
        return self.started[pair]

    def _broker(self, pair: str, folder: Path) -> Broker:
        broker_kind, backend_kind = pair.split("/")
        options: dict[str, Any] = {}
        backend_options: dict[str, Any] = {}
        prefix = f"canvas-{uuid.uuid4().hex}:"
        if broker_kind == "sqlite":
            url = f"sqlite:///{folder}/broker.db"
        elif broker_kind == "redis":
            url = self._redis(prefix)
            options = {"global_keyprefix": prefix}
        else:
            url = self.cleanup.enter_context(rabbitmq_vhost("canvas"))
        if backend_kind == "sqlite":
            backend = f"sqlite:///{folder}/results.db"
        elif backend_kind == "redis":
            backend = f"{self._redis(prefix)}?global_keyprefix={prefix}"
        else:
            backend = require("postgres")
            schema = self._postgres_schema(backend)
            backend_options = {"database_table_schemas": {"task": schema, "group": schema}}
        return Broker(url, backend, options, backend_options)

    def _redis(self, prefix: str) -> str:
        url = require("redis")
        self.cleanup.callback(delete_redis_keys, url, prefix)
        return url

    def _postgres_schema(self, url: str) -> str:
        """A schema of the pair's own for the result tables; dropped at the end."""
        import psycopg

        schema = f"canvas_{uuid.uuid4().hex}"
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f"CREATE SCHEMA {schema}")

        def drop() -> None:
            with psycopg.connect(url, autocommit=True) as connection:
                connection.execute(f"DROP SCHEMA {schema} CASCADE")

        self.cleanup.callback(drop)
        return schema


@pytest.fixture(scope="session")
def canvas_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CanvasWorkers]:
    """The session's canvas workers, by broker/result-store pair."""
    with ExitStack() as cleanup:
        yield CanvasWorkers(tmp_path_factory.mktemp("canvas"), cleanup)
