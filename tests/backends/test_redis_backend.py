"""The Redis result backend against a real server: Celery's keys and JSON, TTLs, pub/sub."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator

import pytest
import redis

from celeriac import Celeriac
from celeriac.backends import from_url
from celeriac.backends.base import BackendError, ChordPart
from celeriac.backends.redis import RedisBackend, task_key_prefix
from celeriac.exceptions import ImproperlyConfigured
from celeriac.protocol.result_meta import build_meta
from tests.backends.support import success_meta, wait_while_cut
from tests.servers import require

# A result a Celery 5.7 worker stored (celery-wire-captures.txt), byte for byte.
CELERY_SUCCESS_JSON = (
    '{"status": "SUCCESS", "result": 5, "traceback": null, "children": [], '
    '"date_done": "2026-11-21T19:01:45.865316+00:00", "name": "tasks.add", "args": [2, 3], '
    '"kwargs": {}, "worker": "w1@vm", "retries": 0, "queue": "celery", '
    '"task_id": "4c0aa0f9-b647-48bf-8a93-da31b2f0b56a"}'
)
CELERY_TASK_ID = "4c0aa0f9-b647-48bf-8a93-da31b2f0b56a"


@pytest.fixture
def server_url() -> str:
    return require("redis")


@pytest.fixture
def prefix(server_url: str) -> Iterator[str]:
    prefix = f"celeriac-test-{uuid.uuid4().hex}"
    yield prefix
    with redis.Redis.from_url(server_url) as client:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture
def client(server_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(server_url) as client:
        yield client


@pytest.fixture
def backend(server_url: str, prefix: str) -> Iterator[RedisBackend]:
    backend = RedisBackend(server_url, global_keyprefix=prefix)
    yield backend
    backend.close()


def test_result_is_stored_under_celerys_key_as_celerys_json(
    backend: RedisBackend, client: redis.Redis, prefix: str
) -> None:
    meta = build_meta(
        CELERY_TASK_ID,
        "SUCCESS",
        5,
        date_done="2026-11-21T19:01:45.865316+00:00",
        extended={
            "name": "tasks.add",
            "args": [2, 3],
            "kwargs": {},
            "worker": "w1@vm",
            "retries": 0,
            "queue": "celery",
        },
    )

    backend.store(CELERY_TASK_ID, meta)

    stored = client.get(f"{prefix}_celery-task-meta-{CELERY_TASK_ID}")
    assert stored == CELERY_SUCCESS_JSON.encode()


def test_result_celery_stored_is_read(
    backend: RedisBackend, client: redis.Redis, prefix: str
) -> None:
    client.set(f"{prefix}_celery-task-meta-{CELERY_TASK_ID}", CELERY_SUCCESS_JSON, ex=60)

    assert backend.get(CELERY_TASK_ID) == json.loads(CELERY_SUCCESS_JSON)


@pytest.mark.parametrize(
    ("global_keyprefix", "key_prefix"),
    [
        (None, "celery-task-meta-"),
        ("", "celery-task-meta-"),
        ("app", "app_celery-task-meta-"),
        ("app:", "app:celery-task-meta-"),
        ("app-", "app-celery-task-meta-"),
    ],
)
def test_global_keyprefix_is_joined_as_celery_joins_it(
    global_keyprefix: str | None, key_prefix: str
) -> None:
    assert task_key_prefix(global_keyprefix) == key_prefix


def test_global_keyprefix_may_come_from_the_url_query(
    server_url: str, prefix: str, client: redis.Redis
) -> None:
    backend = from_url(f"{server_url}?global_keyprefix={prefix}:")
    try:
        backend.store("task-1", success_meta("task-1"))
    finally:
        backend.close()

    assert client.exists(f"{prefix}:celery-task-meta-task-1") == 1


def test_key_ttl_is_result_expires(server_url: str, prefix: str, client: redis.Redis) -> None:
    backend = RedisBackend(server_url, global_keyprefix=prefix, expires=3600)
    try:
        backend.store("task-1", success_meta("task-1"))
    finally:
        backend.close()

    assert 3_590_000 < client.pttl(backend.key_for("task-1")) <= 3_600_000


@pytest.mark.parametrize("expires", [None, 0])
def test_key_without_expiry_has_no_ttl(
    server_url: str, prefix: str, client: redis.Redis, expires: float | None
) -> None:
    backend = RedisBackend(server_url, global_keyprefix=prefix, expires=expires)
    try:
        backend.store("task-1", success_meta("task-1"))
    finally:
        backend.close()

    assert client.ttl(backend.key_for("task-1")) == -1


def test_every_stored_state_is_published_on_the_keys_channel(
    backend: RedisBackend, client: redis.Redis
) -> None:
    key = backend.key_for("task-1")
    with client.pubsub() as pubsub:
        pubsub.subscribe(key)
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        started = build_meta("task-1", "STARTED", {"pid": 1, "hostname": "w@h"})

        backend.store("task-1", started)
        backend.store("task-1", success_meta("task-1"))

        published = [pubsub.get_message(timeout=5) for _ in range(2)]
    assert [json.loads(message["data"]) for message in published if message] == [
        started,
        success_meta("task-1"),
    ]


@pytest.mark.parametrize("stored", ["not json", '{"status": "SUCCESS", "result": NaN}'])
def test_a_stored_value_the_script_cannot_read_is_judged_in_python(
    backend: RedisBackend, client: redis.Redis, stored: str
) -> None:
    key = backend.key_for("task-1")
    client.set(key, stored)

    backend.store("task-1", build_meta("task-1", "FAILURE", ValueError("late")))

    body = client.get(key)
    assert isinstance(body, bytes)
    if stored.startswith("{"):
        assert body.decode() == stored
    else:
        assert json.loads(body)["status"] == "FAILURE"


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_concurrent_writers_never_overwrite_the_first_success(
    server_url: str, prefix: str, client: redis.Redis, serializer: str
) -> None:
    task_ids = [f"shared-{index}" for index in range(5)]
    writers = [
        RedisBackend(server_url, global_keyprefix=prefix, serializer=serializer) for _ in range(6)
    ]
    channels = {writers[0].key_for(task_id): task_id for task_id in task_ids}
    published: dict[str, list[str]] = {task_id: [] for task_id in task_ids}

    def write(writer: RedisBackend, name: str) -> None:
        for round_ in range(20):
            for task_id in task_ids:
                writer.store(task_id, build_meta(task_id, "STARTED", name))
                writer.store(task_id, success_meta(task_id, f"{name}-{round_}"))

    with client.pubsub() as pubsub:
        pubsub.subscribe(*channels)
        for _ in channels:
            pubsub.get_message(timeout=5)
        threads = [
            threading.Thread(target=write, args=(writer, f"writer-{index}"))
            for index, writer in enumerate(writers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        while (message := pubsub.get_message(timeout=0.5)) is not None:
            if message["type"] == "message":
                status = writers[0]._decode(message["data"])["status"]
                published[channels[message["channel"].decode()]].append(status)
    for writer in writers:
        writer.close()

    for task_id, statuses in published.items():
        assert statuses.count("SUCCESS") == 1, task_id
        assert statuses[-1] == "SUCCESS", task_id


def test_wait_subscribes_again_when_its_connection_is_killed(
    server_url: str, prefix: str, client: redis.Redis
) -> None:
    name = f"waiter-{uuid.uuid4().hex[:12]}"
    waiter = RedisBackend(server_url, global_keyprefix=prefix, client_name=name)
    writer = RedisBackend(server_url, global_keyprefix=prefix)

    def kill_subscription() -> bool:
        subscribed = [
            entry["id"]
            for entry in client.client_list()
            if entry["name"] == name and "P" in entry["flags"]
        ]
        if subscribed:
            client.client_kill_filter(_id=subscribed[0])
        return bool(subscribed)

    meta, waited = wait_while_cut(waiter, writer, kill_subscription)

    assert meta == success_meta("task-1")
    assert waited < 2.0


def test_waits_in_one_thread_share_one_subscriber_connection(
    server_url: str, prefix: str, client: redis.Redis
) -> None:
    name = f"waiter-{uuid.uuid4().hex[:12]}"
    waiter = RedisBackend(server_url, global_keyprefix=prefix, client_name=name)
    writer = RedisBackend(server_url, global_keyprefix=prefix)

    def connections() -> set[str]:
        return {entry["id"] for entry in client.client_list() if entry["name"] == name}

    try:
        seen: set[str] = set()
        for n in range(5):
            task_id = f"task-{n}"
            timer = threading.Timer(0.05, writer.store, (task_id, success_meta(task_id, n)))
            timer.start()
            assert waiter.wait(task_id, timeout=5.0, interval=30.0)["result"] == n
            timer.join()
            seen |= connections()
    finally:
        waiter.close()
        writer.close()

    # One connection for GET and one that stays subscribed between the waits.
    assert len(seen) == 2


def test_cleanup_leaves_expiry_to_redis(backend: RedisBackend) -> None:
    backend.store("task-1", success_meta("task-1"))

    assert backend.cleanup() == 0
    assert backend.get("task-1") == success_meta("task-1")


def test_unreachable_server_raises_backend_error_without_the_password() -> None:
    backend = from_url("redis://:s3cret@127.0.0.1:1/0", socket_connect_timeout=2)

    with pytest.raises(BackendError, match=r"redis://:\*\*\*\*@127\.0\.0\.1:1/0") as raised:
        backend.get("task-1")

    assert "s3cret" not in str(raised.value)


def test_unix_socket_url_names_the_socket_in_errors(tmp_path: object) -> None:
    backend = from_url("redis+socket:///nonexistent/redis.sock?virtual_host=2")

    with pytest.raises(BackendError, match=r"redis\.sock"):
        backend.store("task-1", success_meta("task-1"))


@pytest.mark.parametrize("url", ["redis+socket://", "redis+socket://host"])
def test_unix_socket_url_without_a_path_is_refused(url: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="names no socket"):
        from_url(url)


def test_tls_options_on_a_plain_url_are_refused(server_url: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=r"rediss://"):
        from_url(server_url, ssl_cert_reqs="CERT_REQUIRED")


# A group Celery 5.7's GroupResult.save stored (wire protocol §7.3), byte for byte.
CELERY_GROUP_JSON = b'{"result": [["g-1", null], [[["t-1", null], null], [["t-2", null], null]]]}'
GROUP_TUPLE = [["g-1", None], [[["t-1", None], None], [["t-2", None], None]]]


def test_group_is_saved_under_celerys_key_as_celerys_json_and_published(
    backend: RedisBackend, client: redis.Redis, prefix: str
) -> None:
    key = f"{prefix}_celery-taskset-meta-g-1"
    with client.pubsub() as pubsub:
        pubsub.subscribe(key)
        assert pubsub.get_message(timeout=5) is not None

        backend.save_group("g-1", GROUP_TUPLE)

        published = pubsub.get_message(timeout=5)
    assert client.get(key) == CELERY_GROUP_JSON
    assert 86000 < client.ttl(key) <= 86400
    assert published is not None
    assert published["data"] == CELERY_GROUP_JSON


def test_group_celery_saved_is_restored(
    backend: RedisBackend, client: redis.Redis, prefix: str
) -> None:
    client.set(f"{prefix}_celery-taskset-meta-g-1", CELERY_GROUP_JSON, ex=60)

    assert backend.restore_group("g-1") == GROUP_TUPLE


def test_chord_keys_are_celery_57s(backend: RedisBackend, client: redis.Redis, prefix: str) -> None:
    chord = f"{prefix}_celery-taskset-meta-g-1"
    backend.set_chord_size("g-1", 3)
    backend.add_to_chord("g-1")
    backend.chord_part_done("g-1", "t-0", 0, "SUCCESS", 5)
    backend.chord_part_done("g-1", "t-1", 1, "FAILURE", {"exc_type": "KeyError"})

    assert client.get(f"{chord}.s") == b"3"
    assert client.get(f"{chord}.t") == b"1"
    assert client.zrange(f"{chord}.j", 0, -1, withscores=True) == [
        (b'[1, "t-0", "SUCCESS", 5]', 0.0),
        (b'[1, "t-1", "FAILURE", {"exc_type": "KeyError"}]', 1.0),
    ]
    assert client.smembers(f"{chord}.d") == {b"t-0:0", b"t-1:1"}
    assert all(
        86000 < client.ttl(f"{chord}{suffix}") <= 86400 for suffix in (".s", ".j", ".d", ".t")
    )


def test_finished_chord_leaves_celerys_done_marker(
    backend: RedisBackend, client: redis.Redis, prefix: str
) -> None:
    chord = f"{prefix}_celery-taskset-meta-g-1"
    backend.set_chord_size("g-1", 1)
    claim = backend.chord_part_done("g-1", "t-0", 0, "SUCCESS", 5).claim
    assert claim is not None
    assert client.get(f"{chord}.c") == claim.encode()

    assert backend.finish_chord("g-1", claim)

    assert client.get(f"{chord}.c") == b"done"
    assert 290 < client.ttl(f"{chord}.c") <= 300
    assert not any(client.exists(f"{chord}{suffix}") for suffix in (".s", ".j", ".d", ".t"))


def celery_chord_part_done(
    client: redis.Redis,
    chord: str,
    task_id: str,
    group_index: int,
    result: object,
    *,
    ordered: bool = True,
) -> list[object]:
    """Record a header result exactly as a Celery 5.7 worker does, with Celery's own script.

    ``ordered=False`` is a worker with ``result_chord_ordered=False``.
    """
    celery_redis = pytest.importorskip("celery.backends.redis")
    script = client.register_script(celery_redis.CHORD_PART_RETURN_LUA)
    value = json.dumps([1, task_id, "SUCCESS", result])
    keys = [f"{chord}{suffix}" for suffix in (".j", ".t", ".s", ".d", "", ".c")]
    reply: list[object] = script(
        keys, [task_id, value, int(ordered), group_index, 86400, 86400, 6, uuid.uuid4().hex]
    )
    return reply


def test_celery_and_celeriac_workers_share_one_chord(
    backend: RedisBackend, client: redis.Redis, prefix: str
) -> None:
    chord = f"{prefix}_celery-taskset-meta-g-1"
    backend.set_chord_size("g-1", 4)
    celery_chord_part_done(client, chord, "t-2", 2, "from celery")
    backend.chord_part_done("g-1", "t-0", 0, "SUCCESS", "from celeriac")
    duplicate = celery_chord_part_done(client, chord, "t-0", 0, "again from celery")
    celery_chord_part_done(client, chord, "t-3", 3, "from celery")

    last = backend.chord_part_done("g-1", "t-1", 1, "SUCCESS", "from celeriac")

    assert duplicate[0] == 2
    assert last.must_fire
    assert last.results == ["from celeriac", "from celeriac", "from celery", "from celery"]


def test_celery_worker_claims_a_chord_celeriac_workers_started(
    backend: RedisBackend, client: redis.Redis, prefix: str
) -> None:
    chord = f"{prefix}_celery-taskset-meta-g-1"
    backend.set_chord_size("g-1", 2)
    backend.chord_part_done("g-1", "t-0", 0, "SUCCESS", 0)

    ready, _, size, claimed = celery_chord_part_done(client, chord, "t-1", 1, 1)
    redelivered = backend.chord_part_done("g-1", "t-1", 1, "SUCCESS", 1)

    assert (ready, size, claimed) == (2, b"2", 1)
    assert not redelivered.must_fire


@pytest.fixture
def unordered(server_url: str, prefix: str) -> Iterator[RedisBackend]:
    """A backend configured as Celery is with ``result_chord_ordered=False``."""
    backend = from_url(server_url, global_keyprefix=prefix, result_chord_ordered=False)
    assert isinstance(backend, RedisBackend)
    yield backend
    backend.close()


def test_the_option_reaches_the_backend_from_the_apps_transport_options(
    server_url: str, prefix: str
) -> None:
    app = Celeriac("unordered", backend=server_url, set_as_current=False)
    app.conf.result_backend_transport_options = {
        "global_keyprefix": prefix,
        "result_chord_ordered": False,
    }

    backend = app.backend

    assert isinstance(backend, RedisBackend)
    assert not backend.chord_ordered
    backend.close()


def test_unordered_chord_keys_are_celery_57s_list(
    unordered: RedisBackend, client: redis.Redis, prefix: str
) -> None:
    chord = f"{prefix}_celery-taskset-meta-g-1"
    unordered.set_chord_size("g-1", 3)
    unordered.add_to_chord("g-1")
    unordered.chord_part_done("g-1", "t-1", 1, "FAILURE", {"exc_type": "KeyError"})
    unordered.chord_part_done("g-1", "t-0", 0, "SUCCESS", 5)
    unordered.chord_part_done("g-1", "t-r", None, "SUCCESS", "replaced")

    assert client.type(f"{chord}.j") == b"list"
    assert client.lrange(f"{chord}.j", 0, -1) == [
        b'[1, "t-1", "FAILURE", {"exc_type": "KeyError"}]',
        b'[1, "t-0", "SUCCESS", 5]',
        b'[1, "t-r", "SUCCESS", "replaced"]',
    ]
    assert client.smembers(f"{chord}.d") == {b"t-1:1", b"t-0:0", b"t-r:+inf"}
    assert client.get(f"{chord}.s") == b"3"
    assert client.get(f"{chord}.t") == b"1"
    assert all(
        86000 < client.ttl(f"{chord}{suffix}") <= 86400 for suffix in (".s", ".j", ".d", ".t")
    )


def test_unordered_chord_hands_the_body_results_in_arrival_order(
    unordered: RedisBackend,
) -> None:
    error = {"exc_type": "ValueError", "exc_message": ["bad"], "exc_module": "builtins"}
    unordered.set_chord_size("g-1", 4)
    unordered.chord_part_done("g-1", "t-3", 3, "SUCCESS", 30)
    unordered.chord_part_done("g-1", "t-2", 2, "REVOKED", error)
    unordered.chord_part_done("g-1", "t-0", 0, "SUCCESS", 0)

    last = unordered.chord_part_done("g-1", "t-1", 1, "FAILURE", error)

    assert last.must_fire
    assert (last.ready, last.size) == (4, 4)
    assert last.results == [30, error, 0, error]
    assert [part.task_id for part in last.parts] == ["t-3", "t-2", "t-0", "t-1"]
    assert [part.group_index for part in last.parts] == [None] * 4
    assert last.first_failure == ChordPart("t-2", None, "REVOKED", error)


def test_unordered_chord_counts_a_duplicate_once_and_is_claimed_once(
    unordered: RedisBackend,
) -> None:
    unordered.set_chord_size("g-1", 3)
    first = unordered.chord_part_done("g-1", "t-0", 0, "SUCCESS", "first run")
    duplicate = unordered.chord_part_done("g-1", "t-0", 0, "SUCCESS", "second run")
    unordered.chord_part_done("g-1", "reused", 1, "SUCCESS", "a")

    last = unordered.chord_part_done("g-1", "reused", 2, "SUCCESS", "b")
    redelivered = unordered.chord_part_done("g-1", "reused", 2, "SUCCESS", "b")

    assert (first.ready, duplicate.ready) == (1, 1)
    assert not duplicate.must_fire
    assert last.must_fire
    assert last.results == ["first run", "a", "b"]
    assert not redelivered.must_fire
    assert redelivered.ready == 3


def test_unordered_chord_is_claimed_by_set_chord_size_when_every_part_came_first(
    unordered: RedisBackend,
) -> None:
    early = [
        unordered.chord_part_done("g-1", f"t-{index}", index, "SUCCESS", index) for index in (1, 0)
    ]

    progress = unordered.set_chord_size("g-1", 2)

    assert [part.must_fire for part in early] == [False, False]
    assert progress.must_fire
    assert progress.results == [1, 0]


def test_unordered_chord_waits_for_parts_added_to_it(unordered: RedisBackend) -> None:
    unordered.set_chord_size("g-1", 1)
    unordered.add_to_chord("g-1", 2)
    not_yet = [
        unordered.chord_part_done("g-1", f"t-{index}", index, "SUCCESS", index) for index in (0, 1)
    ]

    last = unordered.chord_part_done("g-1", "replacement", None, "SUCCESS", "late")

    assert [(progress.ready, progress.size, progress.must_fire) for progress in not_yet] == [
        (1, 3, False),
        (2, 3, False),
    ]
    assert last.must_fire
    assert last.results == [0, 1, "late"]


def test_finished_unordered_chord_is_cleaned_up_as_celerys(
    unordered: RedisBackend, client: redis.Redis, prefix: str
) -> None:
    chord = f"{prefix}_celery-taskset-meta-g-1"
    unordered.set_chord_size("g-1", 1)
    claim = unordered.chord_part_done("g-1", "t-0", 0, "SUCCESS", 0).claim
    assert claim is not None

    assert unordered.finish_chord("g-1", claim)
    late = unordered.chord_part_done("g-1", "t-0", 0, "SUCCESS", 0)

    assert client.get(f"{chord}.c") == b"done"
    assert not any(client.exists(f"{chord}{suffix}") for suffix in (".s", ".j", ".d", ".t"))
    assert late.is_finished
    unordered.set_chord_size("g-1", 1)
    rerun = unordered.chord_part_done("g-1", "t-0", 0, "SUCCESS", "again")
    assert rerun.results == ["again"]


def test_unordered_celery_and_celeriac_workers_share_one_chord(
    unordered: RedisBackend, client: redis.Redis, prefix: str
) -> None:
    chord = f"{prefix}_celery-taskset-meta-g-1"
    unordered.set_chord_size("g-1", 4)
    celery_chord_part_done(client, chord, "t-2", 2, "from celery", ordered=False)
    unordered.chord_part_done("g-1", "t-0", 0, "SUCCESS", "from celeriac")
    duplicate = celery_chord_part_done(client, chord, "t-0", 0, "again", ordered=False)
    celery_chord_part_done(client, chord, "t-3", 3, "from celery", ordered=False)

    last = unordered.chord_part_done("g-1", "t-1", 1, "SUCCESS", "from celeriac")

    assert duplicate[0] == 2
    assert last.must_fire
    assert [part.task_id for part in last.parts] == ["t-2", "t-0", "t-3", "t-1"]


def test_celery_worker_claims_and_reads_an_unordered_chord_celeriac_started(
    unordered: RedisBackend, client: redis.Redis, prefix: str, server_url: str
) -> None:
    celery = pytest.importorskip("celery")
    chord = f"{prefix}_celery-taskset-meta-g-1"
    unordered.set_chord_size("g-1", 2)
    unordered.chord_part_done("g-1", "t-1", 1, "SUCCESS", {"n": 1})

    ready, _, size, claimed = celery_chord_part_done(client, chord, "t-0", 0, 0, ordered=False)

    celery_app = celery.Celery(backend=server_url, set_as_current=False)
    celery_backend = celery_app.backend
    read = [
        celery_backend._unpack_chord_result(member, celery_backend.decode)
        for member in client.lrange(f"{chord}.j", 0, -1)
    ]
    assert (ready, size, claimed) == (2, b"2", 1)
    assert read == [{"n": 1}, 0]
    assert not unordered.chord_part_done("g-1", "t-0", 0, "SUCCESS", 0).must_fire


def test_workers_configured_apart_get_an_error_naming_the_option(
    backend: RedisBackend, unordered: RedisBackend
) -> None:
    unordered.set_chord_size("g-1", 2)
    unordered.chord_part_done("g-1", "t-0", 0, "SUCCESS", 0)

    with pytest.raises(BackendError, match="result_chord_ordered=True"):
        backend.chord_part_done("g-1", "t-1", 1, "SUCCESS", 1)
    with pytest.raises(BackendError, match="not a sorted set"):
        backend.set_chord_size("g-1", 3)

    # The refused calls wrote nothing: the chord still completes as its workers agree.
    last = unordered.chord_part_done("g-1", "t-1", 1, "SUCCESS", 1)
    assert last.must_fire
    assert last.results == [0, 1]
