"""EventReceiver over real transports: list and single bodies, clock, handlers, filtering."""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from celeriac.entity import topic_matches
from celeriac.events import EventDispatcher, EventReceiver, LamportClock
from celeriac.messaging import Producer
from celeriac.protocol.event import utcoffset
from celeriac.serialization import loads
from celeriac.transports.base import Transport


@pytest.fixture
def received() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def receiver(transport: Transport, received: list[dict[str, Any]]) -> Iterator[EventReceiver]:
    with EventReceiver(transport, handlers={"*": received.append}) as opened:
        yield opened


def publish_event(transport: Transport, body: Any, routing_key: str) -> None:
    Producer(transport).publish(body, routing_key=routing_key, exchange="celeryev")


def test_capture_handles_list_bodies_and_single_events(
    transport: Transport, receiver: EventReceiver, received: list[dict[str, Any]]
) -> None:
    dispatcher = EventDispatcher(transport, buffer_group=["task"], buffer_limit=3)
    dispatcher.send("worker-online")
    for kind in ("received", "started", "succeeded"):
        dispatcher.send(f"task-{kind}", uuid="a")
    dispatcher.send("worker-offline")

    receiver.capture(limit=3, timeout=5)

    assert [event["type"] for event in received] == [
        "worker-online",
        "task-received",
        "task-started",
        "task-succeeded",
        "worker-offline",
    ]
    assert all("local_received" in event for event in received)


def test_itercapture_yields_the_events_of_each_message(
    transport: Transport, receiver: EventReceiver
) -> None:
    dispatcher = EventDispatcher(transport, buffer_group=["task"])
    dispatcher.send("task-received", uuid="a")
    dispatcher.send("task-started", uuid="a")
    dispatcher.flush()

    [events] = list(receiver.itercapture(limit=1, timeout=5))

    assert [event["type"] for event in events] == ["task-received", "task-started"]


def test_received_clock_adjusts_local_clock(
    transport: Transport, receiver: EventReceiver, received: list[dict[str, Any]]
) -> None:
    publish_event(transport, {"type": "worker-online", "clock": 41}, "worker.online")

    receiver.capture(limit=1, timeout=5)

    assert receiver.clock.value == 42
    assert received[0]["clock"] == 41


def test_task_sent_clock_is_replaced_by_local_clock_minus_one(
    transport: Transport, received: list[dict[str, Any]]
) -> None:
    app = MiniApp(transport, clock=LamportClock(initial_value=10))
    with EventReceiver(transport, handlers={"*": received.append}, app=app) as receiver:
        publish_event(transport, {"type": "task-sent", "clock": 999, "uuid": "a"}, "task.sent")

        receiver.capture(limit=1, timeout=5)

    assert received[0]["clock"] == 9
    assert app.clock.value == 11


def test_event_without_clock_gets_the_next_local_tick(
    transport: Transport, receiver: EventReceiver, received: list[dict[str, Any]]
) -> None:
    publish_event(transport, {"type": "worker-online"}, "worker.online")

    receiver.capture(limit=1, timeout=5)

    assert received[0]["clock"] == 1


def test_timestamp_is_shifted_by_the_senders_utc_offset(
    transport: Transport, receiver: EventReceiver, received: list[dict[str, Any]]
) -> None:
    event = {"type": "worker-online", "timestamp": 1000000.0, "utcoffset": utcoffset() + 2}
    publish_event(transport, event, "worker.online")

    receiver.capture(limit=1, timeout=5)

    assert received[0]["timestamp"] == pytest.approx(1000000.0 - 2 * 3600)


def test_handlers_by_type_take_precedence_over_catch_all(transport: Transport) -> None:
    by_type: list[str] = []
    catch_all: list[str] = []
    handlers = {
        "worker-online": lambda event: by_type.append(event["type"]),
        "*": lambda event: catch_all.append(event["type"]),
    }
    with EventReceiver(transport, handlers=handlers) as receiver:
        dispatcher = EventDispatcher(transport)
        dispatcher.send("worker-online")
        dispatcher.send("task-started", uuid="a")

        receiver.capture(limit=2, timeout=5)

    assert by_type == ["worker-online"]
    assert catch_all == ["task-started"]


def test_routing_key_pattern_filters_events(
    transport: Transport, received: list[dict[str, Any]]
) -> None:
    with EventReceiver(transport, handlers={"*": received.append}, routing_key="worker.#") as recv:
        dispatcher = EventDispatcher(transport)
        dispatcher.send("task-started", uuid="a")
        dispatcher.send("worker-heartbeat")

        recv.capture(limit=1, timeout=5)

    assert [event["type"] for event in received] == ["worker-heartbeat"]


@pytest.mark.parametrize(
    ("pattern", "routing_key", "matches"),
    [
        ("#", "task.multi", True),
        ("#", "", True),
        ("worker.#", "worker.heartbeat", True),
        ("worker.#", "worker", True),
        ("worker.#", "task.started", False),
        ("task.*", "task.started", True),
        ("task.*", "task.started.extra", False),
        ("*.multi", "task.multi", True),
        ("#.multi", "a.b.multi", True),
        ("task.sent", "task.sent", True),
        ("task.sent", "task.started", False),
    ],
)
def test_topic_patterns_follow_amqp_rules(pattern: str, routing_key: str, matches: bool) -> None:
    assert topic_matches(pattern, routing_key) is matches


def test_capture_times_out_when_nothing_comes(receiver: EventReceiver) -> None:
    started = time.monotonic()

    with pytest.raises(builtins.TimeoutError):
        receiver.capture(timeout=0.2)

    assert time.monotonic() - started < 2


def test_should_stop_set_by_a_handler_ends_capture(transport: Transport) -> None:
    handled: list[str] = []
    with EventReceiver(transport) as stopping_receiver:

        def stop(event: dict[str, Any]) -> None:
            handled.append(event["type"])
            stopping_receiver.should_stop = True

        stopping_receiver.handlers["*"] = stop
        EventDispatcher(transport).send("worker-online")
        EventDispatcher(transport).send("worker-offline")

        stopping_receiver.capture(timeout=5)

    assert handled == ["worker-online"]


def test_undecodable_messages_are_dropped_and_capture_goes_on(
    transport: Transport,
    receiver: EventReceiver,
    received: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer = Producer(transport)
    producer.publish(
        b"{not json", routing_key="x.y", exchange="celeryev", content_type="application/json"
    )
    producer.publish({"no": "type"}, routing_key="x.y", exchange="celeryev")
    producer.publish(
        {"type": "worker-online"},
        routing_key="worker.online",
        exchange="celeryev",
        serializer="pickle",
    )
    publish_event(transport, {"type": "worker-offline"}, "worker.offline")

    with caplog.at_level(logging.WARNING, logger="celeriac.events.receiver"):
        receiver.capture(limit=4, timeout=5)

    assert [event["type"] for event in received] == ["worker-offline"]
    assert len(caplog.records) == 3


def test_compressed_events_are_decompressed(
    transport: Transport, receiver: EventReceiver, received: list[dict[str, Any]]
) -> None:
    Producer(transport).publish(
        {"type": "worker-online"},
        routing_key="worker.online",
        exchange="celeryev",
        compression="zlib",
    )

    receiver.capture(limit=1, timeout=5)

    assert received[0]["type"] == "worker-online"


def test_a_compression_bomb_is_dropped_at_the_size_limit_and_capture_goes_on(
    transport: Transport, received: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    app = MiniApp(transport, conf=EventsConf(worker_max_message_size=1024 * 1024))
    padding = " " * (8 * 1024 * 1024)
    with EventReceiver(transport, handlers={"*": received.append}, app=app) as receiver:
        producer = Producer(transport)
        for body in ({"type": "worker-online", "pad": padding}, {"type": "worker-offline"}):
            producer.publish(body, routing_key="w.x", exchange="celeryev", compression="zlib")

        with caplog.at_level(logging.WARNING, logger="celeriac.events.receiver"):
            receiver.capture(limit=2, timeout=5)

    assert [event["type"] for event in received] == ["worker-offline"]
    assert "expands past the limit of 1048576 bytes" in caplog.text


def test_wakeup_broadcasts_heartbeat_through_the_apps_control(transport: Transport) -> None:
    pidbox = transport.subscribe("celery.pidbox")
    app = MiniApp(transport, control=PidboxControl())

    with EventReceiver(transport, app=app) as receiver:
        EventDispatcher(transport).send("worker-online")
        receiver.capture(limit=1, timeout=5)

    [request] = pidbox.get(5)
    pidbox.close()
    assert loads(request.body, request.content_type, request.content_encoding) == {
        "method": "heartbeat",
        "arguments": {},
    }


def test_wakeup_sends_nothing_without_a_control_client(
    transport: Transport, receiver: EventReceiver
) -> None:
    pidbox = transport.subscribe("celery.pidbox")

    receiver.wakeup_workers()

    assert pidbox.get(0.1) == []
    pidbox.close()


@dataclass
class EventsConf:
    event_serializer: str = "json"
    worker_max_message_size: int | None = 64 * 1024 * 1024


@dataclass
class PidboxControl:
    """The smallest remote-control client: broadcast a command on the pidbox channel."""

    def broadcast(self, command: str, *, connection: Transport | None = None) -> None:
        assert connection is not None
        Producer(connection).publish({"method": command, "arguments": {}}, exchange="celery.pidbox")


@dataclass
class MiniApp:
    """What the receiver reads from an app (the EventsApp protocol), nothing more."""

    transport: Transport
    clock: LamportClock = field(default_factory=LamportClock)
    conf: EventsConf = field(default_factory=EventsConf)
    control: PidboxControl | None = None
