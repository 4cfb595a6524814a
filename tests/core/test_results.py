"""The result model: AsyncResult trees, ResultSet, GroupResult and EagerResult.

Each test that reads results runs against the memory, SQLite and Redis backends; a
"worker" is simulated by storing result metas from another thread or process.
"""

from __future__ import annotations

import io
import json
import pickle
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac, Task, states
from celeriac.backends.base import Meta
from celeriac.current import task_running
from celeriac.exceptions import IncompleteStream, OperationalError, TimeoutError
from celeriac.protocol.result_meta import build_meta
from celeriac.result import AsyncResult, EagerResult, GroupResult, ResultSet, result_from_tuple
from tests.processes import running
from tests.servers import delete_redis_keys, require


@pytest.fixture(params=["memory", "sqlite", "redis"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A private result store of each kind; the Redis one keeps its keys under a prefix."""
    if request.param == "memory":
        yield f"memory://{uuid.uuid4().hex}"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'results.db'}"
    else:
        server_url = require("redis")
        prefix = f"celeriac-test-{uuid.uuid4().hex}"
        yield f"{server_url}{'&' if '?' in server_url else '?'}global_keyprefix={prefix}"
        delete_redis_keys(server_url, prefix)


@pytest.fixture
def app(backend_url: str) -> Iterator[Celeriac]:
    application = Celeriac("proj", broker=f"memory://{uuid.uuid4().hex}", backend=backend_url)
    yield application
    application.close()


@pytest.fixture
def memory_app() -> Iterator[Celeriac]:
    name = uuid.uuid4().hex
    application = Celeriac("proj", broker=f"memory://{name}", backend=f"memory://{name}")
    yield application
    application.close()


@pytest.fixture
def offline_app() -> Iterator[Celeriac]:
    """An app whose result store cannot be reached: any read from it fails."""
    application = Celeriac("proj", broker="memory://offline", backend="redis://127.0.0.1:1/0")
    yield application
    application.close()


def success(task_id: str, value: Any, children: list[Any] | None = None) -> Meta:
    return build_meta(task_id, states.SUCCESS, value, children=children)


def failure(task_id: str, exc: BaseException) -> Meta:
    return build_meta(task_id, states.FAILURE, exc, traceback="Traceback (most recent call last):")


@contextmanager
def storing_later(app: Celeriac, *steps: tuple[float, Meta]) -> Iterator[None]:
    """Store each meta from another thread, ``delay`` seconds after the block starts."""
    started = time.monotonic()

    def run() -> None:
        for delay, meta in steps:
            time.sleep(max(0.0, started + delay - time.monotonic()))
            app.store_meta(meta)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(timeout=10)


def group_of(app: Celeriac, *ids: str) -> GroupResult:
    return GroupResult(f"group-{uuid.uuid4().hex}", [app.AsyncResult(i) for i in ids], app=app)


# ---- joining -------------------------------------------------------------------------


JOINS: dict[str, Callable[..., list[Any]]] = {
    "get": GroupResult.get,
    "join": GroupResult.join,
    "join_native": GroupResult.join_native,
}


@pytest.mark.parametrize("join", JOINS.values(), ids=JOINS.keys())
def test_join_returns_values_in_member_order_whatever_order_they_finish(
    app: Celeriac, join: Callable[..., list[Any]]
) -> None:
    group = group_of(app, "a", "b", "c")
    app.store_meta(success("b", "B"))

    with storing_later(app, (0.2, success("c", "C")), (0.4, success("a", "A"))):
        values = join(group, timeout=10)

    assert values == ["A", "B", "C"]
    assert group.ready()


@pytest.mark.parametrize("join", JOINS.values(), ids=JOINS.keys())
def test_timeout_bounds_the_whole_join_not_each_member(
    app: Celeriac, join: Callable[..., list[Any]]
) -> None:
    group = group_of(app, "a", "b", "never")
    started = time.monotonic()

    with (
        storing_later(app, (0.5, success("a", 1)), (1.0, success("b", 2))),
        pytest.raises(TimeoutError),
    ):
        join(group, timeout=1.3, interval=0.1)

    elapsed = time.monotonic() - started
    assert 1.2 <= elapsed < 2.0


def test_members_already_stored_are_returned_with_no_time_left_to_wait(app: Celeriac) -> None:
    group = group_of(app, "a", "b")
    app.store_meta(success("a", 1))
    app.store_meta(success("b", 2))

    assert group.join_native(timeout=0) == [1, 2]


@pytest.mark.parametrize("join", JOINS.values(), ids=JOINS.keys())
def test_propagate_raises_the_first_failure_in_member_order(
    app: Celeriac, join: Callable[..., list[Any]]
) -> None:
    group = group_of(app, "ok", "first", "second")
    app.store_meta(failure("second", ValueError("stored first, later member")))
    app.store_meta(success("ok", 1))

    with (
        storing_later(app, (0.3, failure("first", KeyError("first member")))),
        pytest.raises(KeyError, match="first member"),
    ):
        join(group, timeout=10)


def test_without_propagate_failures_are_returned_as_exceptions(app: Celeriac) -> None:
    group = group_of(app, "ok", "bad")
    app.store_meta(success("ok", 1))
    app.store_meta(failure("bad", ValueError("no")))

    ok, bad = group.join(timeout=5, propagate=False)

    assert ok == 1
    assert isinstance(bad, ValueError)
    assert bad.args == ("no",)
    with pytest.raises(ValueError, match="no"):
        group.maybe_throw()


def test_callback_receives_each_member_in_order_instead_of_the_list(app: Celeriac) -> None:
    group = group_of(app, "a", "b")
    app.store_meta(success("b", 2))
    app.store_meta(success("a", 1))
    seen: list[tuple[str, Any]] = []

    values = group.join_native(
        timeout=5, callback=lambda task_id, value: seen.append((task_id, value))
    )

    assert values == []
    assert seen == [("a", 1), ("b", 2)]


@pytest.mark.parametrize("join", JOINS.values(), ids=JOINS.keys())
def test_nested_group_joins_to_a_nested_list(app: Celeriac, join: Callable[..., list[Any]]) -> None:
    inner = group_of(app, "i1", "i2")
    outer = GroupResult("outer", [app.AsyncResult("a"), inner, app.AsyncResult("b")], app=app)

    with storing_later(
        app,
        (0.1, success("i2", "I2")),
        (0.2, success("b", "B")),
        (0.3, success("a", "A")),
        (0.4, success("i1", "I1")),
    ):
        assert join(outer, timeout=10) == ["A", ["I1", "I2"], "B"]

    assert outer.completed_count() == 3
    assert outer.successful()


@pytest.mark.parametrize("backend_url", ["sqlite", "redis"], indirect=True)
def test_join_sees_results_stored_by_another_process(
    backend_url: str, app: Celeriac, tmp_path: Path
) -> None:
    worker = (
        "import sys, time\n"
        "from celeriac import Celeriac\n"
        "from celeriac.protocol.result_meta import build_meta\n"
        "app = Celeriac('worker', broker='memory://', backend=sys.argv[1])\n"
        "time.sleep(0.3)\n"
        "for task_id in reversed(sys.argv[2:]):\n"
        "    app.store_meta(build_meta(task_id, 'SUCCESS', task_id.upper()))\n"
    )
    group = group_of(app, "x", "y", "z")

    with running(worker, backend_url, "x", "y", "z", cwd=tmp_path):
        values = group.get(timeout=20)

    assert values == ["X", "Y", "Z"]


# ---- state of a set ------------------------------------------------------------------


def test_state_checks_follow_the_members(app: Celeriac) -> None:
    group = group_of(app, "a", "b", "c")

    assert (group.completed_count(), group.ready(), group.waiting()) == (0, False, True)
    assert not group.successful()
    assert not group.failed()

    app.store_meta(build_meta("a", states.STARTED, {"pid": 1, "hostname": "w@h"}))
    app.store_meta(success("b", 2))
    assert (group.completed_count(), group.ready(), group.waiting()) == (1, False, True)

    app.store_meta(success("a", 1))
    app.store_meta(failure("c", RuntimeError("boom")))
    assert (group.completed_count(), group.ready(), group.waiting()) == (2, True, False)
    assert group.failed()
    assert not group.successful()


def test_forget_deletes_every_member_result(app: Celeriac) -> None:
    group = group_of(app, "a", "b")
    app.store_meta(success("a", 1))
    app.store_meta(success("b", 2))

    group.forget()

    assert [app.AsyncResult(i).state for i in ("a", "b")] == [states.PENDING, states.PENDING]


def test_result_set_behaves_as_a_list_of_unique_results(memory_app: Celeriac) -> None:
    app = memory_app
    a, b, c = (app.AsyncResult(i) for i in "abc")
    results = ResultSet([a], app=app)

    results.add(b)
    results.add(a)
    results.update([b, c])

    assert results.results == [a, b, c]
    assert len(results) == 3
    assert list(results) == [a, b, c]
    assert results[1] is b
    assert results == ResultSet([a, b, c])
    assert results.supports_native_join
    assert results.app is app
    assert results.backend is app.backend
    assert repr(results) == "<ResultSet: [a, b, c]>"

    results.remove("b")
    results.discard(c)
    results.discard("missing")
    assert results.results == [a]
    with pytest.raises(KeyError):
        results.remove("missing")
    results.clear()
    assert len(results) == 0


# ---- GroupResult ---------------------------------------------------------------------


def test_group_tuple_is_celerys_json_shape() -> None:
    group = GroupResult("g-1", [AsyncResult("t-1"), AsyncResult("t-2")])

    assert json.dumps(group.as_tuple()) == (
        '[["g-1", null], [[["t-1", null], null], [["t-2", null], null]]]'
    )
    assert result_from_tuple(json.loads(json.dumps(group.as_tuple()))) == group


def test_saved_group_restores_with_its_members_and_deletes(app: Celeriac) -> None:
    inner = GroupResult("inner", [app.AsyncResult("i1")], app=app)
    group = GroupResult(
        "g-1", [app.AsyncResult("a"), inner], parent=app.AsyncResult("before"), app=app
    )
    app.store_meta(success("a", 1))
    app.store_meta(success("i1", 2))

    group.save()
    restored = GroupResult.restore("g-1", app=app)

    assert restored == group
    assert restored is not None
    assert restored.parent == app.AsyncResult("before")
    assert isinstance(restored.results[1], GroupResult)
    assert restored.get(timeout=5) == [1, [2]]

    group.delete()
    assert GroupResult.restore("g-1", app=app) is None


def test_restore_with_an_explicit_backend_reads_members_from_it(app: Celeriac) -> None:
    group = group_of(app, "a")
    app.store_meta(success("a", "A"))
    group.save(backend=app.backend)

    restored = GroupResult.restore(group.id, backend=app.backend)

    assert restored is not None
    assert restored.backend is app.backend
    assert restored.join(timeout=5) == ["A"]


def test_group_result_equality_repr_and_children() -> None:
    a: AsyncResult[Any] = AsyncResult("a")
    b: AsyncResult[Any] = AsyncResult("b")
    group = GroupResult("g", [a, b])

    assert group == GroupResult("g", [a, b])
    assert group != GroupResult("g", [a])
    assert group != GroupResult("other", [a, b])
    assert group == "g"
    assert group.children == [a, b]
    assert repr(group) == "<GroupResult: g [a, b]>"
    assert GroupResult(results=[a]).id != GroupResult(results=[a]).id


def test_results_survive_pickling(memory_app: Celeriac) -> None:
    chained: AsyncResult[Any] = AsyncResult(
        "c", parent=GroupResult("g", [AsyncResult("a")], parent=AsyncResult("r"))
    )
    nested = GroupResult("outer", [AsyncResult("x"), GroupResult("inner", [AsyncResult("y")])])
    eager: EagerResult[int] = EagerResult(
        "e2", 4, states.SUCCESS, name="t", parent=EagerResult("e1", 2, states.SUCCESS)
    )

    for result in (chained, nested):
        copy = pickle.loads(pickle.dumps(result))
        assert copy == result
        assert copy.as_tuple() == result.as_tuple()
    results = ResultSet([AsyncResult("s")], app=memory_app)
    assert pickle.loads(pickle.dumps(results)) == results
    eager_copy = pickle.loads(pickle.dumps(eager))
    assert (eager_copy.get(), eager_copy.name, eager_copy.parent.get()) == (4, "t", 2)


# ---- trees of results ----------------------------------------------------------------


def store_chain(app: Celeriac) -> AsyncResult[Any]:
    """Store a three-hop chain as workers record it; return the client's handle on the last hop."""
    app.store_meta(success("hop-1", 1, children=[[["hop-2", None], None]]))
    app.store_meta(success("hop-2", 2, children=[[["hop-3", None], None]]))
    app.store_meta(success("hop-3", 3))
    first = app.AsyncResult("hop-1")
    return app.AsyncResult("hop-3", parent=app.AsyncResult("hop-2", parent=first))


def test_collect_and_get_leaf_walk_the_children_of_a_chain(app: Celeriac) -> None:
    last = store_chain(app)
    root = last.parent.parent if last.parent is not None else None
    assert isinstance(root, AsyncResult)

    assert [(result.id, value) for result, value in root.collect(timeout=5)] == [
        ("hop-1", 1),
        ("hop-2", 2),
        ("hop-3", 3),
    ]
    assert root.get_leaf() == 3
    assert [(p and p.id, node.id) for p, node in root.iterdeps()] == [
        (None, "hop-1"),
        ("hop-1", "hop-2"),
        ("hop-2", "hop-3"),
    ]


def test_as_tuple_nests_the_parents(app: Celeriac) -> None:
    last = store_chain(app)

    assert json.dumps(last.as_tuple()) == (
        '[["hop-3", [["hop-2", [["hop-1", null], null]], null]], null]'
    )
    rebuilt = result_from_tuple(json.loads(json.dumps(last.as_tuple())), app)
    assert rebuilt == last
    assert rebuilt.as_tuple() == result_from_tuple(last.as_tuple()).as_tuple()
    assert json.dumps(rebuilt.as_tuple()) == json.dumps(last.as_tuple())


def test_graph_has_an_edge_from_each_result_to_its_children(app: Celeriac) -> None:
    root = app.AsyncResult("hop-1")
    last = store_chain(app)

    graph = root.graph
    dot = io.StringIO()
    graph.to_dot(dot)

    assert len(graph) == 3
    assert list(graph) == ["hop-1", "hop-2", "hop-3"]
    assert graph[root] == ["hop-2"]
    assert graph[last] == []
    assert root in graph
    assert dot.getvalue() == (
        "digraph dependencies {\n"
        '    n0 [label="hop-1"];\n'
        '    n1 [label="hop-2"];\n'
        '    n2 [label="hop-3"];\n'
        "    n0 -> n1;\n"
        "    n1 -> n2;\n"
        "}\n"
    )


def test_iterdeps_stops_at_an_unfinished_result_unless_intermediate(app: Celeriac) -> None:
    app.store_meta(success("hop-1", 1, children=[[["hop-2", None], None]]))
    root = app.AsyncResult("hop-1")

    with pytest.raises(IncompleteStream):
        list(root.iterdeps())
    assert [node.id for _, node in root.iterdeps(intermediate=True)] == ["hop-1", "hop-2"]
    assert len(root.build_graph(intermediate=True)) == 2


def test_children_stored_as_group_tuples_become_group_results(app: Celeriac) -> None:
    group_tuple = [["g", None], [[["t1", None], None], [["t2", None], None]]]
    app.store_meta(success("parent", None, children=[group_tuple, [["t3", None], None]]))
    app.store_meta(success("t1", 1))
    app.store_meta(success("t2", 2))
    app.store_meta(success("t3", 3))
    result = app.AsyncResult("parent")

    group, single = result.children

    assert isinstance(group, GroupResult)
    assert group.id == "g"
    assert group.results == ["t1", "t2"]
    assert type(single) is AsyncResult
    assert [(node.id, value) for node, value in result.collect()] == [
        ("parent", None),
        ("g", [1, 2]),
        ("t3", 3),
        ("t1", 1),
        ("t2", 2),
    ]


def test_get_raises_the_first_failure_along_the_parents(app: Celeriac) -> None:
    app.store_meta(failure("hop-1", ValueError("first hop")))
    app.store_meta(success("hop-2", 2))
    app.store_meta(success("hop-3", 3))
    last = app.AsyncResult(
        "hop-3", parent=app.AsyncResult("hop-2", parent=app.AsyncResult("hop-1"))
    )

    with pytest.raises(ValueError, match="first hop"):
        last.get(timeout=5)
    assert last.get(timeout=5, follow_parents=False) == 3


def test_ignored_result_gets_none_without_waiting() -> None:
    result: AsyncResult[int] = AsyncResult("never-stored")
    result.ignored = True

    assert result.get(timeout=0) is None


def test_result_from_tuple_reads_both_forms_and_passes_results_through() -> None:
    single = result_from_tuple([["t", [["p", None], None]], None])
    group = result_from_tuple([["g", None], [[["t", None], None]]])

    assert type(single) is AsyncResult
    assert single.parent == "p"
    assert isinstance(group, GroupResult)
    assert group.results == ["t"]
    assert result_from_tuple(group) is group
    assert result_from_tuple(single) is single


# ---- eager results and running tasks -------------------------------------------------


def test_group_of_eager_results_joins_without_any_backend(offline_app: Celeriac) -> None:
    unreachable = offline_app
    first: EagerResult[int] = EagerResult("e1", 1, states.SUCCESS, app=unreachable)
    second: EagerResult[int] = EagerResult("e2", 2, states.SUCCESS, app=unreachable, parent=first)
    failed: EagerResult[int] = EagerResult(
        "e3", ValueError("eager"), states.FAILURE, app=unreachable
    )
    group = GroupResult("g", [first, second, GroupResult("inner", [failed])], app=unreachable)

    assert group.join_native(propagate=False)[:2] == [1, 2]
    with pytest.raises(ValueError, match="eager"):
        group.get()
    assert (group.completed_count(), group.ready(), group.failed()) == (2, True, True)
    assert second.parent is first
    after_failure: EagerResult[int] = EagerResult(
        "e4", 4, states.SUCCESS, app=unreachable, parent=failed
    )
    with pytest.raises(ValueError, match="eager"):
        after_failure.get()
    assert after_failure.get(follow_parents=False) == 4
    assert [node.id for _, node in first.iterdeps()] == ["e1"]
    with pytest.raises(OperationalError):
        unreachable.AsyncResult("e1").ready()


@contextmanager
def running_in_a_worker(task: Task[Any, Any]) -> Iterator[None]:
    """Make ``task`` the current task with the request a worker gives it."""
    task.push_request(id="worker-request", called_directly=False)
    try:
        with task_running(task):
            yield
    finally:
        task.pop_request()


def test_waiting_inside_a_running_task_is_refused(app: Celeriac) -> None:
    @app.task
    def waits() -> None:
        return None

    app.store_meta(success("a", 1))
    group = group_of(app, "a")

    with running_in_a_worker(waits):
        for wait in (group.get, group.join, group.join_native, group.results[0].get):
            with pytest.raises(RuntimeError, match=r"Never call result\.get"):
                wait(timeout=1)
        assert group.get(timeout=1, disable_sync_subtasks=False) == [1]


def test_waiting_inside_an_eagerly_applied_task_is_allowed(app: Celeriac) -> None:
    app.store_meta(success("a", 1))

    @app.task
    def waits() -> list[Any]:
        return group_of(app, "a").get(timeout=1)

    assert waits.apply().get() == [1]
