"""Every signal of the seeds: who sends it, in which process, with which keyword arguments.

A worker (prefork, so the pool children are separate processes, with beat embedded by
``-B``) and a client process run the sigproj tasks; every signal is recorded with the
sending pid. The table below is the contract. A signal this run does not send is listed
with ``None`` as its process and checked against its declaration only: the green pool's
(``tests/e2e/test_green_pool.py`` checks them on a ``-P gevent`` worker) and
``setup_logging`` (a receiver would turn off celeriac's logging set-up;
``tests/e2e/test_seed_examples.py`` checks that).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from celeriac import signals
from tests.e2e.conftest import Broker, WorkerProcess, subprocess_env

pytestmark = pytest.mark.slow

CLIENT, MAIN, CHILD = "client", "worker main process", "pool child process"
# A message is published by whoever sends it: a client, or a task (a retry) in a pool child.
SENDER = frozenset({CLIENT, CHILD})

# signal -> (processes it arrives in, keyword arguments it carries)
TABLE: dict[str, tuple[str | frozenset[str] | None, list[str]]] = {
    "before_task_publish": (
        SENDER,
        ["body", "declare", "exchange", "headers", "properties", "retry_policy", "routing_key"],
    ),
    "after_task_publish": (SENDER, ["body", "exchange", "headers", "routing_key"]),
    "task_sent": (SENDER, ["args", "eta", "kwargs", "task", "task_id", "taskset"]),
    "task_received": (MAIN, ["request"]),
    "task_prerun": (CHILD, ["args", "kwargs", "task", "task_id"]),
    "task_postrun": (CHILD, ["args", "kwargs", "retval", "state", "task", "task_id"]),
    "task_success": (CHILD, ["result"]),
    "task_retry": (CHILD, ["einfo", "reason", "request"]),
    "task_failure": (CHILD, ["args", "einfo", "exception", "kwargs", "task_id", "traceback"]),
    "task_internal_error": (
        CHILD,
        ["args", "einfo", "exception", "kwargs", "request", "task_id", "traceback"],
    ),
    "task_revoked": (MAIN, ["expired", "request", "signum", "terminated"]),
    "task_unknown": (MAIN, ["exc", "id", "message", "name"]),
    "task_rejected": (MAIN, ["exc", "message"]),
    "import_modules": (MAIN, []),
    "celeryd_init": (MAIN, ["conf", "instance", "options"]),
    "celeryd_after_setup": (MAIN, ["conf", "instance"]),
    "worker_init": (MAIN, []),
    "worker_before_create_process": (MAIN, []),
    "worker_ready": (MAIN, []),
    "heartbeat_sent": (MAIN, []),
    "worker_process_init": (CHILD, []),
    "worker_process_shutdown": (CHILD, ["exitcode", "pid"]),
    "worker_shutting_down": (MAIN, ["exitcode", "how", "sig"]),
    "worker_shutdown": (MAIN, []),
    "after_setup_logger": (MAIN, ["colorize", "format", "logfile", "logger", "loglevel"]),
    "after_setup_task_logger": (MAIN, ["colorize", "format", "logfile", "logger", "loglevel"]),
    "user_preload_options": (MAIN, ["app", "options"]),
    "setup_logging": (None, ["colorize", "format", "logfile", "loglevel"]),
    "beat_init": (MAIN, []),
    "beat_embedded_init": (MAIN, []),
    "eventlet_pool_started": (None, []),
    "eventlet_pool_preshutdown": (None, []),
    "eventlet_pool_postshutdown": (None, []),
    "eventlet_pool_apply": (None, ["args", "kwargs", "target"]),
}

CLIENT_SCRIPT = """
import sigproj
from celeriac.exceptions import TaskRevokedError
print(sigproj.add.delay(2, 2).get(timeout=10))
print(sigproj.flaky.delay(1).get(timeout=10))
for call in (lambda: sigproj.boom.delay("x").get(timeout=10),
             lambda: sigproj.unserializable.delay().get(timeout=10),
             lambda: sigproj.add.apply_async((1, 1), expires=-1).get(timeout=10),
             lambda: sigproj.app.send_task("sigproj.nope").get(timeout=10)):
    try:
        call()
    except Exception as exc:
        print(type(exc).__name__)
from celeriac.protocol.envelope import Envelope
garbage = Envelope(b"garbage", headers={"task": "sigproj.add", "id": "g"})
sigproj.app.transport.publish("celery", garbage)
with sigproj.app.producer_or_acquire() as producer:
    producer.publish({"not": "a task"}, routing_key="celery")
print(sigproj.add.delay(1, 2).get(timeout=10))
"""


def test_the_table_lists_every_signal_of_the_catalog() -> None:
    assert sorted(TABLE) == sorted(signals.__all__)


def test_each_signal_arrives_in_its_process_with_its_arguments(
    start_worker: Callable[..., WorkerProcess], broker: Broker, tmp_path: Path
) -> None:
    worker = start_worker("-B", pool="prefork", concurrency=2)
    client = subprocess.run(
        [sys.executable, "-c", CLIENT_SCRIPT],
        env=subprocess_env(broker, worker.signal_log),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert client.returncode == 0, client.stderr.decode()
    time.sleep(2.5)  # one heartbeat interval
    assert worker.stop(signal.SIGTERM) == 0

    records = worker.signals()
    roles = {worker.pid: MAIN}
    child_pids = {r["pid"] for r in records if r["signal"] == "worker_process_init"}
    roles.update(dict.fromkeys(child_pids, CHILD))
    seen: dict[str, set[str]] = {}
    for record in records:
        name = record["signal"]
        if name not in TABLE:
            continue
        role = roles.get(record["pid"], CLIENT)
        seen.setdefault(name, set()).add(role)
        assert record["kwargs"] == TABLE[name][1], name

    seed_handlers = {
        record["signal"]: roles.get(record["pid"], CLIENT)
        for record in records
        if record["signal"].startswith("seed:")
    }
    assert seed_handlers == {
        "seed:after_task_publish": CLIENT,
        "seed:task_postrun": CHILD,
        "seed:task_success": CHILD,
        "seed:task_failure": CHILD,
        "seed:celeryd_after_setup": MAIN,
    }
    for name, (process, _) in TABLE.items():
        if process is None:
            assert name not in seen, f"{name} is listed as not sent yet, but it was"
            continue
        expected = set(process) if isinstance(process, frozenset) else {process}
        assert seen.get(name) == expected, f"{name}: expected {expected}, saw {seen.get(name)}"


def test_signals_not_sent_yet_declare_their_documented_arguments() -> None:
    for name, (process, kwargs) in TABLE.items():
        if process is None:
            assert sorted(getattr(signals, name).providing_args) == kwargs, name
