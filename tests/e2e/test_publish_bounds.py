"""A publish to a dead or blackholed broker ends within its retry policy and timeouts.

Two dead brokers: a closed port (connection refused at once) and a blackhole, a local
socket that accepts TCP connections and never answers. Past the policy the call raises
OperationalError naming the broker's host and port with the password masked.
"""

from __future__ import annotations

import logging
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac.exceptions import OperationalError
from tests.servers import delete_redis_keys, free_port, rabbitmq_vhost, require

PASSWORD = "s3cret-Pa55"
MARGIN = 1.5
# Small timeouts so that a whole policy runs in a second or two.
QUICK_OPTIONS = {"connect_timeout": 0.4, "socket_timeout": 0.4, "socket_connect_timeout": 0.4}
QUICK_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.2}
QUICK_BOUND = 3 * 0.4 + 0.1 + 0.2


class Blackhole:
    """A loopback port that accepts connections and never sends a byte."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._accepted: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            self._accepted.append(connection)

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        for connection in self._accepted:
            connection.close()
        self._listener.close()


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    yield hole
    hole.close()


def broker_url(scheme: str, port: int) -> str:
    if scheme == "redis":
        return f"redis://user:{PASSWORD}@127.0.0.1:{port}/0"
    return f"amqp://user:{PASSWORD}@127.0.0.1:{port}//"


def timed_failure(app: Celeriac, **options: Any) -> tuple[float, OperationalError]:
    started = time.monotonic()
    with pytest.raises(OperationalError) as raised:
        app.send_task("bounds.anything", **options)
    return time.monotonic() - started, raised.value


def assert_names_broker_without_password(
    error: OperationalError, port: int, caplog: pytest.LogCaptureFixture
) -> None:
    message = str(error)
    assert f"127.0.0.1:{port}" in message
    assert "****" in message
    assert PASSWORD not in message
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
@pytest.mark.parametrize("target", ["closed port", "blackhole"])
def test_publish_with_retry_gives_up_within_the_policy(
    scheme: str, target: str, blackhole: Blackhole, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port() if target == "closed port" else blackhole.port
    app = Celeriac("bounds", broker=broker_url(scheme, port))
    app.conf.broker_transport_options = QUICK_OPTIONS

    elapsed, error = timed_failure(app, retry=True, retry_policy=QUICK_POLICY)
    app.close()

    assert elapsed < QUICK_BOUND + MARGIN
    assert_names_broker_without_password(error, port, caplog)
    assert "gave up after 3 attempts" in str(error)


def test_broker_connection_timeout_bounds_connecting_to_rabbitmq(
    blackhole: Blackhole, caplog: pytest.LogCaptureFixture
) -> None:
    app = Celeriac("bounds", broker=broker_url("amqp", blackhole.port))
    app.conf.broker_connection_timeout = 0.3

    elapsed, error = timed_failure(app, retry=False)
    app.close()

    assert elapsed < 0.3 + MARGIN
    assert_names_broker_without_password(error, blackhole.port, caplog)


@pytest.mark.slow
@pytest.mark.parametrize(("scheme", "default_timeout"), [("redis", 5.0), ("amqp", 4.0)])
def test_one_attempt_on_a_blackhole_ends_within_the_default_timeouts(
    scheme: str, default_timeout: float, blackhole: Blackhole, caplog: pytest.LogCaptureFixture
) -> None:
    app = Celeriac("bounds", broker=broker_url(scheme, blackhole.port))

    elapsed, error = timed_failure(app, retry=False)
    app.close()

    assert elapsed < default_timeout + MARGIN
    assert_names_broker_without_password(error, blackhole.port, caplog)


def test_publish_with_the_default_policy_reaches_a_live_redis() -> None:
    url = require("redis")
    prefix = f"bounds-{uuid.uuid4().hex}:"
    app = Celeriac("bounds", broker=url)
    app.conf.broker_transport_options = {"global_keyprefix": prefix}
    try:
        app.send_task("bounds.anything", retry=True)

        assert app.transport.queue_size("celery") == 1
    finally:
        app.close()
        delete_redis_keys(url, prefix)


def test_publish_with_the_default_policy_reaches_a_live_rabbitmq() -> None:
    with rabbitmq_vhost("bounds") as url:
        app = Celeriac("bounds", broker=url)
        try:
            app.send_task("bounds.anything", retry=True)

            assert wait_for_size(app, "celery", 1)
        finally:
            app.close()


def test_a_locked_sqlite_broker_fails_within_its_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    app = Celeriac("bounds", broker=f"sqlite:///{path}")
    app.conf.broker_transport_options = {"busy_timeout": 0.3}
    app.send_task("bounds.anything")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        elapsed, error = timed_failure(
            app, retry=True, retry_policy={"max_retries": 1, "interval_start": 0.1}
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        app.close()

    assert elapsed < 2 * 0.3 + 0.1 + MARGIN
    assert "locked" in str(error)
    assert "busy_timeout=0.3 s" in str(error)


def wait_for_size(app: Celeriac, queue: str, size: int, timeout: float = 5.0) -> bool:
    """RabbitMQ counts a confirmed message as ready a moment later; poll the count."""
    deadline = time.monotonic() + timeout
    while app.transport.queue_size(queue) < size:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
