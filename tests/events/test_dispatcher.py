"""EventDispatcher (seed 003) on real transports: wire fields, groups, batches, offline buffer."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from celeriac.events import EventDispatcher, LamportClock, anon_nodename
from celeriac.messaging import Producer
from celeriac.protocol.envelope import Envelope
from celeriac.protocol.event import utcoffset
from celeriac.serialization import loads
from celeriac.transports import connect
from celeriac.transports.base import (
    Subscription,
    Transport,
    TransportError,
)
from tests.faults.switchable import SwitchableTransport


@dataclass
class EventsConf:
    event_serializer: str = "json"
    worker_max_message_size: int | None = None


@dataclass
class MiniApp:
    """What the dispatcher reads from an app (the EventsApp protocol), nothing more."""

    transport: Transport
    clock: LamportClock = field(default_factory=LamportClock)
    conf: EventsConf = field(default_factory=EventsConf)


@pytest.fixture
def events(transport: Transport) -> Iterator[Subscription]:
    subscription = transport.subscribe("celeryev")
    yield subscription
    subscription.close()


def collect(subscription: Subscription, count: int, timeout: float = 5.0) -> list[Envelope]:
    """Read until ``count`` envelopes arrived (or the timeout passed)."""
    received: list[Envelope] = []
    deadline = time.monotonic() + timeout
    while len(received) < count and time.monotonic() < deadline:
        received.extend(subscription.get(0.1))
    return received


def body_of(envelope: Envelope) -> object:
    return loads(envelope.body, envelope.content_type, envelope.content_encoding)


def routing_key_of(envelope: Envelope) -> str:
    return str(envelope.properties["delivery_info"]["routing_key"])


def test_send_broadcasts_event_with_wire_fields(transport: Transport, events: Subscription) -> None:
    dispatcher = EventDispatcher(transport, hostname="w1@vm")
    before = time.time()

    dispatcher.send("worker-online", freq=2.0, active=0)

    [envelope] = collect(events, 1)
    event = json.loads(envelope.body)
    assert set(event) == {
        "type",
        "hostname",
        "utcoffset",
        "pid",
        "clock",
        "timestamp",
        "freq",
        "active",
    }
    assert event["type"] == "worker-online"
    assert event["hostname"] == "w1@vm"
    assert event["utcoffset"] == utcoffset()
    assert event["pid"] == os.getpid()
    assert event["clock"] == 1
    assert before <= event["timestamp"] <= time.time()
    assert (event["freq"], event["active"]) == (2.0, 0)
    assert envelope.headers == {"hostname": "w1@vm"}
    assert envelope.content_type == "application/json"
    assert envelope.properties["delivery_mode"] == 1
    assert (
        envelope.properties["delivery_info"].items()
        >= {"exchange": "celeryev", "routing_key": "worker.online"}.items()
    )


def test_hostname_defaults_to_anonymous_nodename(transport: Transport) -> None:
    dispatcher = EventDispatcher(transport)

    assert dispatcher.hostname == anon_nodename()
    assert anon_nodename() == f"gen{os.getpid()}@{socket.gethostname()}"


def test_send_ignores_groups_not_listed(transport: Transport, events: Subscription) -> None:
    dispatcher = EventDispatcher(transport, groups=["worker"])

    dispatcher.send("task-received", uuid="t1")
    dispatcher.send("worker-heartbeat", freq=2.0)

    received = collect(events, 1)
    received.extend(events.get(0.1))
    assert [routing_key_of(envelope) for envelope in received] == ["worker.heartbeat"]


def test_disabled_dispatcher_sends_nothing(transport: Transport, events: Subscription) -> None:
    disabled = EventDispatcher(transport, enabled=False)
    marker = EventDispatcher(transport)

    disabled.send("worker-online")
    marker.send("worker-offline")

    received = collect(events, 1)
    received.extend(events.get(0.1))
    assert [routing_key_of(envelope) for envelope in received] == ["worker.offline"]
    assert disabled.publisher is None


def test_transport_in_disabled_transports_turns_dispatcher_off() -> None:
    class NoMemoryEvents(EventDispatcher):
        DISABLED_TRANSPORTS = frozenset({"memory"})

    transport = connect(f"memory://{uuid.uuid4().hex}")

    dispatcher = NoMemoryEvents(transport)

    assert dispatcher.enabled is False
    transport.close()


def test_disable_and_enable_call_their_callbacks(
    transport: Transport, events: Subscription
) -> None:
    dispatcher = EventDispatcher(transport)
    calls: list[str] = []
    dispatcher.on_disabled.add(lambda: calls.append("disabled"))
    dispatcher.on_enabled.add(lambda: calls.append("enabled"))

    dispatcher.disable()
    dispatcher.send("worker-online")
    dispatcher.enable()
    dispatcher.send("worker-offline")

    assert calls == ["disabled", "enabled"]
    received = collect(events, 1)
    received.extend(events.get(0.1))
    assert [routing_key_of(envelope) for envelope in received] == ["worker.offline"]


def test_clock_forwards_once_per_event_and_blind_leaves_it_alone(
    transport: Transport, events: Subscription
) -> None:
    dispatcher = EventDispatcher(transport)

    dispatcher.send("worker-online")
    dispatcher.send("worker-heartbeat")
    dispatcher.send("worker-heartbeat", blind=True)

    clocks = [json.loads(envelope.body)["clock"] for envelope in collect(events, 3)]
    assert clocks == [1, 2, None]
    assert dispatcher.clock.value == 2


def test_app_supplies_clock_serializer_and_transport(
    transport: Transport, events: Subscription
) -> None:
    app = MiniApp(transport, clock=LamportClock(initial_value=40), conf=EventsConf("msgpack"))

    dispatcher = EventDispatcher(app=app)
    dispatcher.send("worker-online")

    [envelope] = collect(events, 1)
    assert envelope.content_type == "application/x-msgpack"
    event = body_of(envelope)
    assert isinstance(event, dict)
    assert event["clock"] == 41
    assert app.clock.value == 41


def test_dispatcher_without_transport_or_app_is_refused() -> None:
    with pytest.raises(ValueError, match="connection"):
        EventDispatcher()


def test_buffered_group_is_sent_as_one_list_at_buffer_limit(
    transport: Transport, events: Subscription
) -> None:
    buffered_calls: list[int] = []
    dispatcher = EventDispatcher(
        transport,
        buffer_group=["task"],
        buffer_limit=3,
        on_send_buffered=lambda: buffered_calls.append(1),
    )

    dispatcher.send("task-received", uuid="a")
    dispatcher.send("task-started", uuid="a")
    dispatcher.send("task-succeeded", uuid="a", result="4", runtime=0.1)

    [batch] = collect(events, 1)
    assert routing_key_of(batch) == "task.multi"
    assert batch.headers == {"hostname": dispatcher.hostname}
    body = json.loads(batch.body)
    assert [event["type"] for event in body] == ["task-received", "task-started", "task-succeeded"]
    assert [event["clock"] for event in body] == [1, 2, 3]
    assert len(buffered_calls) == 2
    assert events.get(0.1) == []


def test_unbatched_event_sends_the_waiting_batch_first_so_clocks_arrive_in_order(
    transport: Transport, events: Subscription
) -> None:
    dispatcher = EventDispatcher(transport, buffer_group=["task"])

    dispatcher.send("task-received", uuid="a")
    dispatcher.send("task-started", uuid="a")
    dispatcher.send("worker-heartbeat")

    batch, heartbeat = collect(events, 2)
    assert routing_key_of(batch) == "task.multi"
    assert [event["clock"] for event in json.loads(batch.body)] == [1, 2]
    assert routing_key_of(heartbeat) == "worker.heartbeat"
    assert json.loads(heartbeat.body)["clock"] == 3


def test_flush_sends_partial_batch(transport: Transport, events: Subscription) -> None:
    dispatcher = EventDispatcher(transport, buffer_group=["task"])

    dispatcher.send("task-received", uuid="a")
    dispatcher.send("task-started", uuid="a")
    dispatcher.flush()
    dispatcher.flush()

    [batch] = collect(events, 1)
    assert [event["type"] for event in json.loads(batch.body)] == ["task-received", "task-started"]
    assert events.get(0.1) == []


def test_events_sent_while_offline_are_buffered_then_flushed_in_order(
    transport: Transport, events: Subscription
) -> None:
    switchable = SwitchableTransport(transport)
    dispatcher = EventDispatcher(switchable)
    switchable.is_down = True

    dispatcher.send("worker-online")
    dispatcher.send("task-sent", uuid="a")
    dispatcher.send("worker-heartbeat")
    dispatcher.flush()
    still_waiting = len(dispatcher._outbound_buffer)
    switchable.is_down = False
    dispatcher.flush()

    assert still_waiting == 3
    received = collect(events, 3)
    assert [json.loads(envelope.body)["type"] for envelope in received] == [
        "worker-online",
        "task-sent",
        "worker-heartbeat",
    ]
    assert len(dispatcher._outbound_buffer) == 0


def test_batch_flushed_while_offline_is_resent_as_one_list(
    transport: Transport, events: Subscription
) -> None:
    switchable = SwitchableTransport(transport)
    dispatcher = EventDispatcher(switchable, buffer_group=["task"])
    dispatcher.send("task-received", uuid="a")
    dispatcher.send("task-started", uuid="a")
    switchable.is_down = True

    dispatcher.flush()
    switchable.is_down = False
    dispatcher.flush()

    [batch] = collect(events, 1)
    assert routing_key_of(batch) == "task.multi"
    assert [event["type"] for event in json.loads(batch.body)] == ["task-received", "task-started"]


def test_without_buffer_while_offline_send_errors_propagate(transport: Transport) -> None:
    switchable = SwitchableTransport(transport)
    dispatcher = EventDispatcher(switchable, buffer_while_offline=False)
    switchable.is_down = True

    with pytest.raises(TransportError):
        dispatcher.send("worker-online")


def test_without_buffer_while_offline_events_after_a_failed_one_are_kept(
    transport: Transport, events: Subscription
) -> None:
    switchable = SwitchableTransport(transport)
    dispatcher = EventDispatcher(switchable, buffer_group=["task"], buffer_while_offline=False)
    dispatcher.send("task-received", uuid="a")
    switchable.is_down = True

    with pytest.raises(TransportError):
        dispatcher.send("worker-heartbeat")
    switchable.is_down = False
    dispatcher.flush()

    [heartbeat] = collect(events, 1)
    assert json.loads(heartbeat.body)["type"] == "worker-heartbeat"


def test_flush_stops_at_the_first_failure_and_keeps_the_order(
    transport: Transport, events: Subscription
) -> None:
    switchable = SwitchableTransport(transport)
    dispatcher = EventDispatcher(switchable, buffer_group=["task"])
    switchable.is_down = True
    dispatcher.send("worker-online")
    dispatcher.send("task-received", uuid="a")
    dispatcher.send("worker-heartbeat")
    dispatcher.send("task-started", uuid="a")
    attempts_before = switchable.attempts

    dispatcher.flush()
    attempts_while_down = switchable.attempts - attempts_before
    switchable.is_down = False
    dispatcher.flush()

    assert attempts_while_down == 1
    bodies = [json.loads(envelope.body) for envelope in collect(events, 4)]
    flat = [event for body in bodies for event in (body if isinstance(body, list) else [body])]
    assert [event["clock"] for event in flat] == [1, 2, 3, 4]


class RefusingProducer:
    """A producer whose publish raises the built-in ConnectionError, as a socket would."""

    def __init__(self) -> None:
        self.calls = 0

    def publish(self, body: object, **options: object) -> None:
        self.calls += 1
        raise ConnectionError("connection refused")


def test_publish_through_a_producer_that_raises_connection_error_is_buffered_then_flushed(
    transport: Transport, events: Subscription
) -> None:
    dispatcher = EventDispatcher(transport, hostname="w1@vm")
    refusing = RefusingProducer()

    dispatcher.publish("worker-online", {"freq": 2.0}, refusing)
    nothing_yet = events.get(0.1)
    dispatcher.flush()

    assert refusing.calls == 1
    assert nothing_yet == []
    [envelope] = collect(events, 1)
    event = json.loads(envelope.body)
    assert (event["type"], event["hostname"], event["freq"]) == ("worker-online", "w1@vm", 2.0)
    assert len(dispatcher._outbound_buffer) == 0


def test_send_through_a_producer_that_raises_connection_error_is_buffered(
    transport: Transport, events: Subscription
) -> None:
    dispatcher = EventDispatcher(transport)
    working = dispatcher.publisher
    dispatcher.publisher = RefusingProducer()

    dispatcher.send("worker-online")
    dispatcher.send("worker-heartbeat")
    dispatcher.publisher = working
    dispatcher.flush()

    types = [json.loads(envelope.body)["type"] for envelope in collect(events, 2)]
    assert types == ["worker-online", "worker-heartbeat"]


def test_publish_error_propagates_without_buffer_while_offline(transport: Transport) -> None:
    dispatcher = EventDispatcher(transport, buffer_while_offline=False)

    with pytest.raises(ConnectionError):
        dispatcher.publish("worker-online", {}, RefusingProducer())
    assert len(dispatcher._outbound_buffer) == 0


def test_extend_buffer_takes_over_events_of_another_dispatcher(
    transport: Transport, events: Subscription
) -> None:
    switchable = SwitchableTransport(transport)
    offline = EventDispatcher(switchable)
    switchable.is_down = True
    offline.send("worker-online")
    offline.send("worker-heartbeat")
    offline.close()
    replacement = EventDispatcher(transport)

    replacement.extend_buffer(offline)
    replacement.flush()

    types = [json.loads(envelope.body)["type"] for envelope in collect(events, 2)]
    assert types == ["worker-online", "worker-heartbeat"]


def test_extend_buffer_takes_the_other_dispatchers_batches_too(
    transport: Transport, events: Subscription
) -> None:
    old = EventDispatcher(transport, buffer_group=["task"])
    old.send("task-received", uuid="a")
    old.send("task-started", uuid="a")
    replacement = EventDispatcher(transport)

    replacement.extend_buffer(old)
    replacement.flush()

    [batch] = collect(events, 1)
    assert routing_key_of(batch) == "task.multi"
    assert [event["type"] for event in json.loads(batch.body)] == ["task-received", "task-started"]


def test_close_sends_batched_events_and_stops_sending(
    transport: Transport, events: Subscription
) -> None:
    dispatcher = EventDispatcher(transport, buffer_group=["task"])
    dispatcher.send("task-received", uuid="a")

    with dispatcher:
        dispatcher.send("task-started", uuid="a")
    dispatcher.send("worker-offline")

    [batch] = collect(events, 1)
    assert [event["type"] for event in json.loads(batch.body)] == ["task-received", "task-started"]
    assert events.get(0.1) == []
    assert dispatcher.publisher is None


def test_publish_uses_given_producer_and_retry_policy(
    transport: Transport, events: Subscription
) -> None:
    dispatcher = EventDispatcher(transport, hostname="gen1@vm", enabled=False)

    dispatcher.publish(
        "task-sent",
        {"uuid": "a", "name": "tasks.add"},
        Producer(transport),
        retry=True,
        retry_policy={"max_retries": 1},
    )

    [envelope] = collect(events, 1)
    event = json.loads(envelope.body)
    assert (event["type"], event["uuid"], event["hostname"]) == ("task-sent", "a", "gen1@vm")
    assert routing_key_of(envelope) == "task.sent"


def test_concurrent_senders_lose_no_event_and_clocks_arrive_in_order(
    transport: Transport, events: Subscription
) -> None:
    dispatcher = EventDispatcher(transport, buffer_group=["task"], buffer_limit=7)

    def send_many(type_: str) -> None:
        for _ in range(50):
            dispatcher.send(type_, uuid="a")

    types = ["task-started", "task-started", "task-started", "worker-heartbeat"]
    threads = [threading.Thread(target=send_many, args=(type_,)) for type_ in types]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    dispatcher.flush()

    clocks: list[int] = []
    deadline = time.monotonic() + 5
    while len(clocks) < 200 and time.monotonic() < deadline:
        for envelope in events.get(0.1):
            body = json.loads(envelope.body)
            clocks.extend(event["clock"] for event in (body if isinstance(body, list) else [body]))
    assert clocks == list(range(1, 201))
