"""Remote control of real worker processes through ``app.control``, on every broker."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from celeriac import Celeriac, group, states
from celeriac.exceptions import TaskRevokedError
from tests.e2e.conftest import WorkerProcess, wait_for

pytestmark = pytest.mark.slow
StartWorker = Callable[..., WorkerProcess]
NODE = "w0@e2e"


def test_inspect_replies_in_celery_shapes(start_worker: StartWorker, client: Celeriac) -> None:
    start_worker(concurrency=1)
    running = client.send_task("sigproj.slow", (4.0,))
    waiting = client.send_task("sigproj.add", (1, 2))
    inspect = client.control.inspect(timeout=2.0, limit=1)
    assert wait_for(lambda: bool((inspect.active() or {}).get(NODE)), timeout=10)
    assert wait_for(lambda: bool((inspect.reserved() or {}).get(NODE)), timeout=10)

    active = inspect.active()
    reserved = inspect.reserved()
    stats = inspect.stats()
    queues = inspect.active_queues()
    where = inspect.query_task(running.id, waiting.id)

    assert client.control.ping(timeout=2.0) == [{NODE: {"ok": "pong"}}]
    assert [request["id"] for request in active[NODE]] == [running.id]
    assert active[NODE][0]["name"] == "sigproj.slow"
    assert active[NODE][0]["acknowledged"] is True
    assert [request["id"] for request in reserved[NODE]] == [waiting.id]
    assert inspect.scheduled() == {NODE: []}
    assert "sigproj.add" in inspect.registered()[NODE]
    assert all(not name.startswith("celery.") for name in inspect.registered()[NODE])
    assert inspect.revoked() == {NODE: []}
    node_stats = stats[NODE]
    assert node_stats["pool"]["max-concurrency"] == 1
    assert len(node_stats["pool"]["processes"]) == 1
    assert node_stats["pid"] > 0
    assert isinstance(node_stats["clock"], str)
    assert {"utime", "stime", "maxrss"} <= node_stats["rusage"].keys()
    assert node_stats["prefetch_count"] >= 1
    assert "password" not in str(node_stats["broker"])
    # sigproj adds a direct queue of the node's own, as the seed example does.
    assert [queue["name"] for queue in queues[NODE]] == ["celery", f"{NODE}.dq"]
    assert where[NODE][running.id][0] == "active"
    assert where[NODE][waiting.id][0] == "reserved"
    assert isinstance(inspect.clock()[NODE]["clock"], int)
    assert "broker" in inspect.report()[NODE]["ok"]
    assert isinstance(inspect.conf()[NODE], dict)
    assert running.get(timeout=15) == 4.0


def test_destination_limit_and_timeout_work_as_in_celery(
    start_worker: StartWorker, client: Celeriac
) -> None:
    start_worker(concurrency=1)

    started = time.monotonic()
    limited = client.control.ping(timeout=5.0, limit=1)
    limited_took = time.monotonic() - started
    started = time.monotonic()
    nobody = client.control.inspect(destination=["nobody@nowhere"], timeout=0.5).ping()
    nobody_took = time.monotonic() - started
    single = client.control.inspect(destination=NODE, timeout=5.0).ping()

    assert limited == [{NODE: {"ok": "pong"}}]
    assert limited_took < 2.0
    assert nobody is None
    assert 0.45 <= nobody_took < 2.0
    assert single == {"ok": "pong"}


def test_revoked_waiting_task_never_runs(start_worker: StartWorker, client: Celeriac) -> None:
    start_worker(concurrency=1)
    blocker = client.send_task("sigproj.slow", (2.0,))
    victim = client.send_task("sigproj.add", (40, 2))

    client.control.revoke(victim.id)
    blocker.get(timeout=15)

    with pytest.raises(TaskRevokedError):
        victim.get(timeout=10)
    assert victim.state == states.REVOKED
    assert client.control.inspect(timeout=2.0, limit=1).revoked() == {NODE: [victim.id]}


def test_revoke_with_terminate_ends_a_running_prefork_task(
    start_worker: StartWorker, client: Celeriac
) -> None:
    worker = start_worker(concurrency=1)
    running = client.send_task("sigproj.slow", (60.0,))
    inspect = client.control.inspect(timeout=2.0, limit=1)
    assert wait_for(lambda: bool((inspect.active() or {}).get(NODE)), timeout=10)

    replies = client.control.terminate(running.id, signal="SIGTERM", reply=True, timeout=2.0)
    started = time.monotonic()
    with pytest.raises(TaskRevokedError, match="terminated"):
        running.get(timeout=10)
    after = client.send_task("sigproj.add", (1, 1))

    assert replies == [{NODE: {"ok": f"terminate: {running.id}"}}]
    assert time.monotonic() - started < 5
    assert after.get(timeout=10) == 2
    assert any(
        record["signal"] == "task_revoked" and record["task_id"] == running.id
        for record in worker.signals()
    )


def test_rate_limit_at_run_time_spaces_the_tasks_out(
    start_worker: StartWorker, client: Celeriac
) -> None:
    start_worker(concurrency=2)
    replies = client.control.rate_limit("sigproj.add", "4/s", reply=True, timeout=2.0)
    unknown = client.control.rate_limit("no.such.task", "1/s", reply=True, timeout=2.0)

    started = time.monotonic()
    limited = [client.send_task("sigproj.add", (n, n)) for n in range(9)]
    assert [result.get(timeout=20) for result in limited] == [2 * n for n in range(9)]
    limited_took = time.monotonic() - started
    client.control.rate_limit("sigproj.add", None, reply=True, timeout=2.0)
    started = time.monotonic()
    free = [client.send_task("sigproj.add", (n, 1)) for n in range(9)]
    assert [result.get(timeout=20) for result in free] == [n + 1 for n in range(9)]
    free_took = time.monotonic() - started

    assert replies == [{NODE: {"ok": "new rate limit set successfully"}}]
    assert unknown == [{NODE: {"error": "unknown task"}}]
    assert limited_took >= 1.9
    assert free_took < limited_took


def test_pool_grow_and_shrink_change_the_pool(start_worker: StartWorker, client: Celeriac) -> None:
    start_worker(concurrency=1)
    inspect = client.control.inspect(destination=NODE, timeout=2.0, limit=1)

    grown = client.control.pool_grow(2, reply=True, timeout=2.0)
    assert wait_for(lambda: len(inspect.stats()["pool"]["processes"]) == 3, timeout=10)
    size_after_grow = inspect.stats()["pool"]["max-concurrency"]
    parallel = [client.send_task("sigproj.slow", (1.0,)) for _ in range(3)]
    started = time.monotonic()
    [result.get(timeout=10) for result in parallel]
    parallel_took = time.monotonic() - started
    shrunk = client.control.pool_shrink(1, reply=True, timeout=2.0)
    assert wait_for(lambda: len(inspect.stats()["pool"]["processes"]) == 2, timeout=10)

    assert grown == [{NODE: {"ok": "pool will grow"}}]
    assert shrunk == [{NODE: {"ok": "pool will shrink"}}]
    assert size_after_grow == 3
    assert inspect.stats()["pool"]["max-concurrency"] == 2
    assert parallel_took < 2.5


def test_add_consumer_and_cancel_consumer(start_worker: StartWorker, client: Celeriac) -> None:
    start_worker(concurrency=1)
    inspect = client.control.inspect(destination=NODE, timeout=2.0, limit=1)

    added = client.control.add_consumer("extra", reply=True, timeout=2.0)
    on_extra = client.send_task("sigproj.add", (20, 1), queue="extra")
    value = on_extra.get(timeout=10)
    names_with_extra = [queue["name"] for queue in inspect.active_queues()]
    cancelled = client.control.cancel_consumer("extra", reply=True, timeout=2.0)
    names_after = [queue["name"] for queue in inspect.active_queues()]
    ignored = client.send_task("sigproj.add", (1, 1), queue="extra")
    time.sleep(1.0)

    assert added == [{NODE: {"ok": "add consumer extra"}}]
    assert value == 21
    assert names_with_extra == ["celery", f"{NODE}.dq", "extra"]
    assert cancelled == [{NODE: {"ok": "no longer consuming from extra"}}]
    assert names_after == ["celery", f"{NODE}.dq"]
    assert ignored.state == states.PENDING
    client.transport.purge("extra")


def test_events_heartbeat_time_limit_and_autoscale_replies(
    start_worker: StartWorker, client: Celeriac
) -> None:
    start_worker(concurrency=1)
    control = client.control

    def ask(command: str, **arguments: object) -> object:
        return control.broadcast(command, arguments=arguments, reply=True, timeout=2.0)

    assert ask("enable_events") == [{NODE: {"ok": "task events enabled"}}]
    assert ask("enable_events") == [{NODE: {"ok": "task events already enabled"}}]
    assert ask("disable_events") == [{NODE: {"ok": "task events disabled"}}]
    assert ask("heartbeat") == [{NODE: None}]
    assert ask("time_limit", task_name="sigproj.slow", soft=0.5, hard=5.0) == [
        {NODE: {"ok": "time limits set successfully"}}
    ]
    assert ask("autoscale", max=3, min=1) == [
        {NODE: {"error": "ValueError('Autoscale not enabled')"}}
    ]
    assert ask("no_such_command") == [{NODE: {"error": "KeyError('no_such_command')"}}]
    with pytest.raises(Exception, match="SoftTimeLimitExceeded"):
        client.send_task("sigproj.slow", (3.0,)).get(timeout=10)


def test_shutdown_stops_the_worker_with_exit_code_0(
    start_worker: StartWorker, client: Celeriac
) -> None:
    worker = start_worker(concurrency=1)

    replies = client.control.shutdown(reply=True, timeout=1.0)
    exitcode = worker.process.wait(timeout=20)

    assert replies == []
    assert exitcode == 0


def test_custom_commands_registered_with_celery_decorators(
    start_worker: StartWorker, client: Celeriac
) -> None:
    start_worker(concurrency=1)

    replies = client.control.broadcast("sigproj_pid", reply=True, timeout=2.0)
    inspected = client.control.inspect(timeout=2.0, limit=1)._request("sigproj_queue_count")

    assert replies is not None
    [(node, reply)] = replies[0].items()
    assert node == NODE
    assert reply["pid"] != os.getpid()
    assert inspected == {NODE: {"queues": 2}}


def test_async_result_and_group_result_revoke(start_worker: StartWorker, client: Celeriac) -> None:
    start_worker(concurrency=1)
    blocker = client.send_task("sigproj.slow", (5.0,))
    single = client.send_task("sigproj.add", (1, 1))
    members = group(client.signature("sigproj.add", (n, n)) for n in range(2)).apply_async()

    members.revoke()
    replies = single.revoke(wait=True, timeout=2.0)
    blocker.get(timeout=15)

    assert replies == [{NODE: {"ok": f"tasks {{{single.id!r}}} flagged as revoked"}}]
    for result in [single, *members.results]:
        with pytest.raises(TaskRevokedError):
            result.get(timeout=10)
