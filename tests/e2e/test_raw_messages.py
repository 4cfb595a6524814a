"""Hand-built messages put straight on a real worker's queue.

Each bad message, the hostile inputs of ``tests/e2e/hostile.py`` among them, gets the
signal Celery sends for it, a clear reason on the dead-letter queue and, when its task id
can be read, a FAILURE result; a good task sent after each still runs, and the worker keeps
running. The seed's ``celeryd_after_setup`` example (a direct queue per worker) runs as
written.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from typing import Any

import pytest

from celeriac import Celeriac, states
from celeriac.exceptions import DecodeError, InvalidTaskError
from tests.e2e.conftest import Broker, WorkerProcess, wait_for
from tests.e2e.hostile import (
    HostileMessage,
    dead_letter_reasons,
    hostile_messages,
    json_body,
    refuse_then_run_a_good_task,
)

pytestmark = pytest.mark.slow
StartWorker = Callable[..., WorkerProcess]


def task_headers(task_id: str, **extra: Any) -> dict[str, Any]:
    return {"lang": "py", "task": "sigproj.add", "id": task_id, "root_id": task_id, **extra}


RAW_MESSAGES = [
    HostileMessage(
        "kwargs-not-a-mapping",
        b'[[1], ["y", 2], {}]',
        task_headers("kwargs-list"),
        "task_internal_error",
        "kwargs is not a mapping",
    ),
    HostileMessage(
        "body-of-two-parts",
        b"[[1, 2], {}]",
        task_headers("two-parts"),
        "task_internal_error",
        "InvalidTaskError",
    ),
    HostileMessage(
        "task-without-task-header",
        json_body([1, 2]),
        {"id": "no-task-header"},
        "task_rejected",
        "no 'task' header",
    ),
    # The 100 MB body takes some 20 s through the SQLite broker alone (stored, leased and
    # dead-lettered as base64 JSON): the fault battery sends it (test_hostile_inputs.py).
    *hostile_messages("sigproj.add", "raw", huge=False),
]


@pytest.mark.timeout(120)
def test_each_raw_message_gets_celerys_signal_and_a_good_task_still_runs(
    start_worker: StartWorker, client: Celeriac, broker: Broker
) -> None:
    is_rabbitmq = broker.url.startswith("amqp")
    messages = [m for m in RAW_MESSAGES if m.reaches_rabbitmq or not is_rabbitmq]
    worker = start_worker()

    def sent(signal: str) -> int:
        return sum(record["signal"] == signal for record in worker.signals())

    for count, message in enumerate(messages, start=1):
        refuse_then_run_a_good_task(client, message, count, sent, "sigproj.add")

    reasons = dead_letter_reasons(client, len(messages))
    for message in messages:
        assert any(message.reason in reason for reason in reasons), (message.name, reasons)
        assert (message.logged or message.reason) in worker.log(), message.name
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
