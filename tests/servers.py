"""The loopback servers some tests need, and how a test asks for one.

A test that needs Redis, RabbitMQ or PostgreSQL calls :func:`require` with the server's
name. When the server does not answer, the test is skipped with the reason, except under
``CI=true``, where a missing server is a failure: CI must not go green by skipping.
Tests that stop and restart the broker run a :class:`PrivateRedis` or a
:class:`PrivateRabbitMQ` of their own.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


class PrivateServer:
    """A server process of a test's own on a free loopback port: started, stopped and
    killed by its PID, never the shared one. Subclasses say how to launch it."""

    name = "server"
    stop_timeout = 30.0

    def __init__(self, folder: Path, url: str, port: int) -> None:
        self.folder = folder
        self.url = url
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self, command: list[str], log_name: str, **options: Any) -> None:
        """Start ``command`` with its output in ``log_name`` (``options`` go to Popen)."""
        with (self.folder / log_name).open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, **options
            )

    def wait_until_up(self, timeout: float, poll: float) -> None:
        """Wait until the port accepts connections; raise if the process died or took too long."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while not is_up(Server("private", "127.0.0.1", self.port, self.url, "")):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private {self.name} on port {self.port} did not start")
            time.sleep(poll)

    def stop(self) -> None:
        """Shut the server down as an operator would (SIGTERM: a clean stop)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=self.stop_timeout)
        self.process = None

    def kill(self) -> None:
        """End the server at once, by PID, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


class PrivateRedis(PrivateServer):
    """A ``redis-server`` of a test's own on a free loopback port, to stop and start at will.

    Tests that take the broker away use one, never the shared server on 6379.
    """

    name = "redis-server"

    def __init__(
        self, folder: Path, *, appendonly: bool = False, password: str | None = None
    ) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            reason = "redis-server is not installed (apt-get install redis-server)"
            if os.environ.get("CI") == "true":
                pytest.fail(f"CI=true: {reason}")
            pytest.skip(reason)
        port = free_port()
        super().__init__(folder, f"redis://127.0.0.1:{port}/0", port)
        self.executable = executable
        self.appendonly = appendonly
        self.password = password

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        command = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--dir", str(self.folder)]
        command += ["--appendonly", "yes" if self.appendonly else "no"]
        if self.password is not None:
            command += ["--requirepass", self.password]
        self.launch(command, f"redis-{self.port}.log")
        self.wait_until_up(timeout=10, poll=0.02)


@contextmanager
def private_redis(
    folder: Path, *, started: bool = True, appendonly: bool = False, password: str | None = None
) -> Iterator[PrivateRedis]:
    """A :class:`PrivateRedis` (with ``password``, one that requires it), killed on the way
    out whatever happened."""
    server = PrivateRedis(folder, appendonly=appendonly, password=password)
    try:
        if started:
            server.start()
        yield server
    finally:
        server.kill()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


RABBITMQCTL_TIMEOUT = 60.0


def rabbitmqctl(*arguments: str) -> str:
    """Run ``rabbitmqctl -q`` on the loopback RabbitMQ node and return its output."""
    completed = subprocess.run(
        ["rabbitmqctl", "-q", *arguments],
        capture_output=True,
        text=True,
        check=True,
        timeout=RABBITMQCTL_TIMEOUT,
    )
    return completed.stdout


@contextmanager
def rabbitmq_vhost(label: str) -> Iterator[str]:
    """Make a virtual host of the test's own on the loopback RabbitMQ; yield its URL.

    Everything the test declares, delayed messages included, goes with the virtual host
    when it is deleted afterwards.
    """
    url = require("rabbitmq")
    parts = urlsplit(url)
    name = f"{label}-{uuid.uuid4().hex}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, parts.username or "guest", ".*", ".*", ".*")
        yield f"{parts.scheme}://{parts.netloc}/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)


def close_rabbitmq_connection(connection_name: str) -> None:
    """Make RabbitMQ close the connection named ``connection_name``, as if it went away."""
    for line in rabbitmqctl("list_connections", "pid", "client_properties").splitlines():
        pid, _, properties = line.partition("\t")
        if f'"{connection_name}"' in properties:
            rabbitmqctl("close_connection", pid, "closed by a test")
            return
    raise LookupError(f"no RabbitMQ connection named {connection_name!r}")


RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
"""The broker's own start script: ``/usr/sbin/rabbitmq-server`` switches to the rabbitmq
user, who could not write the node's folder in the test's temporary directory."""


class PrivateRabbitMQ(PrivateServer):
    """A RabbitMQ node of a test's own on free loopback ports, to stop and start at will.

    Its name, database, logs, configuration and Erlang cookie live in ``folder``, so it
    shares nothing with the node on 5672 but epmd. It takes 5 to 10 s to start.
    """

    name = "RabbitMQ"
    stop_timeout = 60.0

    def __init__(self, folder: Path) -> None:
        if not RABBITMQ_SERVER.exists():
            reason = f"{RABBITMQ_SERVER} is missing (apt-get install rabbitmq-server)"
            if os.environ.get("CI") == "true":
                pytest.fail(f"CI=true: {reason}")
            pytest.skip(reason)
        port = free_port()
        super().__init__(folder, f"amqp://guest:guest@127.0.0.1:{port}//", port)
        (folder / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{self.port}\n")
        (folder / "enabled_plugins").write_text("[].\n")
        self.env = dict(
            os.environ,
            HOME=str(folder),  # the node's Erlang cookie
            RABBITMQ_NODENAME=f"test-{uuid.uuid4().hex[:12]}@localhost",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(free_port()),
            RABBITMQ_CONFIG_FILE=str(folder / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(folder / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(folder / "mnesia"),
            RABBITMQ_LOG_BASE=str(folder / "log"),
            # The script then execs the Erlang VM, so our child is the node and a signal
            # to its PID reaches the node itself.
            RUNNING_UNDER_SYSTEMD="true",
        )

    def start(self, timeout: float = 60.0) -> None:
        """Start the node and wait until it accepts connections."""
        self.launch(
            [str(RABBITMQ_SERVER)],
            "rabbitmq-server.log",
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.folder,
        )
        self.wait_until_up(timeout, poll=0.05)


@contextmanager
def private_rabbitmq(folder: Path) -> Iterator[PrivateRabbitMQ]:
    """A started :class:`PrivateRabbitMQ`, killed on the way out whatever happened."""
    server = PrivateRabbitMQ(folder)
    try:
        server.start()
        yield server
    finally:
        server.kill()
