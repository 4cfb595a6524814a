"""Heart on real transports: online/heartbeat/offline, heartbeat_sent, prompt task-event batches."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import signals
from celeriac.events import EventDispatcher
from celeriac.transports.base import Subscription, Transport
from celeriac.worker.heartbeat import Heart


@pytest.fixture
def events(transport: Transport) -> Iterator[Subscription]:
    subscription = transport.subscribe("celeryev")
    yield subscription
    subscription.close()


def read_events(subscription: Subscription, count: int, timeout: float = 5.0) -> list[Any]:
    """Read until ``count`` events came (a batch counts each), with their arrival times."""
    received: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(received) < count and time.monotonic() < deadline:
        for envelope in subscription.get(0.02):
            body = json.loads(envelope.body)
            arrived = time.time()
            for event in body if isinstance(body, list) else [body]:
                received.append((event, arrived))
    return received


@pytest.fixture
def heart_parts(transport: Transport) -> Iterator[tuple[EventDispatcher, list[Heart]]]:
    """A worker-like dispatcher whose batches tell the heart, and the hearts to stop."""
    hearts: list[Heart] = []

    def buffered() -> None:
        for heart in hearts:
            heart.flush_soon()

    dispatcher = EventDispatcher(
        transport, hostname="w1@e2e", buffer_group=["task"], on_send_buffered=buffered
    )
    yield dispatcher, hearts
    for heart in hearts:
        heart.stop()
    dispatcher.close()


def test_batched_task_events_are_sent_within_the_flush_delay(
    heart_parts: tuple[EventDispatcher, list[Heart]], events: Subscription
) -> None:
    dispatcher, hearts = heart_parts
    heart = Heart(dispatcher, lambda: (0, 0), interval=60.0, flush_delay=0.05)
    hearts.append(heart)
    heart.start()
    read_events(events, 1)

    dispatcher.send("task-received", uuid="a")
    dispatcher.send("task-started", uuid="a")
    received = read_events(events, 2, timeout=2.0)

    assert [event["type"] for event, _ in received] == ["task-received", "task-started"]
    assert all(arrived - event["timestamp"] < 0.5 for event, arrived in received)


def test_heartbeats_carry_freq_and_counters_and_fire_heartbeat_sent(
    heart_parts: tuple[EventDispatcher, list[Heart]], events: Subscription
) -> None:
    dispatcher, hearts = heart_parts
    sent: list[object] = []

    def on_heartbeat_sent(sender: object = None, **kwargs: Any) -> None:
        sent.append(sender)

    signals.heartbeat_sent.connect(on_heartbeat_sent)
    heart = Heart(dispatcher, lambda: (1, 5), interval=0.2, flush_delay=0.05)
    hearts.append(heart)
    try:
        heart.start()
        received = read_events(events, 3, timeout=3.0)
        # The signal fires once the send returned, which may be after the event arrived.
        deadline = time.monotonic() + 3.0
        while len(sent) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        signals.heartbeat_sent.disconnect(on_heartbeat_sent)

    types = [event["type"] for event, _ in received[:3]]
    assert types == ["worker-online", "worker-heartbeat", "worker-heartbeat"]
    heartbeat = received[1][0]
    assert (heartbeat["freq"], heartbeat["active"], heartbeat["processed"]) == (0.2, 1, 5)
    assert {"loadavg", "sw_ident", "sw_ver", "sw_sys"} <= heartbeat.keys()
    assert len(sent) >= 3
    assert all(sender is heart for sender in sent)


def test_stop_sends_waiting_task_events_then_offline_in_clock_order(
    heart_parts: tuple[EventDispatcher, list[Heart]], events: Subscription
) -> None:
    dispatcher, _ = heart_parts
    heart = Heart(dispatcher, lambda: (0, 1), interval=60.0, flush_delay=30.0)
    heart.start()
    dispatcher.send("task-succeeded", uuid="a", result="4", runtime=0.01)

    heart.stop()

    received = read_events(events, 3)
    assert [event["type"] for event, _ in received] == [
        "worker-online",
        "task-succeeded",
        "worker-offline",
    ]
    clocks = [event["clock"] for event, _ in received]
    assert clocks == sorted(clocks)
