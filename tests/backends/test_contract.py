"""The ResultBackend contract, run against every backend.

Each entry of ``BACKEND_URLS`` turns a test's temporary directory into a backend URL for
the test's duration (a context manager, so it can clean up); a backend that needs a server
adds one here that skips when the server is absent.
"""

from __future__ import annotations

import builtins
import datetime
import decimal
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from celeriac import states
from celeriac.backends import from_url
from celeriac.backends.base import ChordPart, ChordProgress, Meta, ResultBackend
from celeriac.backends.memory import MemoryBackend
from celeriac.exceptions import ContentDisallowed, ImproperlyConfigured, TimeoutError
from tests.processes import running
from tests.servers import delete_redis_keys, require


@contextmanager
def memory_url(tmp_path: Path) -> Iterator[str]:
    yield "memory://"


@contextmanager
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'results.db'}"


def _with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


@contextmanager
def redis_url(tmp_path: Path) -> Iterator[str]:
    """The Redis server, with a key prefix of the test's own; its keys are deleted after."""
    server_url = require("redis")
    prefix = f"celeriac-test-{uuid.uuid4().hex}"
    yield _with_query(server_url, f"global_keyprefix={prefix}")
    delete_redis_keys(server_url, prefix)


@contextmanager
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """The PostgreSQL server, in a schema of the test's own, dropped after."""
    server_url = require("postgres")
    schema = f"celeriac_test_{uuid.uuid4().hex}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    yield _with_query(server_url, f"options=-csearch_path%3D{schema}")
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


BACKEND_URLS: list[Callable[[Path], AbstractContextManager[str]]] = [
    memory_url,
    sqlite_url,
    redis_url,
    postgres_url,
]

OpenBackend = Callable[..., ResultBackend]


@pytest.fixture(params=BACKEND_URLS, ids=lambda make_url: make_url.__name__.removesuffix("_url"))
def open_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenBackend]:
    opened: list[ResultBackend] = []
    with request.param(tmp_path) as url:

        def open_(**options: Any) -> ResultBackend:
            backend = from_url(url, **options)
            opened.append(backend)
            return backend

        yield open_
        for backend in opened:
            backend.close()


@pytest.fixture
def backend(open_backend: OpenBackend) -> ResultBackend:
    return open_backend()


def success_meta(task_id: str, result: Any = 5) -> Meta:
    return {
        "status": "SUCCESS",
        "result": result,
        "traceback": None,
        "children": [],
        "date_done": "2026-11-21T19:01:45.865316+00:00",
        "task_id": task_id,
    }


def failure_meta(task_id: str) -> Meta:
    return {
        "status": "FAILURE",
        "result": {
            "exc_type": "ValueError",
            "exc_message": ["bad thing"],
            "exc_module": "builtins",
        },
        "traceback": "Traceback (most recent call last):\nValueError: bad thing\n",
        "children": [],
        "date_done": "2026-11-21T19:02:11.210660+00:00",
        "task_id": task_id,
    }


def unready_meta(task_id: str, status: str) -> Meta:
    return {
        "status": status,
        "result": {"pid": 14490, "hostname": "w2@vm"},
        "traceback": None,
        "children": [],
        "date_done": None,
        "task_id": task_id,
    }


@contextmanager
def storing_later(backend: ResultBackend, delay: float, *metas: Meta) -> Iterator[list[float]]:
    """Store ``metas`` from another thread after ``delay``; yield the times each store began."""
    started_at: list[float] = []

    def run() -> None:
        time.sleep(delay)
        for meta in metas:
            started_at.append(time.monotonic())
            backend.store(meta["task_id"], meta)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield started_at
    finally:
        thread.join(timeout=5.0)


def test_backend_built_from_url_satisfies_the_protocol(backend: ResultBackend) -> None:
    assert isinstance(backend, ResultBackend)


@pytest.mark.parametrize("make_meta", [success_meta, failure_meta])
def test_stored_meta_reads_back_unchanged(
    backend: ResultBackend, make_meta: Callable[[str], Meta]
) -> None:
    meta = make_meta("task-1")

    backend.store("task-1", meta)

    assert backend.get("task-1") == meta


def test_task_with_nothing_stored_reads_as_none(backend: ResultBackend) -> None:
    assert backend.get("never-stored") is None


@pytest.mark.parametrize("later_status", [states.RETRY, states.STARTED, states.FAILURE])
def test_stored_success_is_not_overwritten(backend: ResultBackend, later_status: str) -> None:
    backend.store("task-1", success_meta("task-1"))

    later = failure_meta("task-1") | {"status": later_status}
    backend.store("task-1", later)

    assert backend.get("task-1") == success_meta("task-1")


def test_unready_states_are_overwritten_by_each_later_state(backend: ResultBackend) -> None:
    backend.store("task-1", unready_meta("task-1", states.STARTED))
    backend.store("task-1", unready_meta("task-1", states.RETRY))
    assert backend.get("task-1") == unready_meta("task-1", states.RETRY)

    backend.store("task-1", failure_meta("task-1"))
    assert backend.get("task-1") == failure_meta("task-1")

    backend.store("task-1", success_meta("task-1"))
    assert backend.get("task-1") == success_meta("task-1")


def test_get_many_returns_the_stored_ids_only(backend: ResultBackend) -> None:
    backend.store("task-1", success_meta("task-1", 1))
    backend.store("task-2", failure_meta("task-2"))

    found = backend.get_many(["task-1", "missing", "task-2", "task-1"])

    assert found == {"task-1": success_meta("task-1", 1), "task-2": failure_meta("task-2")}


def test_get_many_reads_more_ids_than_one_sql_statement_takes(backend: ResultBackend) -> None:
    task_ids = [f"task-{index}" for index in range(2000)]
    for task_id in task_ids[::2]:
        backend.store(task_id, success_meta(task_id, task_id))

    found = backend.get_many(task_ids)

    assert sorted(found) == sorted(task_ids[::2])
    assert found["task-1998"]["result"] == "task-1998"


def test_get_many_of_no_ids_is_empty(backend: ResultBackend) -> None:
    assert backend.get_many([]) == {}


def test_forget_deletes_the_stored_result(backend: ResultBackend) -> None:
    backend.store("task-1", success_meta("task-1"))

    backend.forget("task-1")

    assert backend.get("task-1") is None
    backend.forget("task-1")


def test_results_read_as_missing_once_expired(open_backend: OpenBackend) -> None:
    backend = open_backend(expires=0.2)
    backend.store("task-1", success_meta("task-1"))
    assert backend.get("task-1") == success_meta("task-1")

    time.sleep(0.3)

    assert backend.get("task-1") is None
    assert backend.get_many(["task-1"]) == {}


def test_cleanup_deletes_expired_results_and_counts_them(open_backend: OpenBackend) -> None:
    backend = open_backend(expires=0.2)
    backend.store("old-1", success_meta("old-1"))
    backend.store("old-2", failure_meta("old-2"))
    time.sleep(0.3)
    backend.store("fresh", success_meta("fresh"))

    deleted = backend.cleanup()

    # Redis expires keys itself (the TTL), so its cleanup finds nothing left to delete.
    assert deleted == (0 if backend.url.startswith("redis") else 2)
    assert backend.get("old-1") is None
    assert backend.get("old-2") is None
    assert backend.cleanup() == 0
    assert backend.get("fresh") == success_meta("fresh")


@pytest.mark.parametrize("expires", [None, 0])
def test_results_without_expiry_are_kept_by_cleanup(
    open_backend: OpenBackend, expires: float | None
) -> None:
    backend = open_backend(expires=expires)
    backend.store("task-1", success_meta("task-1"))

    assert backend.cleanup() == 0
    assert backend.get("task-1") == success_meta("task-1")


def test_expired_success_may_be_replaced(open_backend: OpenBackend) -> None:
    backend = open_backend(expires=0.2)
    backend.store("task-1", success_meta("task-1"))
    time.sleep(0.3)

    backend.store("task-1", unready_meta("task-1", states.STARTED))

    assert backend.get("task-1") == unready_meta("task-1", states.STARTED)


def test_wait_returns_a_ready_result_at_once(backend: ResultBackend) -> None:
    backend.store("task-1", failure_meta("task-1"))

    assert backend.wait("task-1", timeout=1.0, interval=5.0) == failure_meta("task-1")


def test_wait_returns_promptly_when_another_thread_stores(backend: ResultBackend) -> None:
    with storing_later(backend, 0.2, success_meta("task-1")) as started_at:
        meta = backend.wait("task-1", timeout=5.0, interval=5.0)
        returned_at = time.monotonic()

    assert meta == success_meta("task-1")
    assert returned_at - started_at[0] < 0.1


def test_wait_sleeps_through_unready_states(backend: ResultBackend) -> None:
    later = [unready_meta("task-1", states.STARTED), unready_meta("task-1", states.RETRY)]
    with storing_later(backend, 0.1, *later, failure_meta("task-1")):
        meta = backend.wait("task-1", timeout=5.0, interval=5.0)

    assert meta == failure_meta("task-1")


def test_wait_times_out_with_celery_timeout_error(backend: ResultBackend) -> None:
    backend.store("task-1", unready_meta("task-1", states.STARTED))
    started = time.monotonic()

    with pytest.raises(TimeoutError, match=r"^The operation timed out\.$") as raised:
        backend.wait("task-1", timeout=0.2, interval=0.05)

    assert isinstance(raised.value, builtins.TimeoutError)
    assert 0.2 <= time.monotonic() - started < 2.0


def test_reader_refuses_content_types_it_does_not_accept(open_backend: OpenBackend) -> None:
    backend = open_backend(serializer="pickle", accept=["json"])
    backend.store("task-1", success_meta("task-1"))

    with pytest.raises(ContentDisallowed):
        backend.get("task-1")
    with pytest.raises(ContentDisallowed):
        backend.get_many(["task-1"])
    with pytest.raises(ContentDisallowed):
        backend.wait("task-1", timeout=1.0, interval=0.05)


def test_backend_reads_its_own_serializer_when_accept_is_not_given(
    open_backend: OpenBackend,
) -> None:
    backend = open_backend(serializer="pickle")
    meta = failure_meta("task-1") | {"result": ValueError("bad thing")}

    backend.store("task-1", meta)

    stored = backend.get("task-1")
    assert stored is not None
    assert isinstance(stored["result"], ValueError)
    assert stored["result"].args == ("bad thing",)


def test_values_json_cannot_express_natively_survive_a_round_trip(backend: ResultBackend) -> None:
    result = {
        "when": datetime.datetime(2026, 11, 21, 19, 1, 45, 865316, tzinfo=datetime.UTC),
        "amount": decimal.Decimal("10.25"),
        "id": uuid.UUID("4c0aa0f9-b647-48bf-8a93-da31b2f0b56a"),
    }

    backend.store("task-1", success_meta("task-1", result))

    stored = backend.get("task-1")
    assert stored is not None
    assert stored["result"] == result


def test_unknown_serializer_is_refused_at_construction(open_backend: OpenBackend) -> None:
    with pytest.raises(ImproperlyConfigured, match="nosuchcodec"):
        open_backend(serializer="nosuchcodec")


def test_scheme_from_an_entry_point_plugin_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist_info = tmp_path / "celeriac_plugin_example-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Name: celeriac-plugin-example\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[celeriac.backends]\nexample = celeriac.backends.memory:MemoryBackend\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    backend = from_url("example://results", expires=None)

    assert isinstance(backend, MemoryBackend)
    assert backend.url == "example://results"


def test_unknown_scheme_is_refused_with_the_scheme_named_and_password_hidden() -> None:
    with pytest.raises(ImproperlyConfigured, match="'nosuch'") as raised:
        from_url("nosuch://user:s3cret@localhost:1234/0")

    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "db+sqlite:///:memory:"])
def test_sqlite_url_without_a_file_is_refused(url: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="names no file"):
        from_url(url)


def test_sqlite_url_with_three_slashes_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    backend = from_url("db+sqlite:///relative.db")
    try:
        backend.store("task-1", success_meta("task-1"))
    finally:
        backend.close()

    assert (tmp_path / "relative.db").is_file()


WAITER = """
import json, sys, time
from celeriac.backends import from_url

backend = from_url(sys.argv[1])
print("waiting", flush=True)
meta = backend.wait(sys.argv[2], timeout=10.0, interval=30.0)
print(json.dumps({"woken_at": time.time(), "meta": meta}), flush=True)
"""


def test_waiter_in_another_process_is_woken_promptly_by_a_store(backend: ResultBackend) -> None:
    if backend.url.startswith("memory"):
        pytest.skip("the memory backend lives in one process")
    with running(WAITER, backend.url, "task-1", cwd=Path.cwd()) as waiter:
        assert waiter.stdout is not None
        assert waiter.stdout.readline() == "waiting\n"
        time.sleep(0.5)

        stored_at = time.time()
        backend.store("task-1", success_meta("task-1"))

        woken = json.loads(waiter.stdout.readline())
    assert woken["meta"] == success_meta("task-1")
    # Well under the 30 s poll interval: the store itself wakes the waiter.
    assert woken["woken_at"] - stored_at < 0.1


def group_tuple(group_id: str, *task_ids: str) -> list[Any]:
    return [[group_id, None], [[[task_id, None], None] for task_id in task_ids]]


def test_saved_group_restores_unchanged(backend: ResultBackend) -> None:
    backend.save_group("group-1", group_tuple("group-1", "task-1", "task-2"))

    assert backend.restore_group("group-1") == group_tuple("group-1", "task-1", "task-2")
    assert backend.restore_group("never-saved") is None


def test_saving_a_group_again_replaces_it(backend: ResultBackend) -> None:
    backend.save_group("group-1", group_tuple("group-1", "task-1"))

    backend.save_group("group-1", group_tuple("group-1", "task-2", "task-3"))

    assert backend.restore_group("group-1") == group_tuple("group-1", "task-2", "task-3")


def test_deleted_group_restores_as_none(backend: ResultBackend) -> None:
    backend.save_group("group-1", group_tuple("group-1", "task-1"))

    backend.delete_group("group-1")

    assert backend.restore_group("group-1") is None
    backend.delete_group("group-1")


def test_saved_group_expires_and_cleanup_deletes_it(open_backend: OpenBackend) -> None:
    backend = open_backend(expires=0.2)
    backend.save_group("group-1", group_tuple("group-1", "task-1"))
    time.sleep(0.3)

    assert backend.restore_group("group-1") is None
    assert backend.cleanup() == (0 if backend.url.startswith("redis") else 1)


def report_parts(
    backend: ResultBackend, group_id: str, count: int, *, state: str = states.SUCCESS
) -> list[ChordProgress]:
    return [
        backend.chord_part_done(group_id, f"task-{index}", index, state, index * 10)
        for index in range(count)
    ]


def test_chord_is_claimed_by_the_last_part_when_the_size_came_first(
    backend: ResultBackend,
) -> None:
    assert not backend.set_chord_size("group-1", 3).must_fire

    early = [
        backend.chord_part_done("group-1", "task-2", 2, states.SUCCESS, 20),
        backend.chord_part_done("group-1", "task-0", 0, states.SUCCESS, 0),
    ]
    last = backend.chord_part_done("group-1", "task-1", 1, states.SUCCESS, 10)

    assert [(progress.ready, progress.size, progress.must_fire) for progress in early] == [
        (1, 3, False),
        (2, 3, False),
    ]
    assert last.must_fire
    assert (last.ready, last.size) == (3, 3)
    assert last.results == [0, 10, 20]
    assert [part.task_id for part in last.parts] == ["task-0", "task-1", "task-2"]
    assert [part.group_index for part in last.parts] == [0, 1, 2]
    assert last.first_failure is None


def test_chord_is_claimed_by_set_chord_size_when_every_part_came_first(
    backend: ResultBackend,
) -> None:
    parts = report_parts(backend, "group-1", 3)

    progress = backend.set_chord_size("group-1", 3)

    assert not any(part.must_fire for part in parts)
    assert [part.size for part in parts] == [None, None, None]
    assert progress.must_fire
    assert progress.results == [0, 10, 20]


def test_duplicate_parts_are_counted_once(backend: ResultBackend) -> None:
    backend.set_chord_size("group-1", 2)
    first = backend.chord_part_done("group-1", "task-0", 0, states.SUCCESS, "first run")

    duplicate = backend.chord_part_done("group-1", "task-0", 0, states.SUCCESS, "second run")
    last = backend.chord_part_done("group-1", "task-1", 1, states.SUCCESS, "other")

    assert (first.ready, duplicate.ready) == (1, 1)
    assert not duplicate.must_fire
    assert last.must_fire
    assert last.results == ["first run", "other"]


def test_one_task_id_at_two_group_indexes_counts_twice(backend: ResultBackend) -> None:
    backend.set_chord_size("group-1", 2)

    backend.chord_part_done("group-1", "reused", 0, states.SUCCESS, "a")
    last = backend.chord_part_done("group-1", "reused", 1, states.SUCCESS, "b")

    assert last.must_fire
    assert last.results == ["a", "b"]


def test_completed_chord_is_claimed_once_while_the_claim_lasts(backend: ResultBackend) -> None:
    backend.set_chord_size("group-1", 1)
    claimed = backend.chord_part_done("group-1", "task-0", 0, states.SUCCESS, 0)

    redelivered = backend.chord_part_done("group-1", "task-0", 0, states.SUCCESS, 0)

    assert claimed.must_fire
    assert not redelivered.must_fire
    assert redelivered.ready == 1


def test_redelivered_part_claims_again_once_the_claim_ran_out(backend: ResultBackend) -> None:
    backend.set_chord_size("group-1", 1)
    lost = backend.chord_part_done("group-1", "task-0", 0, states.SUCCESS, 0, claim_expires=0.1)
    time.sleep(0.2)

    redelivered = backend.chord_part_done("group-1", "task-0", 0, states.SUCCESS, 0)

    assert lost.claim is not None
    assert redelivered.must_fire
    assert redelivered.claim != lost.claim
    assert not backend.finish_chord("group-1", lost.claim)
    assert redelivered.claim is not None
    assert backend.finish_chord("group-1", redelivered.claim)


def test_failed_part_is_reported_to_the_claimant(backend: ResultBackend) -> None:
    error = {"exc_type": "ValueError", "exc_message": ["bad"], "exc_module": "builtins"}
    backend.set_chord_size("group-1", 3)
    backend.chord_part_done("group-1", "task-2", 2, states.FAILURE, error)
    backend.chord_part_done("group-1", "task-1", 1, states.REVOKED, error)

    last = backend.chord_part_done("group-1", "task-0", 0, states.SUCCESS, 0)

    assert last.must_fire
    assert last.first_failure == ChordPart("task-1", 1, states.REVOKED, error)
    assert [part.has_failed for part in last.parts] == [False, True, True]


def test_add_to_chord_makes_the_chord_wait_for_more_parts(backend: ResultBackend) -> None:
    backend.set_chord_size("group-1", 2)
    backend.chord_part_done("group-1", "task-0", 0, states.SUCCESS, 0)
    backend.add_to_chord("group-1")
    backend.add_to_chord("group-1", 2)

    not_yet = report_parts(backend, "group-1", 4)
    last = backend.chord_part_done("group-1", "task-4", 4, states.SUCCESS, 40)

    assert [progress.must_fire for progress in not_yet] == [False] * 4
    assert not_yet[-1].size == 5
    assert last.must_fire
    assert last.results == [0, 10, 20, 30, 40]


def test_part_without_a_group_index_comes_last(backend: ResultBackend) -> None:
    backend.set_chord_size("group-1", 2)
    backend.chord_part_done("group-1", "replacement", None, states.SUCCESS, "late")

    last = backend.chord_part_done("group-1", "task-0", 0, states.SUCCESS, "first")

    assert last.results == ["first", "late"]
    assert [part.group_index for part in last.parts] == [0, None]


def test_finished_chord_ignores_late_parts_until_its_size_is_set_again(
    backend: ResultBackend,
) -> None:
    backend.set_chord_size("group-1", 1)
    claim = backend.chord_part_done("group-1", "task-0", 0, states.SUCCESS, 0).claim
    assert claim is not None

    assert backend.finish_chord("group-1", claim)
    late = backend.chord_part_done("group-1", "task-0", 0, states.SUCCESS, 0)
    assert late.is_finished
    assert not late.must_fire
    assert not backend.finish_chord("group-1", claim)

    backend.set_chord_size("group-1", 1)
    rerun = backend.chord_part_done("group-1", "task-0", 0, states.SUCCESS, "again")
    assert rerun.must_fire
    assert rerun.results == ["again"]


def test_finish_with_a_claim_that_never_held_the_chord_keeps_it(backend: ResultBackend) -> None:
    backend.set_chord_size("group-1", 2)
    backend.chord_part_done("group-1", "task-0", 0, states.SUCCESS, 0)

    assert not backend.finish_chord("group-1", "not-the-claim")
    last = backend.chord_part_done("group-1", "task-1", 1, states.SUCCESS, 10)

    assert last.results == [0, 10]


def test_empty_chord_is_claimed_by_set_chord_size(backend: ResultBackend) -> None:
    progress = backend.set_chord_size("group-1", 0)

    assert progress.must_fire
    assert progress.results == []


def test_chords_with_other_group_ids_are_counted_apart(backend: ResultBackend) -> None:
    backend.set_chord_size("group-1", 1)
    backend.set_chord_size("group-2", 2)

    other = backend.chord_part_done("group-2", "task-0", 0, states.SUCCESS, "two")
    mine = backend.chord_part_done("group-1", "task-0", 0, states.SUCCESS, "one")

    assert not other.must_fire
    assert mine.results == ["one"]


REPORTER = """
import json, sys
from celeriac.backends import from_url

url, worker, workers, chords, parts = sys.argv[1], *map(int, sys.argv[2:])
backend = from_url(url)
print("ready", flush=True)
sys.stdin.readline()
fired = []
for index in range(parts):
    for chord in range(chords):
        # Every part is reported by two workers, as a redelivery would.
        if index % workers in (worker, (worker + 1) % workers):
            group_id = f"chord-{chord}"
            progress = backend.chord_part_done(group_id, f"task-{index}", index, "SUCCESS", index)
            if progress.must_fire:
                fired.append([chord, progress.results])
                backend.finish_chord(group_id, progress.claim)
backend.close()
print(json.dumps(fired), flush=True)
"""


def test_concurrent_workers_fire_each_chord_exactly_once(
    backend: ResultBackend, tmp_path: Path
) -> None:
    workers, chords, parts = 4, 12, 16
    sizes_set_late = range(0, chords, 2)
    for chord in range(chords):
        if chord not in sizes_set_late:
            backend.set_chord_size(f"chord-{chord}", parts)

    fired = run_reporters(backend, tmp_path, workers, chords, parts, sizes_set_late)

    assert sorted(chord for chord, _ in fired) == list(range(chords))
    assert all(results == list(range(parts)) for _, results in fired)


def run_reporters(
    backend: ResultBackend,
    tmp_path: Path,
    workers: int,
    chords: int,
    parts: int,
    sizes_set_late: range,
) -> list[tuple[int, list[Any]]]:
    """Report every part from ``workers`` processes (threads for memory) at once.

    The sizes of ``sizes_set_late`` are set by this process while the parts arrive.
    Returns each claim made, by a worker or by ``set_chord_size``, with its results.
    """
    fired: list[tuple[int, list[Any]]] = []
    arguments = (workers, chords, parts)
    if backend.url.startswith("memory"):
        start = threading.Event()
        threads = [
            threading.Thread(
                target=report_in_thread, args=(backend, start, fired, worker, *arguments)
            )
            for worker in range(workers)
        ]
        for thread in threads:
            thread.start()
        start.set()
        fired += set_sizes(backend, sizes_set_late, parts)
        for thread in threads:
            thread.join(timeout=30)
        return fired
    with ExitStack() as stack:
        reporters = [
            stack.enter_context(
                running(REPORTER, backend.url, worker, *arguments, cwd=Path.cwd(), stdin=True)
            )
            for worker in range(workers)
        ]
        for reporter in reporters:
            assert reporter.stdout is not None
            assert reporter.stdout.readline() == "ready\n", reporter.communicate()
        for reporter in reporters:
            assert reporter.stdin is not None
            reporter.stdin.write("go\n")
            reporter.stdin.flush()
        fired += set_sizes(backend, sizes_set_late, parts)
        for reporter in reporters:
            output, errors = reporter.communicate(timeout=30)
            assert reporter.returncode == 0, errors
            fired += [(chord, results) for chord, results in json.loads(output)]
    return fired


def set_sizes(backend: ResultBackend, chords: range, size: int) -> list[tuple[int, list[Any]]]:
    fired = []
    for chord in chords:
        time.sleep(0.01)
        progress = backend.set_chord_size(f"chord-{chord}", size)
        if progress.must_fire:
            fired.append((chord, progress.results))
    return fired


def report_in_thread(
    backend: ResultBackend,
    start: threading.Event,
    fired: list[tuple[int, list[Any]]],
    worker: int,
    workers: int,
    chords: int,
    parts: int,
) -> None:
    start.wait(timeout=10)
    for index in range(parts):
        for chord in range(chords):
            if index % workers in (worker, (worker + 1) % workers):
                progress = backend.chord_part_done(
                    f"chord-{chord}", f"task-{index}", index, states.SUCCESS, index
                )
                if progress.claim is not None:
                    fired.append((chord, progress.results))
                    backend.finish_chord(f"chord-{chord}", progress.claim)
