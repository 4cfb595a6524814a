"""The app's connection surface: connections, pools, producers and the logical clock."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac.connection import Channel, Connection
from celeriac.entity import Exchange, Queue
from celeriac.events.dispatcher import EventDispatcher
from celeriac.events.receiver import EventReceiver
from celeriac.exceptions import OperationalError, QueueNotFound
from celeriac.messaging import Producer
from celeriac.protocol.message import parse_task_message
from celeriac.serialization import loads
from celeriac.transports.base import Transport
from tests.conftest import BrokerUnderTest


@pytest.fixture
def app(broker_under_test: BrokerUnderTest) -> Iterator[Celeriac]:
    """An app on each kind of broker, with a queue of its own."""
    app = Celeriac("conn", broker=broker_under_test.url, set_as_current=False)
    app.conf.broker_transport_options = broker_under_test.options
    app.conf.task_default_queue = f"conn-{uuid.uuid4().hex}"
    yield app
    app.close()


def fetch_one(transport: Transport, queue: str) -> Any:
    deliveries = transport.fetch([queue], 1, 2.0)
    assert len(deliveries) == 1, f"nothing arrived in {queue!r}"
    transport.ack([deliveries[0].tag])
    return deliveries[0].envelope


# ---- connections ------------------------------------------------------------------------


def test_connection_for_write_and_read_name_the_broker(app: Celeriac) -> None:
    with app.connection_for_write() as write, app.connection_for_read() as read:
        assert write.hostname == read.hostname == app.broker_url
        assert write.transport_cls == app.broker_url.partition("://")[0]
        assert isinstance(write.transport, Transport)
        assert write.connect() is write
        assert write.connected


def test_read_and_write_urls_are_used_when_set(tmp_path: Path) -> None:
    app = Celeriac("rw", broker="memory://main", set_as_current=False)
    app.conf.broker_read_url = f"sqlite:///{tmp_path}/read.db"
    app.conf.broker_write_url = "memory://write"
    assert app.connection_for_read().hostname == f"sqlite:///{tmp_path}/read.db"
    assert app.connection_for_write().hostname == "memory://write"
    assert app.connection().hostname == "memory://main"
    assert app.connection("memory://other").hostname == "memory://other"


def test_as_uri_masks_the_password() -> None:
    connection = Connection("redis://:s3cret@localhost:6379/0")
    assert connection.as_uri() == "redis://:****@localhost:6379/0"
    assert connection.as_uri(include_password=True) == "redis://:s3cret@localhost:6379/0"
    assert "s3cret" not in repr(connection)


def test_channels_are_views_on_the_connection(app: Celeriac) -> None:
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        assert isinstance(channel, Channel)
        assert connection.default_channel is channel
        assert channel.transport is connection.transport
        assert connection.channel() is not channel


def test_release_closes_an_unpooled_connection_and_it_reopens(app: Celeriac) -> None:
    connection = app.connection_for_write()
    first = connection.transport
    connection.release()
    assert not connection.connected
    assert connection.transport is not first
    connection.close()


def test_ensure_connection_retries_then_reports_the_redacted_url(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    connection = Connection(f"sqlite:///{blocker}/broker.db")
    failures: list[float] = []
    with pytest.raises(OperationalError, match="cannot connect to sqlite://"):
        connection.ensure_connection(
            errback=lambda exc, interval: failures.append(interval),
            max_retries=2,
            interval_start=0.0,
            interval_step=0.01,
        )
    assert failures == [0.0, 0.01]


def test_ensure_connection_gives_up_at_its_timeout(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    connection = Connection(f"sqlite:///{blocker}/broker.db")
    with pytest.raises(OperationalError, match=r"within 0\.05 s"):
        connection.ensure_connection(interval_start=0.1, timeout=0.05)


def test_ensure_connection_returns_once_connected(app: Celeriac) -> None:
    with app.connection_for_write() as connection:
        assert connection.ensure_connection(max_retries=1) is connection


# ---- pools ------------------------------------------------------------------------------


def test_pool_lends_connections_over_the_apps_transport(app: Celeriac) -> None:
    with app.pool.acquire() as connection:
        assert connection.transport is app.transport
    with app.pool.acquire() as again:
        assert again is connection
    assert app.transport.queue_size(app.conf.task_default_queue) == 0


def test_pool_limit_bounds_the_connections_out(app: Celeriac) -> None:
    app.conf.broker_pool_limit = 1
    held = app.pool.acquire()
    with pytest.raises(OperationalError, match="all 1 pooled broker connections are in use"):
        app.pool.acquire(block=False)
    released = threading.Timer(0.05, held.release)
    released.start()
    with app.pool.acquire(timeout=2.0) as connection:
        assert connection is held


def test_producer_or_acquire_lends_a_pooled_producer(app: Celeriac) -> None:
    app.conf.broker_pool_limit = 1
    with app.producer_or_acquire() as producer:
        assert isinstance(producer, Producer)
        assert producer.transport is app.transport
        with pytest.raises(OperationalError):
            app.pool.acquire(block=False)
    with app.pool.acquire(block=False):
        pass


def test_producer_or_acquire_uses_the_producer_given(app: Celeriac) -> None:
    mine = app.connection_for_write().Producer()
    with app.producer_or_acquire(mine) as producer:
        assert producer is mine
    mine.connection.close()


def test_connection_or_acquire(app: Celeriac) -> None:
    given = app.connection_for_write()
    with app.connection_or_acquire(given) as connection:
        assert connection is given
    with app.connection_or_acquire() as connection:
        assert connection.transport is app.transport
    given.close()


# ---- producers --------------------------------------------------------------------------


def test_raw_publish_puts_the_message_exactly_as_given(app: Celeriac) -> None:
    queue = app.conf.task_default_queue
    with app.producer_or_acquire() as producer:
        producer.publish(
            b"\x00not json",
            routing_key=queue,
            content_type="application/x-custom",
            content_encoding="binary",
            headers={"task": "x", "custom": [1, 2]},
            correlation_id="c-1",
            reply_to="r-1",
            priority=4,
        )
    envelope = fetch_one(app.transport, queue)
    assert envelope.body == b"\x00not json"
    assert envelope.content_type == "application/x-custom"
    assert envelope.headers == {"task": "x", "custom": [1, 2]}
    assert envelope.properties["correlation_id"] == "c-1"
    assert envelope.properties["reply_to"] == "r-1"
    assert envelope.properties["priority"] == 4


def test_publish_to_a_named_exchange_follows_the_apps_bindings(app: Celeriac) -> None:
    images, everything = f"images-{uuid.uuid4().hex}", f"all-{uuid.uuid4().hex}"
    app.conf.task_queues = [
        Queue(images, Exchange("media", "topic"), "media.image.*"),
        Queue(everything, Exchange("media", "topic"), "media.#"),
    ]
    with app.producer_or_acquire() as producer:
        producer.publish({"n": 1}, exchange="media", routing_key="media.image.png")
        with pytest.raises(QueueNotFound, match="exchange 'other'"):
            producer.publish({"n": 2}, exchange="other", routing_key="x")
    envelope = fetch_one(app.transport, images)
    assert loads(envelope.body, envelope.content_type, envelope.content_encoding) == {"n": 1}
    assert app.transport.queue_size(everything) == 1


def test_apply_async_with_producer_and_connection(app: Celeriac) -> None:
    @app.task(name="conn.add")
    def add(x: int, y: int) -> int:
        return x + y

    with app.connection_for_write() as connection:
        add.apply_async((1, 2), connection=connection)
        with app.producer_or_acquire() as producer:
            add.apply_async((3, 4), producer=producer)
    first = parse_task_message(fetch_one(app.transport, app.conf.task_default_queue))
    second = parse_task_message(fetch_one(app.transport, app.conf.task_default_queue))
    assert [first.decode_body()[0], second.decode_body()[0]] == [[1, 2], [3, 4]]


def test_a_foreign_producer_has_publish_called_as_celery_calls_it(app: Celeriac) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[bytes, dict[str, Any]]] = []

        def publish(self, body: bytes, **kwargs: Any) -> None:
            self.calls.append((body, kwargs))

    recorder = Recorder()
    queue = app.conf.task_default_queue
    result = app.send_task("conn.remote", (1,), producer=recorder)
    [(body, kwargs)] = recorder.calls
    decoded = loads(body, kwargs["content_type"], kwargs["content_encoding"])
    assert decoded == [[1], {}, _empty_embed()]
    assert kwargs["exchange"] == ""
    assert kwargs["routing_key"] == queue
    assert kwargs["headers"]["id"] == result.id
    assert kwargs["correlation_id"] == result.id
    assert app.transport.queue_size(queue) == 0


def _empty_embed() -> dict[str, Any]:
    return {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


# ---- events over connections -------------------------------------------------------------


def test_events_sent_on_a_write_connection_reach_a_read_connection(app: Celeriac) -> None:
    hostname = f"conn-{uuid.uuid4().hex}@test"
    with app.connection_for_read() as reading, app.connection_for_write() as writing:
        receiver = EventReceiver(reading, app=app)
        dispatcher = EventDispatcher(writing, hostname=hostname, app=app)
        dispatcher.send("worker-custom", detail=1)
        dispatcher.close()
        ours = _first_events_from(receiver, hostname)
        receiver.close()
    assert [(event["type"], event["detail"]) for event in ours] == [("worker-custom", 1)]
    assert dispatcher.connection is writing


def _first_events_from(receiver: EventReceiver, hostname: str) -> list[dict[str, Any]]:
    """The first batch of events sent by ``hostname`` (a shared broker may carry others)."""
    for events in receiver.itercapture(timeout=5.0, wakeup=False):
        ours = [event for event in events if event["hostname"] == hostname]
        if ours:
            return ours
    raise AssertionError("no event arrived")


# ---- the clock --------------------------------------------------------------------------


def test_app_clock_moves_forward_on_publish_and_adjusts_on_receipt(app: Celeriac) -> None:
    before = app.clock.value
    app.send_task("conn.tick")
    after_publish = app.clock.value
    assert after_publish > before
    assert app.clock.adjust(after_publish + 10) == after_publish + 11
    assert app.clock.forward() == after_publish + 12
