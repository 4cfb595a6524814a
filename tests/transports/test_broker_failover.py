"""Failover pieces, quickly: a RabbitMQ URL list, its order, and sentinel:// as a result store.

The whole-worker scenarios (a Redis master failover, a RabbitMQ proxy cut) are in
``tests/faults/test_failover.py``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from celeriac import Celeriac
from celeriac.backends import from_url
from celeriac.backends.base import BackendUnavailable
from celeriac.exceptions import ImproperlyConfigured
from celeriac.transports import redact_url
from celeriac.transports.amqp import AmqpTransport
from celeriac.transports.amqp_connection import BrokerList, ConnectionSettings
from celeriac.transports.base import BrokerRefused, TransportError
from tests.servers import free_port, rabbitmq_vhost

URLS = "amqp://u:pw-a@a.invalid//;amqp://u:pw-b@b.invalid//;amqp://u:pw-c@c.invalid//"


def opener_failing(*hosts: str) -> Callable[[ConnectionSettings], str]:
    def open_broker(settings: ConnectionSettings) -> str:
        if settings.host.partition(":")[0] in hosts:
            raise ConnectionRefusedError(111, "Connection refused")
        return settings.host.partition(":")[0]

    return open_broker


def test_a_url_list_connects_to_the_first_broker_that_answers() -> None:
    brokers = BrokerList(URLS, {})

    assert brokers.connect(opener_failing("a.invalid"), after_loss=False) == "b.invalid"
    assert brokers.current.host == "b.invalid:5672"


def test_after_a_lost_connection_the_next_broker_is_tried_first_in_turn() -> None:
    brokers = BrokerList(URLS, {})
    reached = [brokers.connect(opener_failing(), after_loss=False)]

    reached += [brokers.connect(opener_failing(), after_loss=True) for _ in range(3)]

    assert reached == ["a.invalid", "b.invalid", "c.invalid", "a.invalid"]


def test_shuffle_moves_to_another_broker_after_a_loss() -> None:
    random.seed(7)
    brokers = BrokerList(URLS, {"failover_strategy": "shuffle"})
    first = brokers.connect(opener_failing(), after_loss=False)

    second = brokers.connect(opener_failing(), after_loss=True)

    assert second != first


def test_every_broker_down_names_each_without_its_password() -> None:
    brokers = BrokerList(URLS, {})

    with pytest.raises(TransportError) as raised:
        brokers.connect(opener_failing("a.invalid", "b.invalid", "c.invalid"), after_loss=False)

    message = str(raised.value)
    assert "none of the 3 RabbitMQ brokers answered" in message
    assert all(host in message for host in ("a.invalid", "b.invalid", "c.invalid"))
    assert "pw-" not in message
    assert not isinstance(raised.value, BrokerRefused)


def test_an_unknown_failover_strategy_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match="round-robin"):
        BrokerList(URLS, {"failover_strategy": "random"})


def test_each_url_of_a_list_is_masked() -> None:
    assert redact_url("amqp://u:one@a//;amqp://u:two@b//") == "amqp://u:****@a//;amqp://u:****@b//"


def test_a_python_list_of_broker_urls_is_joined_as_celery_does() -> None:
    app = Celeriac("failover")
    app.conf.broker_url = ["amqp://a//", "amqp://b//"]

    assert app.broker_url == "amqp://a//;amqp://b//"


def test_a_transport_given_a_dead_broker_first_publishes_on_the_next() -> None:
    with rabbitmq_vhost("failover") as url:
        dead = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
        transport = AmqpTransport(f"{dead};{url}", connect_timeout=1.0)
        try:
            size = transport.queue_size("celery")
        finally:
            transport.close()

    assert size == 0


def test_sentinel_is_a_result_store_scheme_that_needs_a_master_name() -> None:
    with pytest.raises(ImproperlyConfigured, match="master_name"):
        from_url("sentinel://127.0.0.1:26379/0")


def test_a_sentinel_result_store_out_of_reach_is_unavailable_and_masks_its_password() -> None:
    backend = from_url(
        f"sentinel://:hidden-pw@127.0.0.1:{free_port()}/0",
        master_name="mymaster",
        socket_connect_timeout=0.5,
    )
    try:
        with pytest.raises(BackendUnavailable) as raised:
            backend.get("some-task")
    finally:
        backend.close()

    assert "hidden-pw" not in str(raised.value)
    assert "****" in str(raised.value)
