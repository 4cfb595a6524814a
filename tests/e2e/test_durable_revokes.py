"""Revokes recorded in the broker reach workers that were not listening, on every broker.

``app.control.revoke`` records the id in the broker as well as broadcasting it; a worker
reads the records when it starts, so one started or restarted after the revoke still
skips the task, and a revoked countdown task is skipped when it falls due. A worker
reads them again after it reconnects to the broker (shown on Redis, where the test can
take a private server away).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from celeriac import Celeriac, states
from celeriac.exceptions import TaskRevokedError
from tests.e2e.conftest import (
    Broker,
    WorkerProcess,
    kill_worker,
    launch_worker,
    wait_for,
    wait_until_ready,
)
from tests.servers import private_redis

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
StartWorker = Callable[..., WorkerProcess]
REVOKED_KWARGS = ["expired", "request", "signum", "terminated"]


def records(worker: WorkerProcess, signal: str, task_id: str) -> list[dict[str, Any]]:
    """The ``signal`` records about ``task_id`` written by every process so far."""
    return [r for r in worker.signals() if r["signal"] == signal and r["task_id"] == task_id]


def test_worker_started_after_the_revoke_never_runs_the_task_until_the_revoke_expires(
    start_worker: StartWorker, client: Celeriac
) -> None:
    victim = client.send_task("sigproj.add", (40, 2))
    bystander = client.send_task("sigproj.add", (1, 1))
    forgotten = client.send_task("sigproj.add", (2, 2))
    client.control.revoke(victim.id)
    client.conf.worker_revoke_expires = 1.0
    client.control.revoke(forgotten.id)
    time.sleep(1.5)

    worker = start_worker(concurrency=1)

    assert bystander.get(timeout=20) == 2
    assert forgotten.get(timeout=20) == 4
    with pytest.raises(TaskRevokedError):
        victim.get(timeout=10)
    assert victim.state == states.REVOKED
    assert wait_for(lambda: bool(records(worker, "task_revoked", victim.id)))
    [revoked] = records(worker, "task_revoked", victim.id)
    assert revoked["kwargs"] == REVOKED_KWARGS
    assert revoked["pid"] == worker.pid
    assert records(worker, "task_prerun", victim.id) == []


def test_revoked_countdown_tasks_are_skipped_when_due_even_by_a_restarted_worker(
    start_worker: StartWorker, client: Celeriac
) -> None:
    first = start_worker(concurrency=1)
    soon = client.send_task("sigproj.add", (40, 2), countdown=1)
    later = client.send_task("sigproj.add", (40, 2), countdown=5)
    client.control.revoke(soon.id)
    client.control.revoke(later.id)
    assert wait_for(lambda: bool(records(first, "task_revoked", soon.id)), timeout=10)
    assert soon.state == states.REVOKED
    assert first.stop() == 0

    second = start_worker(concurrency=1)
    bystander = client.send_task("sigproj.add", (1, 1), countdown=5)

    assert bystander.get(timeout=30) == 2
    assert wait_for(lambda: bool(records(second, "task_revoked", later.id)), timeout=10)
    [revoked] = records(second, "task_revoked", later.id)
    assert revoked["pid"] == second.pid
    assert later.state == states.REVOKED
    assert records(first, "task_prerun", soon.id) == []
    assert records(second, "task_prerun", later.id) == []


def test_worker_reads_revokes_again_after_reconnecting(tmp_path: Path) -> None:
    with private_redis(tmp_path, appendonly=True) as server:
        broker = Broker(server.url, f"sqlite:///{tmp_path}/results.db")
        client = Celeriac("client", broker=broker.url, backend=broker.backend)
        worker = wait_until_ready(launch_worker("sigproj", broker, tmp_path, "w0", concurrency=1))
        try:
            victim = client.send_task("sigproj.add", (40, 2), countdown=5)
            # Recorded in the broker only, as if the worker had missed the broadcast.
            client.transport.record_revokes([victim.id], 60.0)
            server.stop()
            assert wait_for(lambda: "Connection to broker lost" in worker.log(), timeout=10)
            server.start()
            bystander = client.send_task("sigproj.add", (1, 1), countdown=5)

            assert bystander.get(timeout=40) == 2
            assert wait_for(lambda: bool(records(worker, "task_revoked", victim.id)), timeout=10)
            assert victim.state == states.REVOKED
            assert records(worker, "task_prerun", victim.id) == []
        finally:
            kill_worker(worker)
            client.close()


def test_statedb_keeps_a_revoke_sent_to_this_node_alone_across_a_restart(
    tmp_path: Path,
) -> None:
    broker = Broker(f"sqlite:///{tmp_path}/broker.db", f"sqlite:///{tmp_path}/results.db")
    client = Celeriac("client", broker=broker.url, backend=broker.backend)
    statedb = f"--statedb={tmp_path}/%n.state"
    workers: list[WorkerProcess] = []
    try:
        workers.append(wait_until_ready(launch_worker("sigproj", broker, tmp_path, "w0", statedb)))
        victim = client.send_task("sigproj.add", (40, 2), countdown=3)
        # Sent to one node by name: not recorded in the broker, only in that node's state.
        client.control.revoke(victim.id, destination=["w0@e2e"], reply=True, timeout=2.0)
        assert workers[0].stop() == 0
        assert client.transport.read_revokes() == {}
        # The same node name: %n in --statedb names the same file.
        workers.append(wait_until_ready(launch_worker("sigproj", broker, tmp_path, "w0", statedb)))
        bystander = client.send_task("sigproj.add", (1, 1), countdown=3)

        assert bystander.get(timeout=30) == 2
        assert wait_for(lambda: bool(records(workers[1], "task_revoked", victim.id)), timeout=10)
        assert records(workers[1], "task_prerun", victim.id) == []
    finally:
        for worker in workers:
            kill_worker(worker)
        client.close()


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_a_worker_that_cannot_read_the_recorded_revokes_still_consumes(
    start_worker: StartWorker, client: Celeriac, broker: Broker
) -> None:
    # The revokes' sorted set made a plain string: every read of it fails with WRONGTYPE.
    with redis.Redis.from_url(broker.url) as server:
        server.set(f"{broker.options['global_keyprefix']}celeriac:revoked", "not a sorted set")

    worker = start_worker(concurrency=1)

    assert client.send_task("sigproj.add", (2, 3)).get(timeout=20) == 5
    assert "Could not read the revokes recorded in the broker" in worker.log()
