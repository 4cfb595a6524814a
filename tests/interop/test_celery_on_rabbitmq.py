"""Celery and celeriac on one RabbitMQ, both ways, results in Redis (wire protocol §0.4).

Each test runs for three pairs: a Celery client with a celeriac worker, a celeriac client
with a Celery worker, and Celery with Celery, the reference that shows what the other two
must match. Clients send by task name, as code that does not import the tasks does.
"""

from __future__ import annotations

import datetime
import importlib
import json
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
import redis

from tests.interop.conftest import InteropWorker, Servers

PAIRS = [("celery", "celeriac"), ("celeriac", "celery"), ("celery", "celery")]

pytestmark = pytest.mark.slow


@dataclass
class Pair:
    """A client app of one framework and a worker of the other (or the same)."""

    client: Any
    worker: InteropWorker
    exceptions: ModuleType

    def send(self, name: str, *args: Any, **options: Any) -> Any:
        options.setdefault("queue", self.worker.queue)
        return self.client.send_task(f"interop.{name}", args, **options)


@pytest.fixture(params=PAIRS, ids=lambda pair: f"{pair[0]}-client-{pair[1]}-worker")
def pair(request: pytest.FixtureRequest) -> Pair:
    client_side, worker_side = request.param
    client = request.getfixturevalue(f"{client_side}_client")
    worker = request.getfixturevalue(f"{worker_side}_worker")
    return Pair(client, worker, importlib.import_module(f"{client_side}.exceptions"))


def test_task_runs_and_the_client_reads_its_result(pair: Pair) -> None:
    result = pair.send("add", 2, 3)

    assert result.get(timeout=15) == 5
    assert result.state == "SUCCESS"


def test_failure_comes_back_as_the_same_exception_with_a_traceback(pair: Pair) -> None:
    result = pair.send("fail", "boom")

    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=15)
    assert result.state == "FAILURE"
    assert "ValueError: boom" in result.traceback


def test_the_worker_sees_the_request_the_client_sent(pair: Pair) -> None:
    result = pair.send("request_info", 1, "a", kwargs={"k": [1, 2]})

    info = result.get(timeout=15)
    assert info["id"] == result.id
    assert info["args"] == [1, "a"]
    assert info["kwargs"] == {"k": [1, 2]}
    assert info["retries"] == 0
    assert info["routing_key"] == pair.worker.queue
    assert info["correlation_id"] == result.id
    assert info["root_id"] == result.id
    assert info["parent_id"] is None


def test_countdown_delays_the_task_and_the_worker_sees_the_eta(pair: Pair) -> None:
    sent = datetime.datetime.now(datetime.UTC)
    result = pair.send("request_info", countdown=1.5)

    info = result.get(timeout=20)
    assert datetime.datetime.now(datetime.UTC) - sent >= datetime.timedelta(seconds=1.4)
    eta = datetime.datetime.fromisoformat(info["eta"])
    assert datetime.timedelta(seconds=1.4) <= eta - sent <= datetime.timedelta(seconds=2)


def test_expired_task_is_not_run_and_reads_as_revoked(pair: Pair) -> None:
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5)
    result = pair.send("add", 1, 1, expires=past)

    with pytest.raises(pair.exceptions.TaskRevokedError):
        result.get(timeout=15)
    assert result.state == "REVOKED"


def test_retry_publishes_the_task_again_with_the_retry_count(pair: Pair) -> None:
    result = pair.send("retry_once", "x")

    assert result.get(timeout=20) == ["x", 1]


def test_link_callback_runs_on_the_worker_with_the_parent_result(pair: Pair) -> None:
    callback = pair.client.signature("interop.add", args=(10,), queue=pair.worker.queue)
    callback_id = callback.freeze().id
    result = pair.send("add", 1, 2, link=callback)

    assert result.get(timeout=15) == 3
    assert pair.client.AsyncResult(callback_id).get(timeout=15) == 13


def test_both_workers_store_the_same_result_fields(
    servers: Servers,
    celery_client: Any,
    celery_worker: InteropWorker,
    celeriac_worker: InteropWorker,
) -> None:
    stored = {}
    for worker in (celery_worker, celeriac_worker):
        result = celery_client.send_task("interop.add", (4, 5), queue=worker.queue)
        assert result.get(timeout=15) == 9
        with redis.Redis.from_url(servers.backend) as client:
            raw = client.get(f"celery-task-meta-{result.id}")
        assert raw is not None
        stored[worker.side] = json.loads(raw)
    celery_meta, celeriac_meta = stored["celery"], stored["celeriac"]

    assert list(celeriac_meta) == list(celery_meta)
    for key in ("status", "result", "traceback", "children", "name", "args", "kwargs", "retries"):
        assert celeriac_meta[key] == celery_meta[key], key
    assert celeriac_meta["queue"] == celeriac_worker.queue
    assert celeriac_meta["worker"] == celeriac_worker.hostname
    assert (
        time.time() - datetime.datetime.fromisoformat(celeriac_meta["date_done"]).timestamp() < 60
    )
