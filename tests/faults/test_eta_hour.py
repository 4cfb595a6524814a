"""Tasks with an eta an hour ahead and a one-second lease: none runs early, none twice,
and the worker's memory does not grow with how many are scheduled.

They wait in the broker, not in the worker (design §3), so a short lease cannot make
them run twice, as Celery's Redis visibility timeout does. The hour passes on an
injected clock: a second worker runs under libfaketime with its wall clock set a few
seconds before the eta (the monotonic clock stays real, so its timeouts keep their
length). SQLite and Redis compare the eta with the consumer's clock; RabbitMQ times its
delay levels with the server's own, which a test cannot move: there only the first hour
is checked.
"""

from __future__ import annotations

import datetime
import importlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from celeriac import Celeriac
from celeriac.publisher import batch_publish
from celeriac.states import SUCCESS
from tests.faults.support import (
    BROKERS,
    battery_row,
    fault_broker,
    fault_client,
    faultproj_worker,
    run_times,
    wait_until_stored,
)
from tests.processes import rss_bytes

pytestmark = [pytest.mark.faults, pytest.mark.timeout(150)]

SCENARIO = "eta 1 h ahead, 1 s lease"
FEW = 100
MANY = 5000
LEASE_SECONDS = 1.0
SETTLE_SECONDS = 3.0
"""How long the worker holds the scheduled tasks before its memory is read: three leases."""
MAX_GROWTH = 2 * 1024 * 1024
"""Allowed RSS growth from FEW to MANY scheduled: about 430 bytes for each of the 4,900
more, less than one message would take if the worker kept it."""
EARLY_SECONDS = 3
"""The faked clock starts this long before the eta, so the test sees the eta pass."""


@pytest.mark.parametrize("kind", BROKERS)
def test_tasks_an_hour_ahead_run_once_when_due_and_wait_in_the_broker(
    kind: str, tmp_path: Path
) -> None:
    with (
        fault_broker(kind, tmp_path, lease_seconds=LEASE_SECONDS) as broker,
        battery_row(SCENARIO, kind) as figures,
    ):
        client = fault_client(broker)
        eta = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        options = ("-P", "prefork", "-c", "2")
        with faultproj_worker(broker, tmp_path, *options, name="now") as worker:
            settle(client)
            ids = schedule(client, FEW, eta)
            settle(client)
            rss_few = rss_bytes(worker.pid)
            ids += schedule(client, MANY - FEW, eta)
            settle(client)
            rss_many = rss_bytes(worker.pid)
            stop_warm(worker)
        ran_in_the_first_hour = sorted(set(ids) & set(run_times(tmp_path)))
        figures["RSS MiB at 100 scheduled"] = rss_few / 2**20
        figures["at 5000 scheduled"] = rss_many / 2**20
        figures["ran early"] = len(ran_in_the_first_hour)
        assert ran_in_the_first_hour == []
        assert rss_many - rss_few < MAX_GROWTH
        if kind == "rabbitmq":
            figures["lease"] = "the connection (RabbitMQ has no lease timeout)"
            figures["after the hour"] = "not run: RabbitMQ's delay levels use the server's clock"
            client.close()
            return

        offset = eta.timestamp() - time.time() - EARLY_SECONDS
        clock = faked_clock(offset)
        with faultproj_worker(broker, tmp_path, *options, name="later", environment=clock):
            states = wait_until_stored(client, ids, timeout=90)
        client.close()
        times = run_times(tmp_path)
        early = [task_id for task_id in ids if times[task_id][0] < eta.timestamp()]
        twice = [task_id for task_id in ids if len(times[task_id]) > 1]
        figures["run after the hour"] = sum(state == SUCCESS for state in states)
        figures["early"] = len(early)
        figures["twice"] = len(twice)
        figures["first run (s after the eta)"] = min(times[task_id][0] for task_id in ids) - (
            eta.timestamp()
        )
        assert states == [SUCCESS] * MANY
        assert early == []
        assert twice == []


def schedule(client: Celeriac, count: int, eta: datetime.datetime) -> list[str]:
    """Send ``count`` tasks to run at ``eta`` in one batch; return their ids."""
    with batch_publish(client):
        sent = [client.send_task("faultproj.record", (number,), eta=eta) for number in range(count)]
    return [result.id for result in sent]


def settle(client: Celeriac) -> None:
    """Run a task through the worker, then let a few leases pass."""
    client.send_task("faultproj.record", (0,)).get(timeout=30)
    time.sleep(SETTLE_SECONDS)


def stop_warm(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker and wait for it, so it hands back what it holds."""
    os.kill(worker.pid, signal.SIGTERM)
    worker.wait(timeout=30)


def faked_clock(offset: float) -> dict[str, str]:
    """The environment that runs a process with its wall clock ``offset`` seconds on."""
    try:
        libfaketime = importlib.import_module("libfaketime")
    except ImportError:
        reason = "libfaketime is not installed (it is in the test dependency group)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    _, environment = libfaketime.get_reload_information()
    return {
        **environment,
        "FAKETIME": f"{offset:+.0f}",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
