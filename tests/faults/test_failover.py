"""A worker follows its broker to another server and loses no task.

Redis: a private master, a replica and a sentinel on loopback; the worker and the client
use ``sentinel://`` as broker and result store, and the sentinel is told to fail over
while the worker runs acks_late tasks. RabbitMQ: the worker's ``broker_url`` lists a TCP
proxy in front of the shared server, then the server itself; the test cuts the proxy.
Each records its row in the fault battery's table.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from celeriac import Celeriac
from celeriac.states import SUCCESS
from celeriac.transports import redact_url
from tests.e2e.conftest import wait_for
from tests.faults.battery import record_row
from tests.faults.support import FaultBroker, faultproj_worker, run_times, runs
from tests.servers import delete_redis_keys, free_port, rabbitmq_vhost, require

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

TASKS = 400
TASK_SECONDS = 0.02
MASTER_NAME = "faultmaster"


@dataclass(frozen=True)
class SentinelBroker(FaultBroker):
    """A FaultBroker whose worker also gets ``result_backend_transport_options``."""

    backend_options: dict[str, Any] = field(default_factory=dict)

    def env(self, runs: Path) -> dict[str, str]:
        return {
            **super().env(runs),
            "FAULTPROJ_BACKEND_OPTIONS": json.dumps(self.backend_options),
        }


# ---- Redis Sentinel --------------------------------------------------------------------


@dataclass
class SentinelGroup:
    """A master, its replica and one sentinel, each a redis-server process of the test's own."""

    folder: Path
    master_port: int = field(default_factory=free_port)
    replica_port: int = field(default_factory=free_port)
    sentinel_port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"sentinel://127.0.0.1:{self.sentinel_port}/0"

    def start(self, executable: str) -> None:
        self._server(executable, "master", self.master_port)
        self._server(executable, "replica", self.replica_port, "--replicaof", "127.0.0.1")
        assert wait_for(lambda: self._linked(self.replica_port), 20), "replica did not sync"
        config = self.folder / "sentinel.conf"
        config.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self.folder}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 1\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
            f"sentinel failover-timeout {MASTER_NAME} 5000\n"
        )
        self._spawn([executable, str(config), "--sentinel"], "sentinel")
        assert wait_for(lambda: self._sentinel_knows_replica(), 20), "sentinel saw no replica"

    def _server(self, executable: str, name: str, port: int, *extra: str) -> None:
        command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--dir", str(self.folder), "--dbfilename", f"{name}.rdb"]
        if extra:
            command += [*extra, str(self.master_port)]
        self._spawn(command, name)
        assert wait_for(lambda: self._answers(port), 10), f"{name} did not start"

    def _spawn(self, command: list[str], name: str) -> None:
        with (self.folder / f"{name}.log").open("ab") as log:
            self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))

    def master_port_named(self) -> int:
        with redis.Redis(port=self.sentinel_port, socket_timeout=2) as sentinel:
            _, port = sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)
            return int(port)

    def fail_over(self, trigger: str) -> None:
        """Kill the master or ask the sentinel to fail over; wait until it names the replica."""
        if trigger == "master killed":
            master = self.processes[0]
            os.kill(master.pid, signal.SIGKILL)
            master.wait(timeout=10)
        else:
            with redis.Redis(port=self.sentinel_port, socket_timeout=2) as sentinel:
                sentinel.execute_command("SENTINEL FAILOVER", MASTER_NAME)
        assert wait_for(lambda: self.master_port_named() == self.replica_port, 30)

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    @staticmethod
    def _answers(port: int) -> bool:
        try:
            with redis.Redis(port=port, socket_timeout=1) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    @staticmethod
    def _linked(port: int) -> bool:
        with redis.Redis(port=port, socket_timeout=1) as client:
            return bool(client.info("replication").get("master_link_status") == "up")

    def _sentinel_knows_replica(self) -> bool:
        try:
            with redis.Redis(port=self.sentinel_port, socket_timeout=1) as sentinel:
                replicas = sentinel.sentinel_slaves(MASTER_NAME)
        except redis.RedisError:
            return False
        return any(int(replica["port"]) == self.replica_port for replica in replicas)


@contextmanager
def sentinel_group(folder: Path) -> Iterator[SentinelGroup]:
    executable = shutil.which("redis-server")
    if executable is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true: redis-server is not installed")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    group = SentinelGroup(folder)
    try:
        group.start(executable)
        yield group
    finally:
        group.kill()


@pytest.mark.parametrize("trigger", ["master killed", "SENTINEL FAILOVER"])
def test_worker_on_sentinel_follows_a_master_failover(tmp_path: Path, trigger: str) -> None:
    with sentinel_group(tmp_path) as group:
        options = {"master_name": MASTER_NAME}
        broker = SentinelBroker(group.url, group.url, options, backend_options=options)
        client = Celeriac("client", broker=group.url, backend=group.url)
        client.conf.broker_transport_options = options
        client.conf.result_backend_transport_options = options
        before = [send(client, number) for number in range(TASKS // 2)]
        with faultproj_worker(broker, tmp_path, "-P", "prefork", "-c", "2"):
            assert wait_for(lambda: len(runs(tmp_path)) >= TASKS // 8, 60)
            cut = time.time()
            group.fail_over(trigger)
            after = [send(client, number) for number in range(TASKS // 2, TASKS)]
            done = wait_for(lambda: len(runs(tmp_path)) >= TASKS, 120)
            states = wait_until_stored(client, before + after, timeout=60)
        client.close()
        moved = group.master_port_named() == group.replica_port

    figures = outcome_figures(tmp_path, before + after, after, cut, states)
    passed = done and moved and figures["lost"] == 0 and figures["unfinished"] == 0
    label = f"redis sentinel, {trigger}"
    record_row("broker failover", label, "ok" if passed else "FAILED", summary(figures))
    assert moved
    assert figures["lost"] == 0
    assert figures["unfinished"] == 0


# ---- RabbitMQ URL list -----------------------------------------------------------------


class TcpProxy:
    """Forward a loopback port to ``target`` until :meth:`cut`, which drops every connection
    and stops listening, so the port refuses from then on."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._cut.is_set():
            try:
                downstream, _ = self._listener.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(self.target, timeout=5)
            with self._lock:
                self._sockets += [downstream, upstream]
            thread = threading.Thread(target=self._pipe, args=(downstream, upstream), daemon=True)
            self._threads.append(thread)
            thread.start()
        self._listener.close()

    def _pipe(self, downstream: socket.socket, upstream: socket.socket) -> None:
        peers = {downstream: upstream, upstream: downstream}
        with suppress(OSError, ValueError):
            while not self._cut.is_set():
                readable, _, _ = select.select(list(peers), [], [], 0.1)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    peers[source].sendall(data)

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for sock in self._sockets:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.mark.parametrize("as_list", [False, True], ids=["joined by ;", "python list"])
def test_worker_on_a_rabbitmq_url_list_fails_over_to_the_next(
    tmp_path: Path, as_list: bool
) -> None:
    redis_url = require("redis")
    prefix = f"failover-{uuid.uuid4().hex}:"
    with rabbitmq_vhost("failover") as direct:
        parts = urlsplit(direct)
        proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5672))
        proxied = parts._replace(netloc=f"{parts.netloc.rpartition('@')[0]}@127.0.0.1:{proxy.port}")
        urls = [proxied.geturl(), direct]
        backend = f"{redis_url}?global_keyprefix={prefix}"
        broker = FaultBroker(";".join(urls), backend)
        client = Celeriac("client", backend=backend)
        client.conf.broker_url = urls if as_list else ";".join(urls)
        try:
            before = [send(client, number) for number in range(TASKS // 2)]
            with faultproj_worker(broker, tmp_path, "-P", "prefork", "-c", "2") as worker:
                assert wait_for(lambda: len(runs(tmp_path)) >= TASKS // 8, 60)
                [stats] = client.control.inspect(timeout=2.0).stats().values()
                cut = time.time()
                proxy.cut()
                after = [send(client, number) for number in range(TASKS // 2, TASKS)]
                done = wait_for(lambda: len(runs(tmp_path)) >= TASKS, 120)
                states = wait_until_stored(client, before + after, timeout=60)
                alive = worker.poll() is None
        finally:
            proxy.cut()
            client.close()
            delete_redis_keys(redis_url, prefix)

    figures = outcome_figures(tmp_path, before + after, after, cut, states)
    passed = done and alive and figures["lost"] == 0 and figures["unfinished"] == 0
    label = "rabbitmq url list" if as_list else "rabbitmq a;b"
    record_row("broker failover", label, "ok" if passed else "FAILED", summary(figures))
    assert stats["broker"]["port"] == proxy.port
    assert stats["broker"]["alternates"] == [redact_url(direct)]
    assert stats["broker"]["failover_strategy"] == "round-robin"
    assert alive
    assert figures["lost"] == 0
    assert figures["unfinished"] == 0


# ---- shared --------------------------------------------------------------------------


def send(client: Celeriac, number: int) -> str:
    result = client.send_task("faultproj.hold", (TASK_SECONDS,), retry=True)
    return result.id


def wait_until_stored(client: Celeriac, ids: list[str], timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = client.backend.get_many(ids)
        states = [found[task_id]["status"] if task_id in found else "PENDING" for task_id in ids]
        if all(state == SUCCESS for state in states) or time.monotonic() > deadline:
            return states
        time.sleep(0.2)


def outcome_figures(
    folder: Path, ids: list[str], sent_after: list[str], cut: float, states: list[str]
) -> dict[str, Any]:
    """Tasks done, lost (never ran), run twice, without a stored SUCCESS, and the seconds
    from the failover to the first run of a task sent after it."""
    times = run_times(folder)
    counts = runs(folder)
    later = [times[task_id][0] for task_id in sent_after if task_id in times]
    return {
        "done": sum(1 for task_id in ids if counts[task_id] > 0),
        "lost": sum(1 for task_id in ids if counts[task_id] == 0),
        "duplicates": sum(1 for task_id in ids if counts[task_id] > 1),
        "unfinished": sum(1 for state in states if state != SUCCESS),
        "resume_s": round(min(later) - cut, 2) if later else None,
    }


def summary(figures: dict[str, Any]) -> str:
    return (
        f"{figures['done']}/{TASKS} done, {figures['lost']} lost, "
        f"{figures['duplicates']} duplicates, {figures['unfinished']} results missing, "
        f"first task sent after the fault ran {figures['resume_s']} s after it began"
    )
