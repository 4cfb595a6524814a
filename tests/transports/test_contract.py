"""The Transport contract: one suite, run against every broker.

To add a broker, append a ``BrokerCase`` to ``BROKERS``; its ``open`` function may call
``pytest.skip`` when the server is absent (``tests.servers.require`` does, and fails under
CI=true instead).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from celeriac.exceptions import ImproperlyConfigured
from celeriac.protocol.envelope import Envelope
from celeriac.transports import connect, redact_url
from celeriac.transports.amqp import AmqpTransport
from celeriac.transports.base import (
    DEAD_LETTER_DELIVERIES_HEADER,
    DEAD_LETTER_QUEUE_HEADER,
    DEAD_LETTER_REASON_HEADER,
    DEAD_LETTER_TIME_HEADER,
    Delivery,
    OutgoingMessage,
    Subscription,
    Transport,
    dead_letter_queue,
)
from celeriac.transports.memory import MemoryTransport
from tests.servers import close_rabbitmq_connection, delete_redis_keys, rabbitmq_vhost, require


@dataclass(frozen=True)
class BrokerCase:
    """A broker to run the contract against.

    ``open`` gives a fresh, empty broker's URL and transport options for the duration of
    a test. ``ignores_stale_tags``: a tag from a delivery whose lease ran out and that
    was delivered again no longer acts on the message. ``counts_delayed``: queue_size and
    purge include messages whose eta has not come. ``vanish`` makes a consumer look gone
    to the broker: nothing where leases run out by themselves, the connection closed by
    the server where the lease is the connection (AMQP).
    """

    name: str
    open: Callable[[Path], AbstractContextManager[tuple[str, dict[str, Any]]]]
    ignores_stale_tags: bool = True
    counts_delayed: bool = True
    vanish: Callable[[Transport], None] = lambda transport: None


@contextmanager
def memory_broker(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    yield f"memory://{uuid.uuid4().hex}", {}


@contextmanager
def sqlite_broker(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    yield f"sqlite:///{tmp_path}/broker.db", {}


@contextmanager
def redis_broker(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    url = require("redis")
    prefix = f"contract-{uuid.uuid4().hex}:"
    yield url, {"global_keyprefix": prefix}
    delete_redis_keys(url, prefix)


@contextmanager
def rabbitmq_broker(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with rabbitmq_vhost("contract") as url:
        yield url, {"max_priority": 9}


def close_amqp_connection(transport: Transport) -> None:
    assert isinstance(transport, AmqpTransport)
    close_rabbitmq_connection(transport.connection_name)


BROKERS = [
    BrokerCase("memory", memory_broker),
    BrokerCase("sqlite", sqlite_broker),
    BrokerCase("redis", redis_broker),
    BrokerCase("rabbitmq", rabbitmq_broker, counts_delayed=False, vanish=close_amqp_connection),
]

Connect = Callable[..., Transport]


@pytest.fixture(params=BROKERS, ids=lambda case: case.name)
def broker(request: pytest.FixtureRequest) -> BrokerCase:
    case: BrokerCase = request.param
    return case


@pytest.fixture
def connect_broker(broker: BrokerCase, tmp_path: Path) -> Iterator[Connect]:
    """Open transports (consumers) on one fresh broker; all are closed after the test."""
    opened: list[Transport] = []
    with broker.open(tmp_path) as (url, broker_options):

        def open_transport(**options: Any) -> Transport:
            transport = connect(url, **broker_options, **options)
            opened.append(transport)
            return transport

        yield open_transport
        for transport in reversed(opened):
            transport.close()


@pytest.fixture
def transport(connect_broker: Connect) -> Transport:
    return connect_broker()


def envelope(text: str) -> Envelope:
    return Envelope(body=text.encode(), headers={"id": text})


def bodies(deliveries: list[Delivery]) -> list[str]:
    return [delivery.envelope.body.decode() for delivery in deliveries]


def fetch_all(transport: Transport, queues: list[str], count: int) -> list[Delivery]:
    """Fetch until ``count`` deliveries arrived or two seconds passed."""
    deliveries: list[Delivery] = []
    deadline = time.monotonic() + 2.0
    while len(deliveries) < count and time.monotonic() < deadline:
        deliveries += transport.fetch(queues, count - len(deliveries), 0.2)
    return deliveries


def test_transport_satisfies_the_protocol(transport: Transport) -> None:
    assert isinstance(transport, Transport)


def test_published_message_is_fetched_once_and_gone_after_ack(transport: Transport) -> None:
    sent = Envelope(
        body=b'{"x": 1}',
        headers={"task": "tasks.add", "id": "1"},
        properties={"correlation_id": "1", "reply_to": "r"},
    )
    transport.publish("tasks", sent)

    [delivery] = transport.fetch(["tasks"], 10, 1.0)

    assert delivery.envelope.body == sent.body
    assert delivery.envelope.headers == sent.headers
    assert delivery.envelope.properties["correlation_id"] == "1"
    assert delivery.queue == "tasks"
    assert delivery.delivery_count == 1
    assert transport.fetch(["tasks"], 10, 0) == []
    transport.ack([delivery.tag])
    assert transport.queue_size("tasks") == 0
    assert transport.fetch(["tasks"], 10, 0) == []


def test_messages_of_one_priority_come_out_in_publish_order(transport: Transport) -> None:
    for number in range(20):
        transport.publish("tasks", envelope(str(number)))

    deliveries = fetch_all(transport, ["tasks"], 20)

    assert bodies(deliveries) == [str(number) for number in range(20)]


def test_higher_priority_is_fetched_first(transport: Transport) -> None:
    transport.publish("tasks", envelope("low"), priority=0)
    transport.publish("tasks", envelope("high"), priority=9)
    transport.publish("tasks", envelope("middle"), priority=5)
    transport.publish("tasks", envelope("clamped"), priority=42)

    deliveries = fetch_all(transport, ["tasks"], 4)

    assert bodies(deliveries) == ["high", "clamped", "middle", "low"]


def test_fetch_from_several_queues_orders_by_priority_not_queue(transport: Transport) -> None:
    transport.publish("first", envelope("first-low"), priority=1)
    transport.publish("second", envelope("second-high"), priority=8)

    deliveries = fetch_all(transport, ["first", "second"], 2)

    assert bodies(deliveries) == ["second-high", "first-low"]
    assert [delivery.queue for delivery in deliveries] == ["second", "first"]


def test_eta_hides_message_until_it_is_due(broker: BrokerCase, transport: Transport) -> None:
    published = time.time()
    transport.publish("tasks", envelope("later"), eta=published + 0.3)

    early = transport.fetch(["tasks"], 1, 0)
    waiting = transport.queue_size("tasks")
    deliveries = transport.fetch(["tasks"], 1, 3.0)

    assert early == []
    assert waiting == (1 if broker.counts_delayed else 0)
    assert bodies(deliveries) == ["later"]
    assert time.time() >= published + 0.29


def test_blocked_fetch_returns_when_eta_falls_due(transport: Transport) -> None:
    transport.publish("tasks", envelope("later"), eta=time.time() + 0.3)
    started = time.monotonic()

    deliveries = transport.fetch(["tasks"], 1, 5.0)

    assert bodies(deliveries) == ["later"]
    assert time.monotonic() - started < 1.5


def test_publish_many_puts_each_message_on_its_queue(
    broker: BrokerCase, transport: Transport
) -> None:
    transport.publish_many(
        [
            OutgoingMessage("a", envelope("a1")),
            OutgoingMessage("b", envelope("b1"), priority=3),
            OutgoingMessage("a", envelope("a2")),
            OutgoingMessage("a", envelope("delayed"), eta=time.time() + 60),
        ]
    )

    assert transport.queue_size("a") == (3 if broker.counts_delayed else 2)
    assert transport.queue_size("b") == 1
    assert bodies(fetch_all(transport, ["a"], 2)) == ["a1", "a2"]
    assert bodies(fetch_all(transport, ["b"], 1)) == ["b1"]


def test_fetch_returns_at_most_max_messages(transport: Transport) -> None:
    transport.publish_many([OutgoingMessage("tasks", envelope(str(n))) for n in range(5)])

    deliveries = transport.fetch(["tasks"], 3, 1.0)

    assert bodies(deliveries) == ["0", "1", "2"]


def test_reject_with_requeue_delivers_again_with_a_higher_count(transport: Transport) -> None:
    transport.publish("tasks", envelope("again"))
    [first] = transport.fetch(["tasks"], 1, 1.0)

    transport.reject([first.tag], requeue=True)
    [second] = transport.fetch(["tasks"], 1, 1.0)

    assert bodies([second]) == ["again"]
    assert second.delivery_count == 2


def test_reject_with_a_delay_holds_the_message_in_the_broker_and_counts_it(
    transport: Transport,
) -> None:
    transport.publish("tasks", envelope("later again"))
    [first] = transport.fetch(["tasks"], 1, 1.0)
    rejected_at = time.time()

    transport.reject([first.tag], requeue=True, delay=1.0)
    early = transport.fetch(["tasks"], 1, 0.3)
    [second] = transport.fetch(["tasks"], 1, 5.0)

    assert early == []
    assert bodies([second]) == ["later again"]
    assert second.delivery_count == 2
    assert time.time() >= rejected_at + 0.99


def test_reject_without_requeue_drops_the_message(transport: Transport) -> None:
    transport.publish("tasks", envelope("dropped"))
    [delivery] = transport.fetch(["tasks"], 1, 1.0)

    transport.reject([delivery.tag], requeue=False)

    assert transport.queue_size("tasks") == 0
    assert transport.fetch(["tasks"], 1, 0.1) == []


def test_release_gives_message_back_without_counting_a_delivery(transport: Transport) -> None:
    transport.publish("tasks", envelope("released"))
    [first] = transport.fetch(["tasks"], 1, 1.0)

    transport.release([first.tag])
    [second] = transport.fetch(["tasks"], 1, 1.0)

    assert bodies([second]) == ["released"]
    assert second.delivery_count == 1


def test_lease_not_extended_comes_back_to_another_consumer(
    broker: BrokerCase, connect_broker: Connect
) -> None:
    vanished = connect_broker(lease_seconds=0.3)
    survivor = connect_broker(lease_seconds=0.3)
    vanished.publish("tasks", envelope("orphan"))
    [first] = vanished.fetch(["tasks"], 1, 1.0)

    while_leased = survivor.fetch(["tasks"], 1, 0)
    broker.vanish(vanished)
    [second] = survivor.fetch(["tasks"], 1, 3.0)

    assert first.delivery_count == 1
    assert while_leased == []
    assert bodies([second]) == ["orphan"]
    assert second.delivery_count == 2


def test_ack_of_an_expired_delivery_leaves_the_new_delivery(
    broker: BrokerCase, connect_broker: Connect
) -> None:
    if not broker.ignores_stale_tags:
        pytest.skip(f"{broker.name} acts on tags of expired deliveries")
    slow = connect_broker(lease_seconds=0.2)
    other = connect_broker(lease_seconds=30)
    slow.publish("tasks", envelope("redelivered"))
    [stale] = slow.fetch(["tasks"], 1, 1.0)
    broker.vanish(slow)
    [fresh] = other.fetch(["tasks"], 1, 3.0)

    slow.ack([stale.tag])
    slow.reject([stale.tag], requeue=True)

    assert other.fetch(["tasks"], 1, 0) == []
    other.ack([fresh.tag])
    assert other.queue_size("tasks") == 0


def test_extend_lease_keeps_message_from_another_consumer(connect_broker: Connect) -> None:
    holder = connect_broker(lease_seconds=0.5)
    other = connect_broker(lease_seconds=0.5)
    holder.publish("tasks", envelope("kept"))
    [delivery] = holder.fetch(["tasks"], 1, 1.0)

    stolen: list[Delivery] = []
    deadline = time.monotonic() + 1.2
    while time.monotonic() < deadline:
        holder.extend_lease([delivery.tag])
        stolen += other.fetch(["tasks"], 1, 0.1)

    assert stolen == []
    holder.ack([delivery.tag])
    assert other.fetch(["tasks"], 1, 0.5) == []


def test_dead_letter_moves_message_with_reason(transport: Transport) -> None:
    transport.publish("tasks", envelope("poison"), priority=4)
    [first] = transport.fetch(["tasks"], 1, 1.0)
    transport.reject([first.tag], requeue=True)
    [delivery] = transport.fetch(["tasks"], 1, 1.0)
    before = time.time()

    transport.dead_letter([delivery.tag], "delivered too many times")

    assert transport.queue_size("tasks") == 0
    assert transport.queue_size(dead_letter_queue("tasks")) == 1
    [dead] = transport.fetch([dead_letter_queue("tasks")], 1, 1.0)
    assert bodies([dead]) == ["poison"]
    assert dead.queue == "tasks.dead_letter"
    assert dead.envelope.headers[DEAD_LETTER_REASON_HEADER] == "delivered too many times"
    assert dead.envelope.headers[DEAD_LETTER_QUEUE_HEADER] == "tasks"
    assert dead.envelope.headers[DEAD_LETTER_DELIVERIES_HEADER] == 2
    assert before - 1 <= dead.envelope.headers[DEAD_LETTER_TIME_HEADER] <= time.time()
    assert dead.envelope.headers["id"] == "poison"


def test_purge_deletes_waiting_messages_and_counts_them(
    broker: BrokerCase, transport: Transport
) -> None:
    transport.publish_many([OutgoingMessage("tasks", envelope(str(n))) for n in range(4)])
    transport.publish("tasks", envelope("delayed"), eta=time.time() + 60)
    transport.publish("other", envelope("kept"))
    [leased] = transport.fetch(["tasks"], 1, 1.0)

    purged = transport.purge("tasks")

    assert purged == (4 if broker.counts_delayed else 3)
    assert transport.queue_size("tasks") == 0
    assert transport.queue_size("other") == 1
    assert transport.purge("tasks") == 0
    transport.ack([leased.tag])


def test_queue_size_counts_ready_and_delayed_but_not_leased(
    broker: BrokerCase, transport: Transport
) -> None:
    transport.publish("tasks", envelope("ready"))
    transport.publish("tasks", envelope("leased"), priority=9)
    transport.publish("tasks", envelope("delayed"), eta=time.time() + 60)

    transport.fetch(["tasks"], 1, 1.0)

    assert transport.queue_size("tasks") == (2 if broker.counts_delayed else 1)
    assert transport.queue_size("empty") == 0


def test_fetch_timeout_returns_empty_list_after_about_the_timeout(transport: Transport) -> None:
    started = time.monotonic()

    deliveries = transport.fetch(["tasks"], 10, 0.3)

    elapsed = time.monotonic() - started
    assert deliveries == []
    assert 0.25 <= elapsed < 1.0


def test_blocked_fetch_wakes_when_another_thread_publishes(connect_broker: Connect) -> None:
    consumer = connect_broker(polling_interval=5.0)
    producer = connect_broker()
    producer.queue_size("tasks")  # connected before the clock matters
    published: list[float] = []

    def publish() -> None:
        producer.publish("tasks", envelope("wake"))
        published.append(time.monotonic())

    publisher = threading.Timer(0.2, publish)
    publisher.start()
    try:
        deliveries = consumer.fetch(["tasks"], 1, 5.0)
        returned = time.monotonic()
    finally:
        publisher.join()

    assert bodies(deliveries) == ["wake"]
    # Woken by the message, not by the 5 s polling interval or the fetch timeout.
    assert returned - published[0] < 0.5


def test_concurrent_fetchers_get_every_message_exactly_once(transport: Transport) -> None:
    transport.publish_many([OutgoingMessage("tasks", envelope(str(n))) for n in range(300)])
    received: list[list[str]] = [[] for _ in range(4)]

    def consume(into: list[str]) -> None:
        while deliveries := transport.fetch(["tasks"], 7, 0.2):
            into += bodies(deliveries)
            transport.ack([delivery.tag for delivery in deliveries])

    threads = [threading.Thread(target=consume, args=(into,)) for into in received]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    everything = [body for into in received for body in into]
    assert sorted(everything, key=int) == [str(n) for n in range(300)]


def test_close_gives_leases_back_at_once(connect_broker: Connect) -> None:
    leaving = connect_broker(lease_seconds=60)
    staying = connect_broker(lease_seconds=60)
    leaving.publish("tasks", envelope("handed-over"))
    leaving.fetch(["tasks"], 1, 1.0)

    leaving.close()
    deliveries = staying.fetch(["tasks"], 1, 1.0)

    assert bodies(deliveries) == ["handed-over"]
    assert deliveries[0].delivery_count == 1


def test_broadcast_reaches_subscribers_from_before_not_after(connect_broker: Connect) -> None:
    sender = connect_broker()
    receiver = connect_broker()
    early: list[Subscription] = [sender.subscribe("control"), receiver.subscribe("control")]
    elsewhere = receiver.subscribe("events")

    sender.broadcast("control", envelope("ping"))
    late = receiver.subscribe("control")

    try:
        for subscription in early:
            assert bodies_of(subscription.get(2.0)) == ["ping"]
            assert subscription.get(0.1) == []
        assert late.get(0.2) == []
        assert elsewhere.get(0.1) == []
    finally:
        for subscription in [*early, elsewhere, late]:
            subscription.close()


def test_subscription_with_a_routing_key_gets_only_what_was_sent_with_it(
    connect_broker: Connect,
) -> None:
    sender = connect_broker()
    receiver = connect_broker()
    channel = "reply.contract.pidbox"
    mine = receiver.subscribe(channel, routing_key="client-a")
    theirs = receiver.subscribe(channel, routing_key="client-b")

    for key in ("client-b", "client-a"):
        reply = envelope(f"for {key}")
        reply.properties["delivery_info"] = {"exchange": channel, "routing_key": key}
        sender.broadcast(channel, reply)

    try:
        assert bodies_of(mine.get(2.0)) == ["for client-a"]
        assert bodies_of(theirs.get(2.0)) == ["for client-b"]
        assert mine.get(0.2) == []
    finally:
        mine.close()
        theirs.close()


def test_subscription_get_wakes_when_broadcast_arrives(connect_broker: Connect) -> None:
    sender = connect_broker()
    subscription = connect_broker(polling_interval=5.0).subscribe("control")
    publisher = threading.Timer(0.2, sender.broadcast, ("control", envelope("now")))
    started = time.monotonic()
    publisher.start()
    try:
        received = subscription.get(5.0)
    finally:
        publisher.join()
        subscription.close()

    assert bodies_of(received) == ["now"]
    assert time.monotonic() - started < 0.5


def bodies_of(envelopes: list[Envelope]) -> list[str]:
    return [item.body.decode() for item in envelopes]


def test_unknown_scheme_is_improperly_configured_and_lists_known_ones() -> None:
    with pytest.raises(ImproperlyConfigured, match="'nosuch'") as raised:
        connect("nosuch://user:secret@host/0")

    assert "memory" in str(raised.value)
    assert "sqlite" in str(raised.value)
    assert "secret" not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://:secret@localhost:6379/0", "redis://:****@localhost:6379/0"),
        ("amqp://guest:guest@localhost:5672//", "amqp://guest:****@localhost:5672//"),
        ("redis://user@localhost/0", "redis://user@localhost/0"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("sqlite:////var/lib/a:b@c.db", "sqlite:////var/lib/a:b@c.db"),
        ("memory://", "memory://"),
    ],
)
def test_redact_url_masks_only_the_password(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_memory_join_waits_until_every_message_is_acknowledged() -> None:
    transport = MemoryTransport(f"memory://{uuid.uuid4().hex}")
    transport.publish("tasks", envelope("work"))
    [delivery] = transport.fetch(["tasks"], 1, 1.0)

    unfinished = transport.join(timeout=0.05)
    threading.Timer(0.1, transport.ack, ([delivery.tag],)).start()
    finished = transport.join(timeout=5.0)

    assert not unfinished
    assert finished
