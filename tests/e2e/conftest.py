"""Fixtures that start real ``celeriac worker`` processes, on the embedded SQLite broker
in tmp_path, on the loopback Redis (broker and result store, in a key prefix of the
test's own) and on the loopback RabbitMQ (in a virtual host of the test's own, with
results in Redis)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
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

    def env(self) -> dict[str, str]:
        """The variables ``sigproj`` reads to reach this broker."""
        return {
            "SIGPROJ_BROKER": self.url,
            "SIGPROJ_BACKEND": self.backend or "",
            "SIGPROJ_TRANSPORT_OPTIONS": json.dumps(self.options),
        }


def subprocess_env(broker: Broker, signal_log: Path) -> dict[str, str]:
    """The environment of worker and client subprocesses."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env.update(broker.env())
    env["SIGNAL_LOG"] = str(signal_log)
    return env


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


@pytest.fixture
def start_worker(tmp_path: Path, broker: Broker) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``celeriac -A sigproj worker``; every worker is killed by PID afterwards."""
    started: list[WorkerProcess] = []

    def start(*extra: str, pool: str = "prefork", concurrency: int = 2) -> WorkerProcess:
        index = len(started)
        output = tmp_path / f"worker{index}.log"
        signal_log = tmp_path / "signals.jsonl"
        command = [
            sys.executable, "-m", "celeriac", "-A", "sigproj", "worker",
            "-P", pool, "-c", str(concurrency), "-l", "info", "-n", f"w{index}@e2e", *extra,
        ]  # fmt: skip
        with output.open("wb") as sink:
            process = subprocess.Popen(
                command,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=subprocess_env(broker, signal_log),
                cwd=tmp_path,
            )
        worker = WorkerProcess(process, output, signal_log)
        started.append(worker)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            ready = [r for r in worker.signals() if r["signal"] == "worker_ready"]
            if any(record["pid"] == process.pid for record in ready):
                return worker
            if process.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"worker did not become ready:\n{worker.log()}")

    yield start
    for worker in started:
        if worker.process.poll() is None:
            os.kill(worker.pid, signal.SIGKILL)
            worker.process.wait(timeout=10)
