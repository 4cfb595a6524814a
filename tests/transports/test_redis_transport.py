"""The Redis broker beyond the contract: heartbeats across real processes, key layout,
priorities, delivery counts, URLs and errors. Every test uses its own key prefix and
deletes its keys; every child is killed by PID when its test ends."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from redis.crc import key_slot

from celeriac.exceptions import ImproperlyConfigured
from celeriac.protocol.envelope import Envelope
from celeriac.transports import connect
from celeriac.transports.base import (
    DEAD_LETTER_QUEUE_HEADER,
    DEAD_LETTER_REASON_HEADER,
    Delivery,
    OutgoingMessage,
    TransportError,
    dead_letter_queue,
)
from celeriac.transports.redis import RedisTransport
from celeriac.transports.redis_keys import Tag, queue_keys
from tests.processes import running
from tests.servers import private_redis, require

OpenTransport = Callable[..., RedisTransport]

HOLDER = """
import json, sys, time
from celeriac.transports.redis import RedisTransport

url, prefix, lease_seconds, keep_extending = sys.argv[1:5]
transport = RedisTransport(url, global_keyprefix=prefix, lease_seconds=float(lease_seconds))
deliveries = transport.fetch(["tasks"], 100, 10.0)
bodies = [delivery.envelope.body.decode() for delivery in deliveries]
sys.stdout.write(json.dumps({"bodies": bodies, "leased_at": time.time()}) + "\\n")
sys.stdout.flush()
while True:
    if keep_extending == "yes":
        transport.extend_lease([delivery.tag for delivery in deliveries])
    time.sleep(float(lease_seconds) / 3)
"""

CONSUMER = """
import json, sys
from pathlib import Path
from celeriac.transports.redis import RedisTransport

url, prefix, stop_file = sys.argv[1], sys.argv[2], Path(sys.argv[3])
transport = RedisTransport(url, global_keyprefix=prefix)
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


@pytest.fixture
def url() -> str:
    return require("redis")


@pytest.fixture
def prefix(url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"test-{uuid.uuid4().hex}:"
    yield prefix
    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture
def open_transport(url: str, prefix: str) -> Iterator[OpenTransport]:
    """Open consumers on the test's prefix; all are closed after the test."""
    opened: list[RedisTransport] = []

    def open_one(**options: Any) -> RedisTransport:
        transport = RedisTransport(url, global_keyprefix=prefix, **options)
        opened.append(transport)
        return transport

    yield open_one
    for transport in reversed(opened):
        transport.close()


@pytest.fixture
def client(url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(url, decode_responses=True) as client:
        yield client


def read_json_line(process: subprocess.Popen[str]) -> Any:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, f"child {process.pid} wrote nothing"
    return json.loads(line)


def envelope(text: str) -> Envelope:
    return Envelope(body=text.encode(), headers={"id": text})


def bodies(deliveries: list[Delivery]) -> list[str]:
    return [delivery.envelope.body.decode() for delivery in deliveries]


def fetch_until(transport: RedisTransport, count: int, timeout: float) -> list[Delivery]:
    deliveries: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(deliveries) < count and (remaining := deadline - time.monotonic()) > 0:
        deliveries += transport.fetch(["tasks"], count - len(deliveries), remaining)
    return deliveries


@pytest.mark.slow
def test_messages_of_a_killed_consumer_go_to_another_once_its_heartbeat_ends(
    url: str, prefix: str, open_transport: OpenTransport, tmp_path: Path
) -> None:
    lease_seconds = 1.0
    survivor = open_transport(lease_seconds=30)
    survivor.publish_many([OutgoingMessage("tasks", envelope(f"m{n}")) for n in range(5)])

    with running(HOLDER, url, prefix, lease_seconds, "no", cwd=tmp_path) as holder:
        held = read_json_line(holder)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
    while_alive = survivor.fetch(["tasks"], 10, 0)
    recovered = fetch_until(survivor, 5, timeout=10)
    recovered_at = time.time()

    assert sorted(held["bodies"]) == [f"m{n}" for n in range(5)]
    assert while_alive == []
    assert sorted(bodies(recovered)) == held["bodies"]
    assert {delivery.delivery_count for delivery in recovered} == {2}
    assert recovered_at >= held["leased_at"] + lease_seconds - 0.05


@pytest.mark.slow
def test_a_consumer_that_keeps_extending_keeps_its_messages(
    url: str, prefix: str, open_transport: OpenTransport, tmp_path: Path
) -> None:
    lease_seconds = 0.6
    other = open_transport(lease_seconds=lease_seconds)
    other.publish("tasks", envelope("long task"))

    with running(HOLDER, url, prefix, lease_seconds, "yes", cwd=tmp_path) as holder:
        held = read_json_line(holder)
        taken = fetch_until(other, 1, timeout=lease_seconds * 5)
        assert holder.poll() is None, "the holder died"

    assert held["bodies"] == ["long task"]
    assert taken == []


@pytest.mark.slow
def test_each_message_is_delivered_exactly_once_across_processes(
    url: str, prefix: str, open_transport: OpenTransport, tmp_path: Path
) -> None:
    producer = open_transport()
    stop_file = tmp_path / "stop"
    expected = [f"m{n}" for n in range(600)]

    with (
        running(CONSUMER, url, prefix, stop_file, cwd=tmp_path) as first,
        running(CONSUMER, url, prefix, stop_file, cwd=tmp_path) as second,
    ):
        for start in range(0, len(expected), 50):
            chunk = expected[start : start + 50]
            producer.publish_many([OutgoingMessage("tasks", envelope(body)) for body in chunk])
        stop_file.touch()
        outputs = [child.communicate(timeout=30)[0] for child in (first, second)]

    received = [json.loads(line) for output in outputs for line in output.splitlines()]
    assert sorted(body for body, _ in received) == sorted(expected)
    assert {count for _, count in received} == {1}


def test_entries_of_a_consumer_without_any_heartbeat_are_found_by_the_sweep(
    open_transport: OpenTransport, client: redis.Redis, prefix: str
) -> None:
    lost = open_transport(lease_seconds=30)
    finder = open_transport(lease_seconds=30)
    lost.publish("tasks", envelope("orphan"))
    [held] = lost.fetch(["tasks"], 1, 1.0)
    keys = queue_keys(prefix, "tasks")
    client.zrem(keys.consumers, lost.consumer_id)
    client.delete(keys.sweep)

    [found] = finder.fetch(["tasks"], 1, 1.0)

    assert bodies([found]) == ["orphan"]
    assert found.delivery_count == 2
    lost.ack([held.tag])
    finder.ack([found.tag])
    assert finder.queue_size("tasks") == 0


def test_fetch_recreates_groups_when_the_streams_were_deleted(
    open_transport: OpenTransport, client: redis.Redis, prefix: str
) -> None:
    transport = open_transport()
    assert transport.fetch(["tasks"], 1, 0) == []
    client.delete(*client.scan_iter(match=f"{prefix}*"))

    waited = transport.fetch(["tasks"], 1, 0.2)
    transport.publish("tasks", envelope("after the flush"))

    assert waited == []
    assert bodies(transport.fetch(["tasks"], 1, 1.0)) == ["after the flush"]


def test_delayed_message_waits_in_a_sorted_set_until_its_eta(
    open_transport: OpenTransport, client: redis.Redis, prefix: str
) -> None:
    transport = open_transport()
    eta = time.time() + 0.5
    transport.publish("tasks", envelope("later"), priority=7, eta=eta)

    delayed = client.zcard(queue_keys(prefix, "tasks").delayed)
    early = transport.fetch(["tasks"], 1, 0.2)
    [due] = transport.fetch(["tasks"], 1, 3.0)

    assert delayed == 1
    assert early == []
    assert time.time() >= eta - 0.01
    assert bodies([due]) == ["later"]
    assert Tag.parse(due.tag).priority == 7
    assert client.zcard(queue_keys(prefix, "tasks").delayed) == 0


def test_past_eta_is_published_straight_to_the_stream(
    open_transport: OpenTransport, client: redis.Redis, prefix: str
) -> None:
    transport = open_transport()

    transport.publish("tasks", envelope("overdue"), eta=time.time() - 10)

    assert client.xlen(queue_keys(prefix, "tasks").stream(0)) == 1
    assert bodies(transport.fetch(["tasks"], 1, 0)) == ["overdue"]


def test_priorities_across_queues_come_out_highest_first(open_transport: OpenTransport) -> None:
    transport = open_transport()
    transport.publish_many(
        [
            OutgoingMessage("a", envelope("a0"), priority=0),
            OutgoingMessage("b", envelope("b9"), priority=9),
            OutgoingMessage("a", envelope("a5"), priority=5),
            OutgoingMessage("b", envelope("b-1"), priority=-1),
            OutgoingMessage("a", envelope("a9"), priority=9),
        ]
    )

    deliveries = transport.fetch(["a", "b"], 10, 1.0)

    received = bodies(deliveries)
    assert sorted(received[:2]) == ["a9", "b9"]
    assert received[2] == "a5"
    assert sorted(received[3:]) == ["a0", "b-1"]


def test_fetch_over_several_queues_does_not_favour_the_first(
    open_transport: OpenTransport,
) -> None:
    transport = open_transport()
    transport.publish_many(
        [OutgoingMessage(queue, envelope(f"{queue}{n}")) for queue in "ab" for n in range(10)]
    )

    firsts = [transport.fetch(["a", "b"], 1, 1.0)[0].queue for _ in range(10)]

    assert firsts.count("a") == firsts.count("b") == 5


def test_delivery_count_grows_with_each_requeue_then_dead_letter_keeps_the_message(
    open_transport: OpenTransport, client: redis.Redis, prefix: str
) -> None:
    transport = open_transport()
    transport.publish("tasks", envelope("poison"), priority=3)
    counts = []
    for _ in range(3):
        [delivery] = transport.fetch(["tasks"], 1, 1.0)
        counts.append(delivery.delivery_count)
        transport.reject([delivery.tag], requeue=True)
    [last] = transport.fetch(["tasks"], 1, 1.0)

    transport.dead_letter([last.tag], "delivered 4 times")

    assert counts == [1, 2, 3]
    assert last.delivery_count == 4
    assert transport.queue_size("tasks") == 0
    dead_keys = queue_keys(prefix, dead_letter_queue("tasks"))
    assert client.xlen(dead_keys.stream(3)) == 1
    [dead] = transport.fetch([dead_letter_queue("tasks")], 1, 1.0)
    assert dead.delivery_count == 1
    assert dead.envelope.headers[DEAD_LETTER_REASON_HEADER] == "delivered 4 times"
    assert dead.envelope.headers[DEAD_LETTER_QUEUE_HEADER] == "tasks"


def test_acked_messages_leave_no_entry_behind(
    open_transport: OpenTransport, client: redis.Redis, prefix: str
) -> None:
    transport = open_transport()
    transport.publish_many([OutgoingMessage("tasks", envelope(str(n))) for n in range(20)])

    deliveries = transport.fetch(["tasks"], 20, 1.0)
    transport.ack([delivery.tag for delivery in deliveries])

    stream = queue_keys(prefix, "tasks").stream(0)
    assert client.xlen(stream) == 0
    assert client.xpending(stream, "celeriac")["pending"] == 0


def test_one_ack_over_two_queues_settles_both(
    open_transport: OpenTransport, client: redis.Redis, prefix: str
) -> None:
    transport = open_transport()
    transport.publish_many(
        [OutgoingMessage(queue, envelope(queue)) for queue in ("tasks", "other", "tasks")]
    )
    deliveries = fetch_until(transport, 2, 2.0) + transport.fetch(["other"], 1, 2.0)

    transport.ack([delivery.tag for delivery in deliveries])

    for queue in ("tasks", "other"):
        stream = queue_keys(prefix, queue).stream(0)
        assert client.xlen(stream) == 0
        assert client.xpending(stream, "celeriac")["pending"] == 0


def test_a_stream_entry_that_is_not_an_envelope_is_dead_lettered(
    open_transport: OpenTransport, client: redis.Redis, prefix: str, caplog: Any
) -> None:
    transport = open_transport()
    transport.fetch(["tasks"], 1, 0)
    client.xadd(queue_keys(prefix, "tasks").stream(0), {"e": "not json"})
    transport.publish("tasks", envelope("fine"))

    deliveries = transport.fetch(["tasks"], 10, 1.0)

    assert bodies(deliveries) == ["fine"]
    assert transport.queue_size(dead_letter_queue("tasks")) == 1
    assert "is not an envelope" in caplog.text


def test_keys_of_a_queue_and_its_dead_letter_queue_share_one_hash_slot(
    open_transport: OpenTransport, client: redis.Redis, prefix: str
) -> None:
    transport = open_transport()
    transport.publish("tasks", envelope("now"))
    transport.publish("tasks", envelope("later"), eta=time.time() + 60)
    [delivery] = transport.fetch(["tasks"], 1, 1.0)
    transport.dead_letter([delivery.tag], "test")

    keys = sorted(client.scan_iter(match=f"{prefix}*"))

    assert f"{prefix}celeriac:{{tasks}}:p0" in keys
    assert f"{prefix}celeriac:{{tasks}}:delayed" in keys
    assert f"{prefix}celeriac:{{tasks}}.dead_letter:p0" in keys
    assert {key_slot(key.encode()) for key in keys} == {key_slot(b"tasks")}


def test_close_releases_leases_and_forgets_the_consumer(
    open_transport: OpenTransport, client: redis.Redis, prefix: str
) -> None:
    leaving = open_transport()
    leaving.publish("tasks", envelope("handed over"))
    leaving.fetch(["tasks"], 1, 1.0)
    keys = queue_keys(prefix, "tasks")

    leaving.close()

    assert client.zscore(keys.consumers, leaving.consumer_id) is None
    assert client.xinfo_consumers(keys.stream(0), "celeriac") == []
    assert leaving.queue_size("tasks") == 1


def test_purge_keeps_leased_messages(open_transport: OpenTransport) -> None:
    transport = open_transport()
    transport.publish_many([OutgoingMessage("tasks", envelope(str(n))) for n in range(3)])
    [leased] = transport.fetch(["tasks"], 1, 1.0)
    transport.publish("tasks", envelope("requeued later"))

    purged = transport.purge("tasks")
    transport.reject([leased.tag], requeue=True)

    assert purged == 3
    assert bodies(transport.fetch(["tasks"], 10, 1.0)) == ["0"]


def test_visibility_timeout_is_another_name_for_lease_seconds(
    open_transport: OpenTransport,
) -> None:
    assert open_transport(visibility_timeout=120).lease_seconds == 120.0
    assert open_transport().lease_seconds == 30.0


def test_refused_connection_is_a_transport_error_without_the_password() -> None:
    transport = connect(
        "redis://:hunter2@127.0.0.1:1/0", socket_connect_timeout=1.0, max_connections=2
    )

    with pytest.raises(TransportError) as raised:
        transport.publish("tasks", envelope("lost"))

    assert "hunter2" not in str(raised.value)
    assert "redis://:****@127.0.0.1:1/0" in str(raised.value)


def test_missing_unix_socket_is_a_transport_error(tmp_path: Path) -> None:
    transport = connect(f"redis+socket://{tmp_path}/missing.sock")

    with pytest.raises(TransportError, match=r"missing\.sock"):
        transport.queue_size("tasks")


def test_sentinel_needs_a_master_name_and_reports_unreachable_sentinels() -> None:
    with pytest.raises(ImproperlyConfigured, match="master_name"):
        connect("sentinel://127.0.0.1:1")

    transport = connect(
        "sentinel://:secret@127.0.0.1:1",
        master_name="mymaster",
        socket_connect_timeout=1.0,
    )
    with pytest.raises(TransportError) as raised:
        transport.publish("tasks", envelope("lost"))
    assert "secret" not in str(raised.value)


@pytest.mark.slow
def test_sentinel_url_reaches_the_master_the_sentinel_names(
    url: str, prefix: str, tmp_path: Path
) -> None:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    master = urlsplit(url)
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor themaster {master.hostname} {master.port or 6379} 1\n"
    )
    with subprocess.Popen(
        [server, str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as sentinel:
        try:
            wait_for_port(port, timeout=10)
            transport = connect(
                f"sentinel://127.0.0.1:{port};sentinel://127.0.0.1:1",
                master_name="themaster",
                global_keyprefix=prefix,
            )
            transport.publish("tasks", envelope("via sentinel"))
            deliveries = transport.fetch(["tasks"], 1, 2.0)
            transport.ack([delivery.tag for delivery in deliveries])
            transport.close()
        finally:
            os.kill(sentinel.pid, signal.SIGKILL)

    assert bodies(deliveries) == ["via sentinel"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_key_prefix_with_braces_is_refused(url: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="braces"):
        RedisTransport(url, global_keyprefix="{app}:")


def test_broadcasts_are_scoped_by_the_key_prefix(url: str, prefix: str) -> None:
    sender = RedisTransport(url, global_keyprefix=prefix)
    stranger = RedisTransport(url, global_keyprefix=f"other-{prefix}")
    mine = sender.subscribe("control")
    theirs = stranger.subscribe("control")
    try:
        sender.broadcast("control", envelope("ping"))

        assert bodies_of(mine.get(2.0)) == ["ping"]
        assert theirs.get(0.2) == []
    finally:
        sender.close()
        stranger.close()


def bodies_of(envelopes: list[Envelope]) -> list[str]:
    return [item.body.decode() for item in envelopes]


def test_entries_of_a_fetch_whose_reply_was_lost_are_delivered_after_the_failure(
    tmp_path: Path,
) -> None:
    with private_redis(tmp_path, appendonly=True) as server:
        transport = RedisTransport(server.url)
        for body in ("held", "lost", "next"):
            transport.publish("tasks", Envelope(body=body.encode()))
        [held] = transport.fetch(["tasks"], 1, 1.0)
        stream = queue_keys("", "tasks").stream(0)
        with redis.Redis.from_url(server.url) as raw:
            # What a fetch cut off after the server ran it leaves: an entry pending under
            # this consumer that the transport never handed out.
            raw.xreadgroup("celeriac", transport.consumer_id, {stream: ">"}, count=1)
        server.stop()
        with pytest.raises(TransportError):
            transport.fetch(["tasks"], 1, 0.1)
        server.start()

        [recovered] = transport.fetch(["tasks"], 5, 1.0)
        transport.ack([held.tag, recovered.tag])
        [after] = transport.fetch(["tasks"], 5, 1.0)
        transport.ack([after.tag])
        leftover = transport.fetch(["tasks"], 5, 0.2)
        transport.close()

    assert recovered.envelope.body == b"lost"
    assert recovered.delivery_count == 1
    assert after.envelope.body == b"next"
    assert leftover == []
