"""The loopback servers some tests need, and how a test asks for one.

A test that needs Redis, RabbitMQ or PostgreSQL calls :func:`require` with the server's
name. When the server does not answer, the test is skipped with the reason, except under
``CI=true``, where a missing server is a failure: CI must not go green by skipping.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import pytest


@dataclass(frozen=True, slots=True)
class Server:
    """A server on this machine: where it listens and the URL tests use for it."""

    name: str
    host: str
    port: int
    url: str
    start_hint: str


SERVERS = {
    server.name: server
    for server in (
        Server(
            "redis",
            "127.0.0.1",
            6379,
            os.environ.get("CELERIAC_TEST_REDIS_URL", "redis://127.0.0.1:6379"),
            "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ''",
        ),
        Server(
            "rabbitmq",
            "127.0.0.1",
            5672,
            os.environ.get("CELERIAC_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
            "rabbitmq-server -detached",
        ),
        Server(
            "postgres",
            "127.0.0.1",
            5432,
            os.environ.get(
                "CELERIAC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
            ),
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
        ),
    )
}


def is_up(server: Server, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on the server's port."""
    try:
        with socket.create_connection((server.host, server.port), timeout=timeout):
            return True
    except OSError:
        return False


def require(name: str) -> str:
    """Return the URL of server ``name``; skip the test (fail under CI=true) if it is down."""
    server = SERVERS[name]
    if not is_up(server):
        reason = (
            f"{name} is not answering on {server.host}:{server.port}"
            f" (start it with: {server.start_hint})"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return server.url


def delete_redis_keys(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` on the Redis server at ``url`` (a test's leftovers)."""
    import redis

    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
