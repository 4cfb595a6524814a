"""The canvas (issue 5) as a Celery user writes it, on a real ``celeriac worker``.

Every test runs against one ``canvasproj`` worker per broker/result-store pair (SQLite
with SQLite; Redis and RabbitMQ brokers, each with Redis and PostgreSQL results), and,
where Celery's eager mode behaves the same, with ``task_always_eager`` in this process
and no worker: the expected values are the same in every mode. Tests of what only a
worker does (countdowns, add_to_chord, progress seen while the task runs,
refusing result.get() inside a task, message fields) run on the workers only. Expected
values follow Celery's documented behaviour.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from celeriac import Celeriac, chain, chord, chunks, group, signature, xmap, xstarmap
from celeriac.exceptions import ChordError
from celeriac.result import GroupResult
from tests.e2e.conftest import CANVAS_PAIRS, Broker, CanvasWorkers, WorkerProcess, wait_for

HERE = Path(__file__).parent
# The worker imports the tasks as `canvasproj` (PYTHONPATH), so this process must too.
os.environ.setdefault("SIGPROJ_BROKER", "memory://canvasproj-import")
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
from canvasproj import (  # type: ignore[import-not-found]  # noqa: E402
    add,
    app,
    args_of,
    collect,
    delayed,
    errback_record_id,
    fail,
    fail_on,
    grow_chord,
    mul,
    on_error_new,
    on_error_old,
    progress,
    replace_with_chain,
    replace_with_group,
    request_fields,
    tsum,
    wait_inside,
)

pytestmark = pytest.mark.slow

EAGER = "eager"
TIMEOUT = 10.0
LARGE_CHORD_TIMEOUT = 45.0


@dataclass(frozen=True)
class Canvas:
    """The mode a test runs in: a broker/result-store pair with its worker, or eager."""

    mode: str
    app: Celeriac
    worker: WorkerProcess | None

    @property
    def eager(self) -> bool:
        return self.worker is None


def configure(broker: Broker, *, eager: bool) -> None:
    """Point canvasproj's app in this process at ``broker``; eager runs tasks here."""
    app.close()
    app.conf.broker_url = broker.url
    app.conf.result_backend = broker.backend
    app.conf.broker_transport_options = broker.options
    app.conf.result_backend_transport_options = broker.backend_options
    app.conf.task_always_eager = eager
    # Eager results are stored, so restore() and the errbacks' records work as on a worker.
    app.conf.task_store_eager_result = eager
    app.set_current()


@pytest.fixture(scope="module", params=[EAGER, *CANVAS_PAIRS])
def canvas(
    request: pytest.FixtureRequest,
    canvas_workers: CanvasWorkers,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Canvas]:
    """Each mode in turn; the workers are the session's, so each starts once."""
    if request.param == EAGER:
        folder = tmp_path_factory.mktemp("canvas-eager")
        configure(Broker("memory://canvas-eager", f"sqlite:///{folder}/results.db"), eager=True)
        yield Canvas(EAGER, app, None)
    else:
        broker, worker = canvas_workers.get(request.param)
        configure(broker, eager=False)
        yield Canvas(request.param, app, worker)
    app.close()
    app.conf.task_always_eager = app.conf.task_store_eager_result = False


on_workers = pytest.mark.parametrize("canvas", CANVAS_PAIRS, indirect=True)
"""For tests of what only a worker does."""


# ---- single tasks and chains ---------------------------------------------------------


def test_signature_with_options(canvas: Canvas) -> None:
    sig = add.signature((2, 3), countdown=1, queue="celery")
    assert sig.options == {"countdown": 1, "queue": "celery"}

    started = time.monotonic()
    assert sig.apply_async().get(timeout=TIMEOUT) == 5
    if not canvas.eager:  # eager mode runs at once, as Celery's does
        assert time.monotonic() - started >= 0.9
    assert add.s(1).delay(1).get(timeout=TIMEOUT) == 2
    assert signature("canvasproj.add", args=(4, 4), app=app).delay().get(timeout=TIMEOUT) == 8


def test_chain_of_three_passes_each_result_to_the_next(canvas: Canvas) -> None:
    result = chain(add.s(2, 2), args_of.s("second"), args_of.s("third")).apply_async()

    assert result.get(timeout=TIMEOUT) == [[4, "second"], "third"]
    assert result.parent.get(timeout=TIMEOUT) == [4, "second"]
    assert result.parent.parent.get(timeout=TIMEOUT) == 4


def test_pipe_composition_and_immutable_signature(canvas: Canvas) -> None:
    workflow = add.s(2, 2) | mul.s(3) | add.si(10, 10) | add.s(1)

    assert isinstance(workflow, chain)
    assert workflow.apply_async().get(timeout=TIMEOUT) == 21
    assert (add.s(2, 2) | mul.s(3)).delay().get(timeout=TIMEOUT) == 12


def test_chain_result_links_to_its_parents(canvas: Canvas) -> None:
    result = (add.s(1, 1) | add.s(2) | mul.s(4)).apply_async()

    assert result.get(timeout=TIMEOUT) == 16
    root = result.parent.parent
    assert root.parent is None
    assert [root.get(timeout=TIMEOUT), result.parent.get(timeout=TIMEOUT)] == [2, 4]
    assert len({root.id, result.parent.id, result.id}) == 3


@on_workers
def test_chain_collect_and_get_leaf(canvas: Canvas) -> None:
    """A worker stores each hop as a child of the one before (Celery's trail)."""
    result = (add.s(1, 1) | add.s(2) | mul.s(4)).apply_async()
    assert result.get(timeout=TIMEOUT) == 16
    root = result.parent.parent

    collected = list(root.collect(timeout=TIMEOUT))

    assert [(node.id, value) for node, value in collected] == [
        (root.id, 2),
        (result.parent.id, 4),
        (result.id, 16),
    ]
    assert root.get_leaf() == 16


# ---- groups and chords ---------------------------------------------------------------


def test_group_of_ten_joins_in_order_saves_and_restores(canvas: Canvas) -> None:
    # The first members finish last, so join order is not completion order.
    result = group(delayed.s(i, (9 - i) * 0.02) for i in range(10)).apply_async()

    assert isinstance(result, GroupResult)
    assert result.join(timeout=TIMEOUT) == list(range(10))
    assert result.completed_count() == 10
    assert result.ready()
    assert result.successful()

    result.save()
    restored = GroupResult.restore(result.id, app=canvas.app)
    assert restored is not None
    assert restored.id == result.id
    assert [child.id for child in restored.results] == [child.id for child in result.results]
    assert restored.get(timeout=TIMEOUT) == list(range(10))


def test_chord_of_ten_gives_the_body_header_results_in_order(canvas: Canvas) -> None:
    header = [delayed.s(i, (9 - i) * 0.02) for i in range(10)]

    result = chord(header, collect.s()).apply_async()

    assert result.get(timeout=TIMEOUT) == list(range(10))


def test_chord_called_on_its_body(canvas: Canvas) -> None:
    result = chord(add.s(i, i) for i in range(10))(tsum.s())

    assert result.get(timeout=TIMEOUT) == 90


def test_chord_of_a_thousand(canvas: Canvas) -> None:
    result = chord(add.s(i, i) for i in range(1000))(tsum.s())

    assert result.get(timeout=LARGE_CHORD_TIMEOUT) == 999_000


def test_group_followed_by_a_task_is_a_chord(canvas: Canvas) -> None:
    workflow = group(add.s(i, i) for i in range(3)) | tsum.s()

    assert isinstance(workflow, chord)
    assert workflow.apply_async().get(timeout=TIMEOUT) == 6


def test_group_inside_a_chain(canvas: Canvas) -> None:
    # 2 -> [2, 3, 4] -> 9 -> 90
    workflow = chain(add.s(1, 1), group(add.s(i) for i in range(3)), tsum.s(), mul.s(10))

    assert workflow.apply_async().get(timeout=TIMEOUT) == 90


def test_chord_in_a_chain_followed_by_more_tasks(canvas: Canvas) -> None:
    # [0, 2, 4] -> 6 -> 7 -> 14
    workflow = chord([add.s(i, i) for i in range(3)], tsum.s()) | add.s(1) | mul.s(2)

    assert workflow.apply_async().get(timeout=TIMEOUT) == 14


def test_chain_in_a_group(canvas: Canvas) -> None:
    result = group(add.s(1, 1) | mul.s(3), add.s(2, 2) | mul.s(3)).apply_async()

    assert result.get(timeout=TIMEOUT) == [6, 12]


def test_chord_whose_body_is_a_chain(canvas: Canvas) -> None:
    result = chord([add.s(i, i) for i in range(3)], tsum.s() | mul.s(2)).apply_async()

    assert result.get(timeout=TIMEOUT) == 12


def test_group_followed_by_a_group(canvas: Canvas) -> None:
    # Each member of the second group receives the first group's results: [2, 4].
    workflow = group(add.s(1, 1), add.s(2, 2)) | group(tsum.s(), tsum.s())

    assert workflow.apply_async().get(timeout=TIMEOUT) == [6, 6]


# ---- chunks, map, starmap ------------------------------------------------------------


def test_chunks(canvas: Canvas) -> None:
    pairs = [[i, i] for i in range(10)]

    expected = [[0, 2, 4], [6, 8, 10], [12, 14, 16], [18]]
    assert add.chunks(pairs, 3).apply_async().get(timeout=TIMEOUT) == expected
    assert chunks(add.s(), pairs, 5).group().apply_async().get(timeout=TIMEOUT) == [
        [0, 2, 4, 6, 8],
        [10, 12, 14, 16, 18],
    ]


def test_map(canvas: Canvas) -> None:
    mapped = tsum.map([list(range(10)), list(range(100))])

    assert isinstance(mapped, xmap)
    assert mapped.apply_async().get(timeout=TIMEOUT) == [45, 4950]
    assert xmap(tsum.s(), [[1, 2], [3]]).delay().get(timeout=TIMEOUT) == [3, 3]


def test_starmap(canvas: Canvas) -> None:
    starmapped = add.starmap([[i, i] for i in range(5)])

    assert isinstance(starmapped, xstarmap)
    assert starmapped.apply_async().get(timeout=TIMEOUT) == [0, 2, 4, 6, 8]
    assert xstarmap(mul.s(), [[2, 3], [4, 5]]).delay().get(timeout=TIMEOUT) == [6, 20]


# ---- errors, errbacks, callbacks -----------------------------------------------------


def test_failing_chord_header_fails_the_chord_and_calls_body_errbacks(canvas: Canvas) -> None:
    """The body fails with ChordError and its errbacks run, in eager mode too.

    The chord's own handle follows its parents (the header), so, as in Celery, it raises
    the member's ValueError; the body's own result is the ChordError.
    """
    body = collect.s().on_error(on_error_new.s()).on_error(on_error_old.s())

    result = chord([fail_on.s(i, 2) for i in range(4)], body).apply_async()

    with pytest.raises(ValueError, match="bad member 2"):
        result.get(timeout=TIMEOUT)
    with pytest.raises(ChordError, match="bad member 2"):
        canvas.app.AsyncResult(result.id).get(timeout=TIMEOUT)
    new_style = canvas.app.AsyncResult(errback_record_id(result.id, "new"))
    record = new_style.get(timeout=TIMEOUT)
    assert (record["task_id"], record["exc_type"]) == (result.id, "ChordError")
    old_style = canvas.app.AsyncResult(errback_record_id(result.id, "old"))
    assert old_style.get(timeout=TIMEOUT) == {"task_id": result.id}


def test_errbacks_of_both_styles(canvas: Canvas) -> None:
    result = fail.apply_async(("broken",), link_error=[on_error_new.s(), on_error_old.s()])

    with pytest.raises(ValueError, match="broken"):
        result.get(timeout=TIMEOUT)
    new_style = canvas.app.AsyncResult(errback_record_id(result.id, "new"))
    assert new_style.get(timeout=TIMEOUT) == {
        "task_id": result.id,
        "exc_type": "ValueError",
        "exc": "broken",
        "traceback_type": "str",
    }
    old_style = canvas.app.AsyncResult(errback_record_id(result.id, "old"))
    assert old_style.get(timeout=TIMEOUT) == {"task_id": result.id}


def test_link_callbacks_receive_the_result(canvas: Canvas) -> None:
    times_ten, plus_one = mul.s(10), add.s(1)
    callbacks = [times_ten.freeze(), plus_one.freeze()]

    result = add.apply_async((2, 3), link=[times_ten, plus_one])

    assert result.get(timeout=TIMEOUT) == 5
    assert [callback.get(timeout=TIMEOUT) for callback in callbacks] == [50, 6]


# ---- tasks that use the canvas -------------------------------------------------------


def test_replace_with_a_chain(canvas: Canvas) -> None:
    """The replaced task's id gets the replacement's result: (2 + 10) * 2."""
    assert replace_with_chain.delay(2).get(timeout=TIMEOUT) == 24


def test_replace_inside_a_chain(canvas: Canvas) -> None:
    # 2 -> replaced by (2 + 10) * 2 = 24 -> 124
    workflow = chain(add.s(1, 1), replace_with_chain.s(), add.s(100))

    assert workflow.apply_async().get(timeout=TIMEOUT) == 124


def test_replace_with_a_group(canvas: Canvas) -> None:
    assert replace_with_group.delay(5).get(timeout=TIMEOUT) == [5, 6, 7]
    # 5 -> [5, 6, 7] -> 18
    workflow = add.s(2, 3) | replace_with_group.s() | tsum.s()
    assert workflow.apply_async().get(timeout=TIMEOUT) == 18


@on_workers
def test_add_to_chord_grows_a_running_chord(canvas: Canvas) -> None:
    result = chord([grow_chord.s(1, 2), add.s(10, 0)], collect.s()).apply_async()

    # The header's 1 and 10, and the added add(1, 0) and add(1, 1).
    assert sorted(result.get(timeout=TIMEOUT)) == [1, 1, 2, 10]


@on_workers
def test_progress_is_readable_while_the_task_runs(canvas: Canvas, tmp_path: Path) -> None:
    marker = tmp_path / f"go-{uuid.uuid4().hex}"
    result = progress.delay(str(marker))

    assert wait_for(lambda: result.state == "PROGRESS", TIMEOUT), result.state
    assert result.info == {"current": 1, "total": 2}
    marker.touch()
    assert result.get(timeout=TIMEOUT) == "done"


@on_workers
def test_waiting_for_a_result_inside_a_task_is_refused(canvas: Canvas) -> None:
    with pytest.raises(RuntimeError, match=r"Never call result\.get\(\) within a task"):
        wait_inside.delay(1, False).get(timeout=TIMEOUT)


def test_waiting_inside_a_task_when_allowed(canvas: Canvas) -> None:
    assert wait_inside.delay(1, True).get(timeout=TIMEOUT) == 2


@on_workers
def test_chain_message_fields(canvas: Canvas) -> None:
    result = (request_fields.si() | request_fields.si() | request_fields.si()).apply_async()

    last = result.get(timeout=TIMEOUT)
    second = result.parent.get(timeout=TIMEOUT)
    first = result.parent.parent.get(timeout=TIMEOUT)
    assert (first["id"], first["root_id"], first["parent_id"]) == (
        result.parent.parent.id,
        result.parent.parent.id,
        None,
    )
    assert (second["id"], second["root_id"], second["parent_id"]) == (
        result.parent.id,
        first["id"],
        first["id"],
    )
    assert (last["id"], last["root_id"], last["parent_id"]) == (
        result.id,
        first["id"],
        second["id"],
    )


@on_workers
def test_group_message_fields(canvas: Canvas) -> None:
    result = group(request_fields.si() for _ in range(3)).apply_async()

    fields = result.get(timeout=TIMEOUT)

    assert [field["id"] for field in fields] == [child.id for child in result.results]
    assert [field["group"] for field in fields] == [result.id] * 3
    assert [field["group_index"] for field in fields] == [0, 1, 2]
