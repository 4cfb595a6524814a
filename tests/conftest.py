"""Fixtures shared by every test directory."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from celeriac.transports import connect
from celeriac.transports.base import Transport
from tests.servers import delete_redis_keys, rabbitmq_vhost, require


@dataclass(frozen=True)
class BrokerUnderTest:
    """A fresh, empty broker: its URL and the transport options that keep it private."""

    url: str
    options: dict[str, Any] = field(default_factory=dict)

    def connect(self) -> Transport:
        return connect(self.url, **self.options)


@pytest.fixture(params=["memory", "sqlite", "redis", "rabbitmq"])
def broker_under_test(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerUnderTest]:
    """Each kind of broker: in-process, an SQLite file, the loopback Redis and RabbitMQ.

    The Redis one keeps its keys under a prefix of its own, the RabbitMQ one everything
    in a virtual host of its own; both are deleted afterwards.
    """
    if request.param == "rabbitmq":
        with rabbitmq_vhost("test") as url:
            yield BrokerUnderTest(url, {"max_priority": 9})
    elif request.param == "redis":
        url = require("redis")
        prefix = f"test-{uuid.uuid4().hex}:"
        yield BrokerUnderTest(url, {"global_keyprefix": prefix})
        delete_redis_keys(url, prefix)
    elif request.param == "memory":
        yield BrokerUnderTest(f"memory://{uuid.uuid4().hex}")
    else:
        yield BrokerUnderTest(f"sqlite:///{tmp_path}/b.db")


@pytest.fixture
def transport(broker_under_test: BrokerUnderTest) -> Iterator[Transport]:
    """A real transport on each kind of broker."""
    opened = broker_under_test.connect()
    yield opened
    opened.close()
