"""Hand-built messages injected through ``app.producer_or_acquire()`` reach a real worker.

Each bad message gets the signal Celery sends for it, a clear reason on the dead-letter
queue and, when it names a known task, a FAILURE result; the worker keeps running. The
seed's ``celeryd_after_setup`` example (a direct queue per worker) runs as written.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from typing import Any

import pytest

from celeriac import Celeriac, states
from celeriac.exceptions import DecodeError, InvalidTaskError
from celeriac.transports.base import DEAD_LETTER_REASON_HEADER, dead_letter_queue
from tests.e2e.conftest import WorkerProcess, wait_for

pytestmark = pytest.mark.slow
StartWorker = Callable[..., WorkerProcess]


def task_headers(task_id: str, **extra: Any) -> dict[str, Any]:
    return {"lang": "py", "task": "sigproj.add", "id": task_id, "root_id": task_id, **extra}


RAW_MESSAGES = [
    pytest.param(
        {"hello": "not a task"},
        None,
        {},
        "task_rejected",
        "not a protocol 1 task",
        id="body-that-is-not-a-task",
    ),
    pytest.param(
        [[1, 2], {}, {}],
        None,
        {"id": "no-task-header"},
        "task_rejected",
        "no 'task' header",
        id="task-without-task-header",
    ),
    pytest.param(
        [[1, 2], {}, {}],
        None,
        {"lang": "py", "task": "sigproj.nobody_has_it", "id": "unknown-1"},
        "task_unknown",
        "NotRegistered",
        id="unknown-task",
    ),
    pytest.param(
        [[1], ["y", 2], {}],
        None,
        task_headers("kwargs-list"),
        "task_internal_error",
        "kwargs is not a mapping",
        id="kwargs-not-a-mapping",
    ),
    pytest.param(
        [[1, 2], {}],
        None,
        task_headers("two-parts"),
        "task_internal_error",
        "InvalidTaskError",
        id="body-of-two-parts",
    ),
    pytest.param(
        b"{not json",
        "application/json",
        task_headers("not-json"),
        "task_internal_error",
        "DecodeError",
        id="body-not-decodable",
    ),
    pytest.param(
        b"\x80\x04K\x01.",
        "application/x-python-serialize",
        task_headers("pickled"),
        "task_rejected",
        "ContentDisallowed",
        id="disallowed-content-type",
    ),
]


@pytest.mark.parametrize(("body", "content_type", "headers", "signal", "reason"), RAW_MESSAGES)
def test_raw_message_gets_celerys_signal_and_the_worker_goes_on(
    start_worker: StartWorker,
    client: Celeriac,
    body: Any,
    content_type: str | None,
    headers: dict[str, Any],
    signal: str,
    reason: str,
) -> None:
    worker = start_worker()

    with client.producer_or_acquire() as producer:
        producer.publish(
            body,
            routing_key="celery",
            headers=headers,
            content_type=content_type,
            content_encoding="binary" if content_type else None,
        )

    assert client.send_task("sigproj.add", (20, 22)).get(timeout=10) == 42
    dead_letters = dead_letter_queue("celery")
    assert wait_for(lambda: client.transport.queue_size(dead_letters) == 1)
    [dead] = client.transport.fetch([dead_letters], 1, 1.0)
    assert reason in dead.envelope.headers[DEAD_LETTER_REASON_HEADER]
    assert wait_for(lambda: any(r["signal"] == signal for r in worker.signals()))
    assert worker.process.poll() is None


@pytest.mark.parametrize(
    ("task_id", "body", "error"),
    [
        ("kwargs-list", [[1], ["y", 2], {}], InvalidTaskError),
        ("not-json", b"{not json", DecodeError),
    ],
)
def test_a_known_task_that_cannot_run_fails_its_result(
    start_worker: StartWorker,
    client: Celeriac,
    task_id: str,
    body: Any,
    error: type[Exception],
) -> None:
    start_worker()
    raw = isinstance(body, bytes)
    with client.producer_or_acquire() as producer:
        producer.publish(
            body,
            routing_key="celery",
            headers=task_headers(task_id),
            content_type="application/json" if raw else None,
            content_encoding="utf-8" if raw else None,
        )

    result = client.AsyncResult(task_id)
    with pytest.raises(error):
        result.get(timeout=10)
    assert result.state == states.FAILURE


def test_seed_direct_queue_example_routes_to_that_worker(
    start_worker: StartWorker, client: Celeriac
) -> None:
    first = start_worker(pool="threads")
    second = start_worker(pool="threads")

    results = [
        client.send_task("sigproj.add", (index, 1), queue=f"{node}.dq")
        for index, node in enumerate(["w0@e2e", "w1@e2e", "w0@e2e"])
    ]

    assert [result.get(timeout=10) for result in results] == [1, 2, 3]

    # Thread-pool workers run tasks in their own process: task_postrun's pid is the worker's.
    # task_postrun comes just after the result is stored, so it may lag get() a little.
    def ran_in() -> dict[str, int]:
        return {r["task_id"]: r["pid"] for r in first.signals() if r["signal"] == "task_postrun"}

    assert wait_for(lambda: all(result.id in ran_in() for result in results))
    assert [ran_in()[result.id] for result in results] == [first.pid, second.pid, first.pid]


def test_message_that_arrives_before_its_eta_waits_in_the_broker(
    start_worker: StartWorker, client: Celeriac
) -> None:
    """Celery senders deliver eta tasks at once; the worker must put them back, delayed."""
    worker = start_worker(pool="threads")
    sent = time.time()
    eta = datetime.datetime.fromtimestamp(sent + 1.5, datetime.UTC).isoformat()
    with client.producer_or_acquire() as producer:
        producer.publish(
            [[2, 3], {}, {}], routing_key="celery", headers=task_headers("early", eta=eta)
        )

    assert client.AsyncResult("early").get(timeout=15) == 5
    assert time.time() - sent >= 1.4
    received = [r for r in worker.signals() if r["signal"] == "task_received"]
    assert len(received) == 1
