"""The SQLite broker shared by real processes: exactly once, lease recovery after kill -9,
and cross-process wakeups. Every child is killed by PID when its test ends."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from celeriac.backends.sqlite import SQLiteBackend
from celeriac.protocol.envelope import Envelope
from celeriac.transports.base import Delivery, OutgoingMessage
from celeriac.transports.sqlite import SQLiteTransport
from celeriac.transports.wakeup import Wakeup
from tests.processes import run_forked, run_forked_repeatedly, running

PRODUCER = """
import sys
from celeriac.protocol.envelope import Envelope
from celeriac.transports.base import OutgoingMessage
from celeriac.transports.sqlite import SQLiteTransport

url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
transport = SQLiteTransport(url)
for start in range(0, count, 10):
    bodies = [f"{name}-{number}".encode() for number in range(start, min(start + 10, count))]
    if start % 20:
        transport.publish_many([OutgoingMessage("tasks", Envelope(body)) for body in bodies])
    else:
        for body in bodies:
            transport.publish("tasks", Envelope(body))
transport.close()
"""

CONSUMER = """
import json, sys
from pathlib import Path
from celeriac.transports.sqlite import SQLiteTransport

url, stop_file = sys.argv[1], Path(sys.argv[2])
transport = SQLiteTransport(url)
while True:
    stopping = stop_file.exists()
    deliveries = transport.fetch(["tasks"], 16, 0.2)
    if not deliveries and stopping:
        break
    for delivery in deliveries:
        sys.stdout.write(json.dumps([delivery.envelope.body.decode(), delivery.delivery_count]))
        sys.stdout.write("\\n")
    sys.stdout.flush()
    transport.ack([delivery.tag for delivery in deliveries])
transport.close()
"""

HOLDER = """
import json, sys, time
from celeriac.transports.sqlite import SQLiteTransport

transport = SQLiteTransport(sys.argv[1], lease_seconds=float(sys.argv[2]))
deliveries = transport.fetch(["tasks"], 100, 10.0)
leased_at = time.time()
bodies = [delivery.envelope.body.decode() for delivery in deliveries]
sys.stdout.write(json.dumps({"bodies": bodies, "leased_at": leased_at}) + "\\n")
sys.stdout.flush()
time.sleep(60)
"""

READER = """
import sqlite3, sys, time

connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN")
connection.execute("SELECT COUNT(*) FROM messages").fetchall()
sys.stdout.write("reading\\n")
sys.stdout.flush()
time.sleep(60)
"""

WAITER = """
import sys
from celeriac.transports.sqlite import SQLiteTransport

transport = SQLiteTransport(sys.argv[1], polling_interval=30.0)
deliveries = transport.fetch(["tasks"], 1, 30.0)
sys.stdout.write(",".join(delivery.envelope.body.decode() for delivery in deliveries) + "\\n")
sys.stdout.flush()
transport.close()
"""


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """Read one line the child writes, failing the test if none comes within ``timeout``."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            pytest.fail(f"child {process.pid} wrote nothing within {timeout} s")
    return process.stdout.readline()


def finish(process: subprocess.Popen[str], timeout: float) -> str:
    """Wait for the child to exit successfully and return its output."""
    output, errors = process.communicate(timeout=timeout)
    assert process.returncode == 0, errors
    return output


def fetch_until(transport: SQLiteTransport, count: int, timeout: float) -> list[Delivery]:
    deliveries: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(deliveries) < count and (remaining := deadline - time.monotonic()) > 0:
        deliveries += transport.fetch(["tasks"], count - len(deliveries), remaining)
    return deliveries


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/broker.db"


@pytest.mark.slow
def test_each_message_is_delivered_exactly_once_across_processes(url: str, tmp_path: Path) -> None:
    producers, per_producer = 3, 400
    stop_file = tmp_path / "stop"

    with ExitStack() as children:
        consumers = [
            children.enter_context(running(CONSUMER, url, stop_file, cwd=tmp_path))
            for _ in range(2)
        ]
        producing = [
            children.enter_context(running(PRODUCER, url, f"p{number}", per_producer, cwd=tmp_path))
            for number in range(producers)
        ]
        for producer in producing:
            finish(producer, timeout=30)
        stop_file.touch()
        outputs = [finish(consumer, timeout=30) for consumer in consumers]

    received = [json.loads(line) for output in outputs for line in output.splitlines()]
    expected = sorted(
        f"p{number}-{index}" for number in range(producers) for index in range(per_producer)
    )
    assert sorted(body for body, _ in received) == expected
    assert {count for _, count in received} == {1}
    assert all(output for output in outputs), "one consumer received nothing"


@pytest.mark.slow
def test_leases_of_a_killed_consumer_come_back_after_they_expire(url: str, tmp_path: Path) -> None:
    lease_seconds = 1.5
    survivor = SQLiteTransport(url, lease_seconds=30)
    try:
        for number in range(5):
            survivor.publish("tasks", Envelope(f"m{number}".encode()))

        with running(HOLDER, url, lease_seconds, cwd=tmp_path) as holder:
            held = json.loads(read_line(holder, timeout=20))
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(timeout=10)
        while_leased = survivor.fetch(["tasks"], 10, 0)
        recovered = fetch_until(survivor, 5, timeout=10)
        recovered_at = time.time()
    finally:
        survivor.close()

    assert sorted(held["bodies"]) == [f"m{number}" for number in range(5)]
    assert while_leased == []
    assert sorted(delivery.envelope.body.decode() for delivery in recovered) == held["bodies"]
    assert {delivery.delivery_count for delivery in recovered} == {2}
    assert recovered_at >= held["leased_at"] + lease_seconds - 0.05


@pytest.mark.slow
def test_fetch_blocked_in_another_process_wakes_promptly_on_publish(
    url: str, tmp_path: Path
) -> None:
    publisher = SQLiteTransport(url)
    sockets = Wakeup(tmp_path / "broker.db.wake").directory
    try:
        assert publisher.queue_size("tasks") == 0
        with running(WAITER, url, cwd=tmp_path) as waiter:
            deadline = time.monotonic() + 20
            while not (sockets.is_dir() and any(sockets.iterdir())):
                assert time.monotonic() < deadline, "the waiter never started listening"
                time.sleep(0.01)

            started = time.monotonic()
            publisher.publish("tasks", Envelope(b"wake up"))
            line = read_line(waiter, timeout=10)
            latency = time.monotonic() - started
            finish(waiter, timeout=10)
    finally:
        publisher.close()

    assert line.strip() == "wake up"
    assert latency < 0.1


LISTENER = """
import sys, time
from pathlib import Path
from celeriac.transports.wakeup import Wakeup

listener = Wakeup(Path(sys.argv[1])).listen()
sys.stdout.write("listening\\n")
sys.stdout.flush()
time.sleep(60)
"""


def test_notify_removes_the_socket_of_a_killed_listener(tmp_path: Path) -> None:
    wakeup = Wakeup(tmp_path / "store.wake")
    with running(LISTENER, tmp_path / "store.wake", cwd=tmp_path) as child:
        assert read_line(child, timeout=20) == "listening\n"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    with wakeup.listen() as alive:
        assert len(list(wakeup.directory.iterdir())) == 2

        wakeup.notify()

        assert alive.wait(1.0)
        assert list(wakeup.directory.iterdir()) == [alive.path]


def test_wakeup_beside_a_deep_path_uses_a_short_socket_directory(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["nested-directory"] * 8) / "broker.db.wake"

    wakeup = Wakeup(deep)
    with wakeup.listen() as listener:
        wakeup.notify()
        woken = listener.wait(1.0)

    assert woken
    assert wakeup.directory != deep
    assert len(os.fsencode(wakeup.directory)) < 60
    assert Wakeup(deep).directory == wakeup.directory


def test_transport_inherited_over_fork_uses_its_own_connection(url: str) -> None:
    transport = SQLiteTransport(url)

    def in_child() -> None:
        transport.publish("tasks", Envelope(b"from child"))
        leased = transport.fetch(["tasks"], 10, 1.0)
        transport.release([delivery.tag for delivery in leased])
        assert len(leased) == 2

    try:
        transport.publish("tasks", Envelope(b"from parent"))
        exit_code = run_forked(in_child, timeout=30)
        deliveries = fetch_until(transport, 2, timeout=5)
    finally:
        transport.close()

    assert exit_code == 0
    assert sorted(delivery.envelope.body for delivery in deliveries) == [
        b"from child",
        b"from parent",
    ]
    assert {delivery.delivery_count for delivery in deliveries} == {1}


def test_child_forked_while_another_thread_writes_can_write(url: str) -> None:
    # Regression: SQLite's per-process lock records and mutexes crossed the fork, so a
    # child forked during the thread's write saw the WAL write lock as taken for ever,
    # or waited for ever on a mutex nobody in the child would release. The busy timeout
    # is long because a thread writing without pause can hold SQLite's lock, which is
    # not fair, through a short one.
    transport = SQLiteTransport(url, busy_timeout=6.0)
    is_done, has_written = threading.Event(), threading.Event()

    def publish_until_done() -> None:
        # A batch is a transaction of several statements: the thread spends most of its
        # time inside one.
        batch = [OutgoingMessage("parent", Envelope(b"from parent"))] * 20
        while not is_done.is_set():
            transport.publish_many(batch)
            has_written.set()

    writer = threading.Thread(target=publish_until_done)
    writer.start()
    try:
        assert has_written.wait(timeout=10)
        exit_codes = run_forked_repeatedly(
            lambda number: transport.publish("child", Envelope(b"%d" % number)),
            times=20,
            timeout=10,
        )
    finally:
        is_done.set()
        writer.join(timeout=10)
    published = transport.queue_size("child")
    transport.close()

    assert exit_codes == [0] * 20
    assert published == 20


def test_a_read_transaction_held_open_elsewhere_blocks_no_writer(url: str, tmp_path: Path) -> None:
    # The embedded default: broker and result store in one file, both in WAL mode, where
    # readers never block writers; a short busy timeout turns any wait into a failure.
    transport = SQLiteTransport(url, busy_timeout=0.5)
    backend = SQLiteBackend(url, busy_timeout=0.5)
    transport.publish("tasks", Envelope(b"before"))
    with running(READER, str(tmp_path / "broker.db"), cwd=tmp_path) as reader:
        assert read_line(reader, timeout=20) == "reading\n"

        transport.publish_many([OutgoingMessage("tasks", Envelope(b"during"))] * 50)
        deliveries = fetch_until(transport, 51, timeout=5)
        transport.ack([delivery.tag for delivery in deliveries])
        backend.store("during", {"status": "SUCCESS", "result": 1, "task_id": "during"})
        remaining = transport.queue_size("tasks")
        stored = backend.get("during")
    transport.close()
    backend.close()

    assert len(deliveries) == 51
    assert remaining == 0
    assert stored is not None
