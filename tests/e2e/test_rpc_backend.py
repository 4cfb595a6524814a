"""``rpc://`` on every broker with real worker processes: each result comes back to the
client that sent the task as a message, whoever stores it (the task's own process, or
the worker's main process for a revoke), and chords are refused as Celery refuses them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from celeriac import Celeriac, GroupResult, chord, group, states
from celeriac.exceptions import TaskRevokedError
from tests.e2e.conftest import Broker, WorkerProcess, wait_for

pytestmark = pytest.mark.slow
StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def broker(broker: Broker) -> Broker:
    """The broker of each kind, with results sent back as messages."""
    return dataclasses.replace(broker, backend="rpc://")


def test_results_and_failures_come_back_to_the_client(
    start_worker: StartWorker, client: Celeriac
) -> None:
    start_worker(pool="prefork", concurrency=2)

    added = client.send_task("sigproj.add", (2, 3))
    failed = client.send_task("sigproj.boom", ("rpc",))
    many = [client.send_task("sigproj.add", (n, n)) for n in range(50)]

    assert added.get(timeout=20) == 5
    with pytest.raises(ValueError, match="rpc"):
        failed.get(timeout=20)
    assert failed.state == states.FAILURE
    assert [result.get(timeout=20) for result in reversed(many)] == [
        2 * n for n in range(49, -1, -1)
    ]
    assert client.AsyncResult(added.id).get(timeout=1) == 5


def test_a_retried_task_answers_the_client_that_first_sent_it(
    start_worker: StartWorker, client: Celeriac
) -> None:
    start_worker(pool="threads", concurrency=2)

    result = client.send_task("sigproj.flaky", (2,))

    assert result.get(timeout=20) == 2


def test_a_task_ended_by_the_worker_itself_is_reported_too(
    start_worker: StartWorker, client: Celeriac
) -> None:
    start_worker(pool="prefork", concurrency=1)
    running = client.send_task("sigproj.slow", (30,))
    assert wait_for(lambda: _started(client, running.id), timeout=20)

    client.control.revoke(running.id, terminate=True)

    with pytest.raises(TaskRevokedError):
        running.get(timeout=20)
    assert running.state == states.REVOKED


def test_a_group_saved_by_the_client_is_restored_there(
    start_worker: StartWorker, client: Celeriac
) -> None:
    start_worker(pool="threads", concurrency=2)
    sent = group(client.signature("sigproj.add", (n, n)) for n in range(3)).apply_async()

    sent.save()
    restored = GroupResult.restore(sent.id, app=client)

    assert restored is not None
    assert restored.get(timeout=20) == [0, 2, 4]
    restored.delete()
    assert GroupResult.restore(sent.id, app=client) is None


def test_a_chord_is_refused_with_celery_s_message(client: Celeriac) -> None:
    header = [client.signature("sigproj.add", (1, 1)), client.signature("sigproj.add", (2, 2))]

    with pytest.raises(NotImplementedError, match='The "rpc" result backend does not support'):
        chord(header)(client.signature("sigproj.add", (0,)))


def _started(client: Celeriac, task_id: str) -> bool:
    replies = client.control.inspect(timeout=1.0).active() or {}
    return any(request["id"] == task_id for node in replies.values() for request in node)
