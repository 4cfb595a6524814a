"""The event stream of a real ``-E`` worker, watched by a receiver started before it.

Every task event must reach the receiver within a second of happening, the worker's
events must arrive in the order of their clocks, and a State fed with them must tell
each task's end and the worker's liveness, on the embedded SQLite broker, Redis and
RabbitMQ.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from celeriac import Celeriac, states
from celeriac.events import EventReceiver
from celeriac.events.state import State
from tests.e2e.conftest import Broker, WorkerProcess, wait_for

pytestmark = pytest.mark.timeout(90)

PROMPT = 1.0
"""Seconds within which every task event must reach the receiver."""


class EventLog:
    """Every event the receiver took in, in arrival order, captured on a thread."""

    def __init__(self, app: Celeriac) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.receiver = EventReceiver(app.transport, handlers={"*": self._add}, app=app)
        self._thread = threading.Thread(target=self._capture, daemon=True)
        self._thread.start()

    def _add(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(event)

    def _capture(self) -> None:
        self.receiver.capture(wakeup=False)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def of(self, type_: str, uuid: str | None = None) -> list[dict[str, Any]]:
        return [
            event
            for event in self.snapshot()
            if event["type"] == type_ and (uuid is None or event.get("uuid") == uuid)
        ]

    def wait_for(self, type_: str, uuid: str | None = None, timeout: float = 20.0) -> bool:
        return wait_for(lambda: bool(self.of(type_, uuid)), timeout=timeout)

    def close(self) -> None:
        self.receiver.should_stop = True
        self._thread.join(timeout=5)
        self.receiver.close()


@pytest.fixture
def monitor(broker: Broker) -> Iterator[Celeriac]:
    """An app of the test's own for the receiver, on the worker's broker."""
    app = Celeriac("monitor", broker=broker.url, set_as_current=False)
    app.conf.broker_transport_options = broker.options
    yield app
    app.close()


@pytest.fixture
def event_log(monitor: Celeriac) -> Iterator[EventLog]:
    log = EventLog(monitor)
    yield log
    log.close()


@pytest.fixture
def sender(broker: Broker) -> Iterator[Celeriac]:
    """The client: it sends the tasks, and a task-sent event for each."""
    app = Celeriac("sender", broker=broker.url, backend=broker.backend, set_as_current=False)
    app.conf.broker_transport_options = broker.options
    app.conf.task_send_sent_event = True
    yield app
    app.close()


def test_worker_event_stream_is_prompt_complete_ordered_and_builds_state(
    event_log: EventLog, sender: Celeriac, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker("-E", app="eventproj")
    hostname = "w0@e2e"
    assert event_log.wait_for("worker-online")

    succeeding = sender.send_task("eventproj.add", args=(2, 2)).id
    failing = sender.send_task("eventproj.boom", args=("bad thing",)).id
    retrying = sender.send_task("eventproj.flaky").id
    reporting = sender.send_task("eventproj.progress", args=(3,)).id
    rejected = sender.send_task("eventproj.refuse").id
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    expired = sender.send_task("eventproj.add", args=(1, 1), expires=past).id
    ends = [
        ("task-succeeded", succeeding),
        ("task-failed", failing),
        ("task-succeeded", retrying),
        ("task-succeeded", reporting),
        ("task-rejected", rejected),
        ("task-revoked", expired),
    ]
    for type_, uuid in ends:
        assert event_log.wait_for(type_, uuid), f"no {type_} for {uuid}:\n{worker.log()}"
    assert event_log.wait_for("worker-heartbeat")
    events = event_log.snapshot()

    seen = {event["type"] for event in events}
    assert {
        "task-sent",
        "task-received",
        "task-started",
        "task-succeeded",
        "task-failed",
        "task-retried",
        "task-rejected",
        "task-revoked",
        "task-progress",
        "worker-online",
        "worker-heartbeat",
    } <= seen
    worker_events = [event for event in events if event["hostname"] == hostname]
    late = [
        (event["type"], round(event["local_received"] - event["timestamp"], 3))
        for event in worker_events
        if event["local_received"] - event["timestamp"] >= PROMPT
    ]
    assert late == []
    main_process = [event for event in worker_events if event["pid"] == worker.pid]
    clocks = [event["clock"] for event in main_process]
    assert clocks == sorted(set(clocks)), "the worker's events arrived out of clock order"
    for uuid in (succeeding, failing):
        types = [event["type"] for event in main_process if event.get("uuid") == uuid]
        assert types[:2] == ["task-received", "task-started"]
    [sent] = event_log.of("task-sent", succeeding)
    assert (sent["name"], sent["args"], sent["queue"]) == ("eventproj.add", "(2, 2)", "celery")
    [received] = event_log.of("task-received", succeeding)
    assert (received["name"], received["args"], received["kwargs"]) == (
        "eventproj.add",
        "(2, 2)",
        "{}",
    )
    [succeeded] = event_log.of("task-succeeded", succeeding)
    assert succeeded["result"] == "4"
    assert isinstance(succeeded["runtime"], float)
    [failed] = event_log.of("task-failed", failing)
    assert failed["exception"] == "ValueError('bad thing')"
    assert "ValueError: bad thing" in failed["traceback"]
    [retried] = event_log.of("task-retried", retrying)
    assert retried["exception"] == "KeyError('again')"
    [progress] = event_log.of("task-progress", reporting)
    assert (progress["done"], progress["total"], progress["hostname"]) == (3, 3, hostname)
    [rejection] = event_log.of("task-rejected", rejected)
    assert rejection["requeue"] is False
    [revoked] = event_log.of("task-revoked", expired)
    assert (revoked["expired"], revoked["terminated"], revoked["signum"]) == (True, False, None)

    state = State()
    state.event(events)

    assert state.tasks[succeeding].state == states.SUCCESS
    assert state.tasks[succeeding].result == "4"
    assert state.tasks[failing].state == states.FAILURE
    assert state.tasks[failing].exception == "ValueError('bad thing')"
    assert state.tasks[retrying].state == states.SUCCESS
    assert state.tasks[expired].state == states.REVOKED
    assert state.tasks[succeeding].worker is state.workers[hostname]
    assert state.workers[hostname].alive
    assert [w.hostname for w in state.alive_workers()] == [hostname]

    assert worker.stop() == 0
    assert event_log.wait_for("worker-offline")
    state.event([event for event in event_log.snapshot()[len(events) :]])

    assert not state.workers[hostname].alive


def test_worker_without_offline_is_not_alive_after_its_heartbeats_expire(
    event_log: EventLog, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker("-E", app="eventproj")
    assert event_log.wait_for("worker-heartbeat")
    worker.process.kill()
    worker.process.wait(timeout=10)
    events = event_log.snapshot()
    last_heard = max(event["local_received"] for event in events if event["hostname"] == "w0@e2e")
    freq = events[-1]["freq"]
    now = last_heard
    state = State(now=lambda: now)

    state.event(events)
    alive_within_window = state.workers["w0@e2e"].alive
    now = last_heard + 2 * freq

    assert event_log.of("worker-offline") == []
    assert alive_within_window
    assert not state.workers["w0@e2e"].alive
