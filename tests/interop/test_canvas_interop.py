"""Chains, groups and chords between Celery and celeriac, both ways (wire protocol §2.3-§7.3).

Each workflow runs for a Celery client with a celeriac worker and a celeriac client with a
Celery worker; Celery with Celery is the reference whose stored results the other two must
match, compared with every task id replaced by its role in the workflow.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
import redis

from tests.interop.conftest import InteropWorker, Servers

CROSS = [("celery", "celeriac"), ("celeriac", "celery")]
PAIRS = [*CROSS, ("celery", "celery")]
TIMEOUT = 15

pytestmark = pytest.mark.slow


@dataclass
class Pair:
    """A client app of one framework and a worker of the other (or the same)."""

    client_side: str
    client: Any
    worker: InteropWorker
    backend: str

    @property
    def canvas(self) -> ModuleType:
        """The client framework's package, for its chain, group, chord and xmap."""
        return importlib.import_module(self.client_side)

    @property
    def exceptions(self) -> ModuleType:
        """The client framework's exceptions module, for the errors its ``get()`` raises."""
        return importlib.import_module(f"{self.client_side}.exceptions")

    def sig(self, name: str, *args: Any, queue: str | None = None, **options: Any) -> Any:
        """A signature of ``interop.<name>`` routed to this pair's worker (or ``queue``)."""
        return self.client.signature(
            f"interop.{name}", args=args, queue=queue or self.worker.queue, **options
        )

    def stored(self, task_id: str) -> dict[str, Any]:
        """The task meta JSON the worker wrote for ``task_id``."""
        with redis.Redis.from_url(self.backend) as client:
            raw = client.get(f"celery-task-meta-{task_id}")
        assert raw is not None, task_id
        meta: dict[str, Any] = json.loads(raw)
        return meta


def make_pair(request: pytest.FixtureRequest, client_side: str, worker_side: str) -> Pair:
    client = request.getfixturevalue(f"{client_side}_client")
    worker = request.getfixturevalue(f"{worker_side}_worker")
    servers: Servers = request.getfixturevalue("servers")
    return Pair(client_side, client, worker, servers.backend)


def pair_id(sides: tuple[str, str]) -> str:
    return f"{sides[0]}-client-{sides[1]}-worker"


@pytest.fixture(params=PAIRS, ids=pair_id)
def pair(request: pytest.FixtureRequest) -> Pair:
    return make_pair(request, *request.param)


@pytest.fixture(params=CROSS, ids=pair_id)
def cross(request: pytest.FixtureRequest) -> Pair:
    return make_pair(request, *request.param)


@pytest.fixture
def reference(request: pytest.FixtureRequest) -> Pair:
    """Celery client and Celery worker: what the cross pairs must store."""
    return make_pair(request, "celery", "celery")


def normalized(meta: Mapping[str, Any], roles: Mapping[str, str]) -> dict[str, Any]:
    """``meta`` without the fields that differ per run or per worker, ids named by role.

    A traceback is cut to the name of its exception class: file paths differ, each
    framework names its own module, and the message is compared in ``result``.
    """
    skipped = ("date_done", "worker", "queue")
    text = json.dumps({key: value for key, value in meta.items() if key not in skipped})
    for task_id, role in roles.items():
        text = text.replace(task_id, role)
    result: dict[str, Any] = json.loads(text)
    if result.get("traceback"):
        last_line = result["traceback"].strip().splitlines()[-1]
        result["traceback"] = last_line.split(":", 1)[0].rsplit(".", 1)[-1]
    return result


def assert_same_meta(ours: Mapping[str, Any], celerys: Mapping[str, Any]) -> None:
    """Fields, their order and their values as Celery stored them, all differences at once."""
    differing = {
        key: (ours.get(key, "<missing>"), celerys.get(key, "<missing>"))
        for key in {*ours, *celerys}
        if ours.get(key, "<missing>") != celerys.get(key, "<missing>")
    }
    assert differing == {}, json.dumps(differing, indent=1, default=str)
    assert list(ours) == list(celerys)


def chord_keys(pair: Pair, group_id: str) -> dict[str, Any]:
    """The chord counter keys of ``group_id`` that still exist, with their values."""
    base = f"celery-taskset-meta-{group_id}"
    found: dict[str, Any] = {}
    with redis.Redis.from_url(pair.backend, decode_responses=True) as client:
        for suffix in (".j", ".s", ".t", ".d", ".c"):
            kind = client.type(base + suffix)
            if kind == "string":
                found[suffix] = client.get(base + suffix)
            elif kind != "none":
                found[suffix] = kind
    return found


def chord_finished(pair: Pair, group_id: str) -> dict[str, Any]:
    """The chord's counter keys once its cleanup ran (or what is left after the timeout).

    The body can be stored before the worker that fired it cleans the counter up, so a
    client that has the body's result may still see the keys for a moment.
    """
    deadline = time.monotonic() + TIMEOUT
    while (keys := chord_keys(pair, group_id)) != {".c": "done"} and time.monotonic() < deadline:
        time.sleep(0.05)
    return keys


def wait_for_key(pair: Pair, key: str) -> Any:
    deadline = time.monotonic() + TIMEOUT
    with redis.Redis.from_url(pair.backend) as client:
        while (raw := client.get(key)) is None:
            assert time.monotonic() < deadline, f"{key} never written"
            time.sleep(0.05)
    return json.loads(raw)


# chain


def run_chain(pair: Pair) -> list[dict[str, Any]]:
    """Send ``add(1, 2) | add(10) | add.si(100, 200)``; return its hops' stored metas."""
    workflow = pair.canvas.chain(
        pair.sig("add", 1, 2), pair.sig("add", 10), pair.sig("add", 100, 200, immutable=True)
    )
    result = workflow.apply_async()

    assert result.get(timeout=TIMEOUT) == 300
    hops = [result.parent.parent, result.parent, result]
    assert hops[0].parent is None
    assert [hop.get(timeout=TIMEOUT) for hop in hops] == [3, 13, 300]
    roles = {hop.id: f"hop{index}" for index, hop in enumerate(hops, 1)}
    return [normalized(pair.stored(hop.id), roles) for hop in hops]


def test_chain_of_three_stores_what_celery_stores(cross: Pair, reference: Pair) -> None:
    ours, celerys = run_chain(cross), run_chain(reference)

    for mine, theirs in zip(ours, celerys, strict=True):
        assert_same_meta(mine, theirs)


# group


def run_group(pair: Pair) -> list[dict[str, Any]]:
    """Send a group of five adds; return the members' stored metas."""
    result = pair.canvas.group(pair.sig("add", i, i) for i in range(5)).apply_async()

    assert result.get(timeout=TIMEOUT) == [0, 2, 4, 6, 8]
    metas = [pair.stored(member.id) for member in result.results]
    assert [meta["group_id"] for meta in metas] == [result.id] * 5
    roles = {result.id: "group"} | {m.id: f"member{i}" for i, m in enumerate(result.results)}
    return [normalized(meta, roles) for meta in metas]


def test_group_of_five_members_store_what_celery_stores(cross: Pair, reference: Pair) -> None:
    assert run_group(cross) == run_group(reference)


# chord


def run_chord(pair: Pair, header_queues: list[str], body_queue: str) -> dict[str, Any]:
    """Send a chord of ten adds (member i to ``header_queues[i % len]``) into ``tsum``.

    Checks the value and that the counter keys were cleaned up as Celery 5.7 does; returns
    the body's stored meta.
    """
    header = [pair.sig("add", i, i, queue=header_queues[i % len(header_queues)]) for i in range(10)]
    result = pair.canvas.chord(header)(pair.sig("tsum", queue=body_queue))

    assert result.get(timeout=TIMEOUT) == 90
    group_id = result.parent.id
    assert chord_finished(pair, group_id) == {".c": "done"}
    roles = {result.id: "body", group_id: "group"}
    roles |= {member.id: "header" for member in result.parent.results}
    return normalized(pair.stored(result.id), roles)


def test_chord_of_ten_fires_its_body_with_the_header_results(cross: Pair, reference: Pair) -> None:
    ours = run_chord(cross, [cross.worker.queue], cross.worker.queue)
    celerys = run_chord(reference, [reference.worker.queue], reference.worker.queue)

    assert_same_meta(ours, celerys)


MIXED = [
    ("celery", "celeriac", "celery"),
    ("celeriac", "celery", "celeriac"),
    ("celery", "both", "celeriac"),
    ("celeriac", "both", "celery"),
]


@pytest.mark.parametrize(
    ("client_side", "header_side", "body_side"),
    MIXED,
    ids=[f"{c}-client-header-on-{h}-body-on-{b}" for c, h, b in MIXED],
)
def test_chord_header_and_body_on_different_frameworks(
    request: pytest.FixtureRequest, client_side: str, header_side: str, body_side: str
) -> None:
    celery_queue = request.getfixturevalue("celery_worker").queue
    celeriac_queue = request.getfixturevalue("celeriac_worker").queue
    queues = {"celery": [celery_queue], "celeriac": [celeriac_queue]}
    queues["both"] = [celery_queue, celeriac_queue]
    pair = make_pair(request, client_side, body_side)

    body = run_chord(pair, queues[header_side], queues[body_side][0])

    assert body["status"] == "SUCCESS"
    assert body.get("group_id") == "group"
    assert body.get("parent_id") == "header"


def run_failing_chord(pair: Pair) -> dict[str, Any]:
    """A chord whose second header task fails: the body must fail with ChordError.

    ``get()`` raises the header task's own error first, as Celery's does: it looks at the
    parents (the header group) before the body. The chord counter keys are not checked:
    Celery 5.7 leaves ``.j``, ``.d`` and its claim in ``.c`` on this path until they expire.
    """
    header = [pair.sig("add", 1, 1), pair.sig("fail", "boom"), pair.sig("add", 2, 2)]
    result = pair.canvas.chord(header)(pair.sig("tsum"))

    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=TIMEOUT)
    with pytest.raises(pair.exceptions.ChordError, match="raised ValueError\\('boom'\\)"):
        result.get(timeout=TIMEOUT, follow_parents=False)
    assert result.state == "FAILURE"
    group_id = result.parent.id
    failed = result.parent.results[1].id
    roles = {result.id: "body", group_id: "group"}
    roles |= {member.id: "header" for member in result.parent.results} | {failed: "failed"}
    return normalized(pair.stored(result.id), roles)


def test_failed_header_task_fails_the_chord_body_with_chord_error(
    cross: Pair, reference: Pair
) -> None:
    ours, celerys = run_failing_chord(cross), run_failing_chord(reference)

    assert celerys["result"] == {
        "exc_type": "ChordError",
        "exc_message": ["Dependency failed raised ValueError('boom')"],
        "exc_module": "celery.exceptions",
    }
    assert_same_meta(ours, celerys)


# link_error


def run_errbacks(pair: Pair) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fail a task with an inline ``(request, exc, traceback)`` errback and a one-argument
    errback; return what the first was given and the second's stored meta."""
    legacy = pair.sig("echo")
    legacy_id = legacy.freeze().id
    result = pair.client.send_task(
        "interop.fail",
        ("boom",),
        queue=pair.worker.queue,
        link_error=[pair.sig("record_error"), legacy],
    )

    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=TIMEOUT)
    seen = wait_for_key(pair, f"interop-errback-{result.id}")
    assert pair.client.AsyncResult(legacy_id).get(timeout=TIMEOUT) == result.id
    meta = pair.stored(legacy_id)
    roles = {result.id: "failed", legacy_id: "errback"}
    if "group_id" in meta:
        roles[meta["group_id"]] = "group"
    return seen, normalized(meta, roles)


def test_errbacks_run_as_celery_runs_them(cross: Pair, reference: Pair) -> None:
    (seen, legacy), (celery_seen, celery_legacy) = run_errbacks(cross), run_errbacks(reference)

    assert seen == {**celery_seen, "id": seen["id"]}
    assert celery_seen["exc"] == "ValueError('boom')"
    assert celery_seen["args"] == ["boom"]
    assert celery_seen["traceback_tail"] == ["ValueError: boom"]
    assert_same_meta(legacy, celery_legacy)


# map, starmap, chunks


def test_map_and_starmap_run_as_the_builtin_tasks(pair: Pair) -> None:
    mapped = pair.canvas.xmap(pair.sig("tsum"), [[1, 2], [3, 4, 5]], queue=pair.worker.queue)
    starmapped = pair.canvas.xstarmap(pair.sig("add"), [(1, 2), (3, 4)], queue=pair.worker.queue)

    map_result, starmap_result = mapped.apply_async(), starmapped.apply_async()

    assert map_result.get(timeout=TIMEOUT) == [3, 12]
    assert starmap_result.get(timeout=TIMEOUT) == [3, 7]
    assert pair.stored(map_result.id)["name"] == "celery.map"
    assert pair.stored(starmap_result.id)["name"] == "celery.starmap"


def run_chunks(pair: Pair) -> dict[str, Any]:
    """Send ``celery.chunks`` by name, as a Celery client's ``chunks`` task travels."""
    items = [[i, i] for i in range(6)]
    result = pair.client.send_task(
        "celery.chunks",
        kwargs={"task": pair.sig("add"), "it": items, "n": 2},
        queue=pair.worker.queue,
    )

    result.get(timeout=TIMEOUT)
    children = pair.client.AsyncResult(result.id).children
    assert len(children) == 1, pair.stored(result.id)["children"]
    parts = children[0]
    assert parts.get(timeout=TIMEOUT) == [[0, 2], [4, 6], [8, 10]]
    roles = {result.id: "chunks", parts.id: "group", pair.worker.queue: "worker-queue"}
    roles |= {part.id: f"part{i}" for i, part in enumerate(parts.results)}
    return normalized(pair.stored(result.id), roles)


def test_chunks_task_sends_a_group_of_starmaps(cross: Pair, reference: Pair) -> None:
    ours, celerys = run_chunks(cross), run_chunks(reference)

    assert celerys["result"] == celerys["children"][0]
    assert_same_meta(ours, celerys)


# chord_unlock


def run_chord_unlock(pair: Pair, *header_calls: tuple[Any, ...]) -> tuple[dict[str, Any], int]:
    """Send a header group, then ``celery.chord_unlock`` by name as a Celery client does on a
    backend without native join; return the body's stored meta and how often it ran.

    The header is sent late, so the unlock has to retry before the body can be applied.
    """
    header = pair.canvas.group(pair.sig(name, *args) for name, *args in header_calls)
    header_result = header.apply_async(countdown=0.5)
    body = pair.sig("tally")
    body_id = body.freeze().id
    unlock = pair.client.send_task(
        "celery.chord_unlock",
        (header_result.id, body),
        {"result": [member.as_tuple() for member in header_result.results], "interval": 0.1},
        queue=pair.worker.queue,
    )

    pair.client.AsyncResult(body_id).get(timeout=TIMEOUT, propagate=False)
    time.sleep(0.3)
    with redis.Redis.from_url(pair.backend) as client:
        runs = int(client.get(f"interop-runs-{body_id}") or 0)
    roles = {body_id: "body", unlock.id: "unlock", header_result.id: "group"}
    roles |= {member.id: f"header{i}" for i, member in enumerate(header_result.results)}
    return normalized(pair.stored(body_id), roles), runs


def test_chord_unlock_applies_the_body_once_the_header_is_ready(
    cross: Pair, reference: Pair
) -> None:
    header = [("add", i, i) for i in range(4)]
    (ours, runs), (celerys, _) = (
        run_chord_unlock(cross, *header),
        run_chord_unlock(reference, *header),
    )

    assert runs == 1
    assert celerys["result"] == 12
    assert celerys["parent_id"] == "unlock"
    assert_same_meta(ours, celerys)


def test_chord_unlock_fails_the_body_when_a_header_task_failed(
    cross: Pair, reference: Pair
) -> None:
    header = [("add", 1, 1), ("fail", "boom")]
    (ours, runs), (celerys, _) = (
        run_chord_unlock(cross, *header),
        run_chord_unlock(reference, *header),
    )

    assert runs == 0
    assert celerys["result"] == {
        "exc_type": "ChordError",
        "exc_message": ["ValueError('boom')"],
        "exc_module": "celery.exceptions",
    }
    # Celery names the failed task only when its result is cached in the worker; either
    # wording is fine as long as the header's error ends it.
    assert ours["result"]["exc_message"][0].endswith("ValueError('boom')")
    assert_same_meta(ours, dict(celerys, result=dict(celerys["result"], **ours["result"])))
