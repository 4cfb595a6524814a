"""A tasks module for end-to-end tests: its signal handlers are the seeds' examples.

Every handler appends one JSON line (signal, pid, sender, keyword names) to the file
named by SIGNAL_LOG, so a test can tell which process sent which signal with which
arguments.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from celeriac import Celeriac, signals
from celeriac.signals import (
    after_task_publish,
    celeryd_after_setup,
    celeryd_init,
    task_failure,
    task_postrun,
    task_success,
)
from celeriac.worker.control import control_command, inspect_command

app = Celeriac(
    "sigproj",
    broker=os.environ["SIGPROJ_BROKER"],
    backend=os.environ.get("SIGPROJ_BACKEND") or None,
)
# Short leases: a killed worker's messages come back within seconds in the tests.
app.conf.broker_transport_options = {
    "lease_seconds": 2.0,
    **json.loads(os.environ.get("SIGPROJ_TRANSPORT_OPTIONS") or "{}"),
}
app.conf.task_annotations = json.loads(os.environ.get("SIGPROJ_TASK_ANNOTATIONS") or "null")


def record(name: str, sender: Any, kwargs: dict[str, Any]) -> None:
    """Append what a signal carried to the log file."""
    path = os.environ.get("SIGNAL_LOG")
    if not path:
        return
    line = {
        "signal": name,
        "pid": os.getpid(),
        "sender": sender if isinstance(sender, str) else type(sender).__name__,
        "kwargs": sorted(key for key in kwargs if key != "signal"),
        "task_id": kwargs.get("task_id") or getattr(kwargs.get("request"), "id", None),
    }
    with open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps(line) + "\n")


def _recorder(name: str) -> Any:
    def receiver(sender: Any = None, **kwargs: Any) -> None:
        record(name, sender, kwargs)

    receiver.__name__ = f"record_{name}"
    return receiver


# setup_logging is left alone: a receiver on it turns off celeriac's logging set-up.
RECORDED = [name for name in signals.__all__ if name != "setup_logging"]
for _name in RECORDED:
    getattr(signals, _name).connect(_recorder(_name), weak=False)


# ---- the seeds' handler examples, unchanged but for the import --------------------


@after_task_publish.connect(sender="sigproj.add")
def task_sent_handler(sender=None, headers=None, body=None, **kwargs):
    # information about task are located in headers for task messages
    # using the task protocol version 2.
    info = headers if "task" in headers else body
    record("seed:after_task_publish", sender, {"id": info["id"]})


@task_postrun.connect
def task_execute(sender=None, task_id=None, args=None, retval=None, state=None, **kwargs):
    record("seed:task_postrun", sender, {"state": state, "retval": retval})


@task_success.connect
def task_success_handler(sender, result=None, *args, **kwargs):
    record("seed:task_success", sender, {"result": result})


@task_failure.connect
def task_failure_handler(sender, task_id, exception, traceback, einfo, args, **kwargs):
    record("seed:task_failure", sender, {"exception": exception})


@celeryd_init.connect
def configure_workers(sender=None, conf=None, **kwargs):
    if sender in ("worker1@example.com", "worker2@example.com"):
        conf.task_default_rate_limit = "10/m"
    if sender == "worker3@example.com":
        conf.worker_prefetch_multiplier = 0


@celeryd_after_setup.connect
def setup_direct_queue(sender, instance, **kwargs):
    queue_name = "{0}.dq".format(sender)  # sender is the nodename of the worker
    instance.app.amqp.queues.select_add(queue_name)
    record("seed:celeryd_after_setup", sender, {"queue": queue_name})


_sigint_again = os.environ.get("SIGPROJ_SIGINT_WHILE_SHUTTING_DOWN") == "1"


@signals.worker_shutting_down.connect
def interrupt_again(sender: Any = None, **kwargs: Any) -> None:
    """With SIGPROJ_SIGINT_WHILE_SHUTTING_DOWN=1, send the worker a second SIGINT while it
    handles the first: a Ctrl-C hit twice in quick succession, at its worst moment."""
    global _sigint_again
    if _sigint_again:
        _sigint_again = False
        os.kill(os.getpid(), signal.SIGINT)


class AuditFailures:
    """A ``task_annotations`` object, named by its import path: every sigproj task records
    its failures through an ``on_failure`` handler given as a plain function."""

    def annotate(self, task: Any) -> dict[str, Any] | None:
        return {"on_failure": audit_failure} if task.name.startswith("sigproj.") else None


def audit_failure(
    self: Any, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
) -> None:
    record("annotation:on_failure", self.name, {"task_id": task_id, "exc": exc})


# ---- tasks -----------------------------------------------------------------------


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def boom(message: str) -> None:
    raise ValueError(message)


class CustomError(Exception):
    """An exception type only this module defines."""


@app.task
def custom_boom() -> None:
    raise CustomError("mine")


@app.task(bind=True, max_retries=3, default_retry_delay=0.1)
def flaky(self: Any, succeed_on: int) -> int:
    if self.request.retries < succeed_on:
        raise self.retry(exc=KeyError("again"))
    return int(self.request.retries)


@app.task(autoretry_for=(ConnectionError,), retry_backoff=0.1, retry_jitter=False, max_retries=2)
def always_down() -> None:
    raise ConnectionError("down")


@app.task
def slow(seconds: float, marker: str = "") -> float:
    time.sleep(seconds)
    if marker:
        with open(marker, "a", encoding="utf-8") as done:
            done.write(f"{os.getpid()}\n")
    return seconds


@app.task(acks_late=True)
def slow_late(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task
def unserializable() -> object:
    return object()


@app.task(bind=True)
def whoami(self: Any) -> dict[str, Any]:
    return {"id": self.request.id, "pid": os.getpid(), "hostname": self.request.hostname}


# ---- remote-control commands of the app's own, in Celery's decorator forms ----------


@control_command()
def sigproj_pid(state: Any, **kwargs: Any) -> dict[str, int]:
    return {"pid": os.getpid()}


@inspect_command()
def sigproj_queue_count(state: Any, **kwargs: Any) -> dict[str, int]:
    return {"queues": len(state.consumer.queues)}
