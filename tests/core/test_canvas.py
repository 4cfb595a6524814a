"""The canvas in-process: the messages each primitive sends, and what running them does.

Messages are read off the memory broker and run one by one through the worker's own
job function (``execute_job``), so the chain hops, chord counting and errbacks are the
worker's, without a worker process; tests/e2e/test_canvas.py runs the same shapes on
real workers.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import (
    Celeriac,
    GroupResult,
    Signature,
    chain,
    chord,
    chunks,
    group,
    signature,
    xmap,
    xstarmap,
)
from celeriac.exceptions import ChordError
from celeriac.protocol.message import TaskMessage, parse_task_message
from celeriac.transports.base import Delivery
from celeriac.worker.request import Request, execute_job


@pytest.fixture
def app() -> Iterator[Celeriac]:
    name = uuid.uuid4().hex
    application = Celeriac("canvas", broker=f"memory://{name}", backend=f"memory://{name}")

    @application.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    @application.task(name="tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    @application.task(name="boom")
    def boom(reason: str) -> None:
        raise ValueError(reason)

    @application.task(name="record_error")
    def record_error(request: Any, exc: BaseException, traceback: str | None) -> None:
        errors.append((request.id, exc))

    @application.task(name="old_style_errback")
    def old_style_errback(task_id: str) -> str:
        return task_id

    errors: list[tuple[str, BaseException]] = []
    application.errors = errors  # type: ignore[attr-defined]
    yield application
    application.close()


def messages(app: Celeriac, queue: str = "celery") -> list[TaskMessage]:
    """Take every message waiting in ``queue``."""
    taken = app.transport.fetch([queue], 10_000, 0.05)
    app.transport.ack([delivery.tag for delivery in taken])
    return [parse_task_message(delivery.envelope) for delivery in taken]


def run(app: Celeriac, deliveries: list[Delivery]) -> list[str]:
    """Run ``deliveries`` in this order as a worker does; return their task names."""
    app.set_current()
    for delivery in deliveries:
        request = Request(delivery, parse_task_message(delivery.envelope), "test@node")
        execute_job(request.as_job(None, None))
        app.transport.ack([delivery.tag])
    return [delivery.envelope.headers["task"] for delivery in deliveries]


def run_all(app: Celeriac) -> list[str]:
    """Run queued messages, and those they send, until the queue stays empty."""
    ran: list[str] = []
    while deliveries := app.transport.fetch(["celery"], 100, 0.05):
        ran += run(app, deliveries)
    return ran


def body_of(message: TaskMessage) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    args, kwargs, embed = message.decode_body()
    return list(args), dict(kwargs), dict(embed)


def test_primitives_travel_as_celerys_dicts_and_come_back_as_their_classes(
    app: Celeriac,
) -> None:
    add, tsum = app.tasks["add"], app.tasks["tsum"]
    workflow = chain(add.s(1, 2), group(add.s(1), add.s(2)), chord([add.s(3, 3)], tsum.s()))

    wire = json.loads(json.dumps(workflow))

    assert wire["task"] == "celery.chain"
    assert wire["subtask_type"] == "chain"
    inner_group, inner_chord = wire["kwargs"]["tasks"][1:]
    assert (inner_group["task"], inner_group["subtask_type"]) == ("celery.group", "group")
    assert set(inner_chord["kwargs"]) == {"kwargs", "header", "body"}
    assert inner_chord["kwargs"]["header"]["subtask_type"] == "group"
    rebuilt = signature(wire, app=app)
    assert isinstance(rebuilt, chain)
    assert [type(step) for step in rebuilt.tasks] == [Signature, group, chord]
    assert rebuilt == workflow


def test_the_pipe_builds_chains_and_a_group_followed_by_a_task_a_chord(app: Celeriac) -> None:
    add, tsum = app.tasks["add"], app.tasks["tsum"]

    flat = add.s(1, 1) | add.s(2) | (add.s(3) | add.s(4))
    fan_in = group(add.s(1, 1), add.s(2, 2)) | tsum.s()

    assert isinstance(flat, chain)
    assert [step.args for step in flat.tasks] == [[1, 1], [2], [3], [4]]
    assert isinstance(fan_in, chord)
    assert fan_in.body.task == "tsum"


def test_a_chain_sends_its_first_task_with_the_rest_last_hop_first(app: Celeriac) -> None:
    add = app.tasks["add"]

    result = chain(add.s(1, 2), add.s(10), add.si(100, 200)).apply_async()

    [first] = messages(app)
    args, _, embed = body_of(first)
    assert args == [1, 2]
    assert [hop["args"] for hop in embed["chain"]] == [[100, 200], [10]]
    assert embed["chain"][0]["immutable"] is True
    assert embed["chain"][0]["options"]["task_id"] == result.id
    assert first.root_id == first.id
    assert result.parent is not None
    assert result.parent.parent is not None
    assert result.parent.parent.id == first.id
    assert result.parent.id == embed["chain"][1]["options"]["task_id"]


def test_chain_hops_receive_the_previous_result_and_keep_the_root(app: Celeriac) -> None:
    add = app.tasks["add"]

    result = chain(add.s(1, 2), add.s(10), add.si(100, 200)).apply_async()
    run_all(app)

    assert result.get(timeout=5) == 300
    assert result.parent.get(timeout=5) == 13
    middle = app.backend.get(result.parent.id)
    assert middle is not None
    assert middle["parent_id"] == result.parent.parent.id
    assert middle["children"] == [[[result.id, None], None]]


def test_group_members_carry_the_group_id_and_their_position(app: Celeriac) -> None:
    add = app.tasks["add"]

    result = group(add.s(i, i) for i in range(5)).apply_async()

    sent = messages(app)
    assert isinstance(result, GroupResult)
    assert [message.group for message in sent] == [result.id] * 5
    assert [message.group_index for message in sent] == [0, 1, 2, 3, 4]
    assert [message.id for message in sent] == [member.id for member in result.results]
    assert all(message.root_id == message.id for message in sent)


def test_group_results_join_in_member_order(app: Celeriac) -> None:
    add = app.tasks["add"]

    result = group(add.s(i, i) for i in range(5))()
    run_all(app)

    assert result.get(timeout=5) == [0, 2, 4, 6, 8]
    assert result.completed_count() == 5


def test_chord_header_tasks_carry_the_body_and_the_size_is_set_first(app: Celeriac) -> None:
    add, tsum = app.tasks["add"], app.tasks["tsum"]

    result = chord(add.s(i, i) for i in range(3))(tsum.s())

    sent = messages(app)
    group_id = sent[0].group
    assert group_id is not None
    assert [message.group_index for message in sent] == [0, 1, 2]
    for message in sent:
        _, _, embed = body_of(message)
        assert embed["chord"]["task"] == "tsum"
        assert embed["chord"]["options"]["task_id"] == result.id
    assert isinstance(result.parent, GroupResult)
    assert result.parent.id == group_id
    progress = app.backend.chord_part_done(group_id, "x", 9, "SUCCESS", 1)
    assert progress.size == 3


def test_the_last_header_task_fires_the_body_with_results_in_header_order(
    app: Celeriac,
) -> None:
    add = app.tasks["add"]
    result = chord([add.s(1, 1), add.s(2, 2), add.s(3, 3)], app.signature("celery.accumulate"))()
    header = app.transport.fetch(["celery"], 3, 0.05)

    run(app, list(reversed(header[1:])))
    assert messages(app) == []
    assert run(app, header[:1]) == ["add"]
    [body] = messages(app)

    assert body.name == "celery.accumulate"
    assert body.id == result.id
    assert body_of(body)[0] == [[2, 4, 6]]
    assert body.group == header[0].envelope.headers["group"]
    assert body.parent_id == header[0].envelope.headers["id"]


def test_a_failing_header_task_fails_the_chord_and_runs_the_body_errbacks(
    app: Celeriac,
) -> None:
    """As in Celery, ``get`` raises the header task's error (through the result's parent,
    the header) and the body's own result is the ChordError."""
    add, tsum, boom = app.tasks["add"], app.tasks["tsum"], app.tasks["boom"]
    body = tsum.s().on_error(app.tasks["record_error"].s())

    result = chord([add.s(1, 1), boom.s("bad")], body)()
    run_all(app)

    with pytest.raises(ValueError, match="bad"):
        result.get(timeout=5)
    assert result.state == "FAILURE"
    assert isinstance(result.result, ChordError)
    assert "raised ValueError('bad')" in str(result.result)
    [(errored_id, exc)] = app.errors  # type: ignore[attr-defined]
    assert errored_id == result.id
    assert isinstance(exc, ChordError)


def test_an_empty_chord_calls_its_body_with_an_empty_list(app: Celeriac) -> None:
    result = chord([], app.tasks["tsum"].s())()
    run_all(app)

    assert result.get(timeout=5) == 0


def test_nested_shapes_finish_with_celerys_values(app: Celeriac) -> None:
    add, tsum = app.tasks["add"], app.tasks["tsum"]
    accumulate = app.tasks["celery.accumulate"]
    shapes = {
        "group in a chain": (chain(add.s(1, 1), group(add.s(1), add.s(2)), tsum.s()), 7),
        "chord in a chain": (chain(chord([add.s(1, 1)], tsum.s()), add.s(10), add.s(100)), 112),
        "chain in a group": (group(chain(add.s(1, 1), add.s(1)), add.s(5, 5)), [3, 10]),
        "chord with a chain body": (chord([add.s(1, 1), add.s(2, 2)], tsum.s() | add.s(1)), 7),
        "group then group": (group(add.s(1, 1), add.s(2, 2)) | group(tsum.s(), tsum.s()), [6, 6]),
        "chain in a chord header": (chord([add.s(1, 1) | add.s(1), add.s(0, 1)], tsum.s()), 4),
        "group in a chord header": (
            chord([group(add.s(1, 0), add.s(2, 0), add.s(3, 0)), add.s(4, 0)], accumulate.s()),
            [[[1, 2, 3], 4]],
        ),
        "chain ending in a group in a chord header": (
            chord([add.s(1, 0) | group(add.s(1), add.s(2)), add.s(9, 0)], accumulate.s()),
            [[[2, 3], 9]],
        ),
        "chord in a chord header": (
            chord([chord([add.s(1, 1)], tsum.s()), add.s(1, 1)], tsum.s()),
            4,
        ),
    }
    results = {name: shape.apply_async() for name, (shape, _) in shapes.items()}
    run_all(app)

    for name, (_, expected) in shapes.items():
        assert results[name].get(timeout=5) == expected, name


def test_chunks_map_and_starmap(app: Celeriac) -> None:
    add = app.tasks["add"]

    parts = chunks(add.s(), [(i, i) for i in range(5)], 2)()
    mapped = xmap(app.tasks["tsum"].s(), [[1, 2], [3]]).apply_async()
    starred = add.starmap([(1, 2), (3, 4)]).apply_async()
    star_signature = xstarmap(add.s(10), [(1,), (2,)]).apply_async()
    run_all(app)

    assert parts.get(timeout=5) == [[0, 2], [4, 6], [8]]
    assert mapped.get(timeout=5) == [3, 3]
    assert starred.get(timeout=5) == [3, 7]
    assert star_signature.get(timeout=5) == [11, 12]


def test_errbacks_of_both_styles_run_when_a_task_fails(app: Celeriac) -> None:
    boom = app.tasks["boom"]
    old_style = app.tasks["old_style_errback"].s().set(task_id=str(uuid.uuid4()))

    result = boom.apply_async(("bad",), link_error=[app.tasks["record_error"].s(), old_style])
    run_all(app)

    [(errored_id, exc)] = app.errors  # type: ignore[attr-defined]
    assert errored_id == result.id
    assert isinstance(exc, ValueError)
    assert app.AsyncResult(str(old_style.id)).get(timeout=5) == result.id


def test_replace_inside_a_chain_keeps_the_id_and_the_rest_of_the_chain(app: Celeriac) -> None:
    add = app.tasks["add"]

    @app.task(name="replaced", bind=True)
    def replaced(self: Any, value: int) -> Any:
        return self.replace(add.s(value, 1000))

    @app.task(name="replaced_by_chain", bind=True)
    def replaced_by_chain(self: Any, value: int) -> Any:
        return self.replace(add.s(value, 10) | add.s(20))

    @app.task(name="replaced_by_group", bind=True)
    def replaced_by_group(self: Any, value: int) -> Any:
        return self.replace(group(add.s(value, 1), add.s(value, 2)))

    result = chain(add.s(1, 1), replaced.s(), add.s(1)).apply_async()
    grouped = chain(add.s(1, 1), replaced_by_group.s()).apply_async()
    chained = chain(add.s(1, 1), replaced_by_chain.s(), add.s(100)).apply_async()
    run_all(app)

    assert result.get(timeout=5) == 1003
    assert result.parent.get(timeout=5) == 1002
    assert grouped.get(timeout=5) == [3, 4]
    assert chained.get(timeout=5) == 132
    assert chained.parent.get(timeout=5) == 32


def test_add_to_chord_makes_the_body_wait_for_the_added_task(app: Celeriac) -> None:
    add, tsum = app.tasks["add"], app.tasks["tsum"]

    @app.task(name="grow", bind=True)
    def grow(self: Any, value: int) -> int:
        self.add_to_chord(add.s(value, 500))
        return value

    result = chord([grow.s(1), add.s(2, 2)], tsum.s())()
    run_all(app)

    assert result.get(timeout=5) == 506


def test_a_chord_of_a_thousand_tasks_fires_once(app: Celeriac) -> None:
    add, tsum = app.tasks["add"], app.tasks["tsum"]

    result = chord((add.s(i, 0) for i in range(1000)), tsum.s())()
    ran = run_all(app)

    assert result.get(timeout=5) == sum(range(1000))
    assert ran.count("tsum") == 1


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "worker"])
def test_eager_mode_gives_the_workers_results(app: Celeriac, eager: bool) -> None:
    add, tsum, boom = app.tasks["add"], app.tasks["tsum"], app.tasks["boom"]
    app.conf.task_always_eager = eager
    identity = app.tasks["celery.accumulate"].s(index=0)
    shapes = [
        chain(add.s(1, 2), add.s(10), add.si(100, 200)),
        group(add.s(i, i) for i in range(3)),
        chord([add.s(1, 1), add.s(2, 2)], tsum.s()),
        chain(add.s(1, 1), group(add.s(1), add.s(2)), tsum.s()),
        chunks(add.s(), [(1, 1), (2, 2)], 1),
        chord([group(add.s(1, 0), add.s(2, 0)), add.s(4, 0)], identity),
    ]

    results = [shape.apply_async() for shape in shapes]
    failed = chord([add.s(1, 1), boom.s("bad")], tsum.s()).apply_async()
    run_all(app)

    expected = [300, [0, 2, 4], 6, 7, [[2], [4]], [[1, 2], 4]]
    assert [result.get(timeout=5) for result in results] == expected
    with pytest.raises(ValueError, match="bad"):
        failed.get(timeout=5)
    assert isinstance(failed.result, ChordError)


def test_chord_unlock_applies_a_celery_clients_body_once_the_header_is_ready(
    app: Celeriac,
) -> None:
    """Celery clients on result backends without a chord counter send ``celery.chord_unlock``
    (wire protocol §7.3): it retries until every header result is in, then sends the body."""
    add, tsum = app.tasks["add"], app.tasks["tsum"]
    header = [add.apply_async((i, i)) for i in range(3)]
    body = tsum.s().set(task_id=str(uuid.uuid4()))
    unlock = app.send_task(
        "celery.chord_unlock",
        (str(uuid.uuid4()), body),
        {"result": [member.as_tuple() for member in header], "interval": 0},
    )

    first = app.transport.fetch(["celery"], 10, 0.05)
    assert run(app, [first[-1]]) == ["celery.chord_unlock"]
    assert app.AsyncResult(str(body.id)).state == "PENDING"
    run(app, first[:-1])
    run_all(app)

    assert app.AsyncResult(str(body.id)).get(timeout=5) == 6
    assert unlock.id == first[-1].envelope.headers["id"]


def test_waiting_on_a_chain_ends_when_an_earlier_hop_fails(app: Celeriac) -> None:
    add, boom = app.tasks["add"], app.tasks["boom"]
    result = chain(add.s(1, 1), boom.si("bad"), add.s(1)).apply_async()
    failer = threading.Timer(0.2, run_all, (app,))
    failer.start()

    started = time.monotonic()
    with pytest.raises(ValueError, match="bad"):
        result.get(timeout=10, interval=0.05)
    failer.join()

    assert time.monotonic() - started < 5
    assert result.state == "PENDING"


@pytest.mark.parametrize("eager", [False, True], ids=["worker", "eager"])
def test_a_chords_callbacks_are_its_bodys(app: Celeriac, eager: bool) -> None:
    add, tsum = app.tasks["add"], app.tasks["tsum"]
    app.conf.task_always_eager = app.conf.task_store_eager_result = eager
    linked = chord([add.s(1, 1), add.s(2, 2)], tsum.s())
    then = add.s(100).set(task_id=str(uuid.uuid4()))
    linked.link(then)
    called = add.s(1000).set(task_id=str(uuid.uuid4()))

    result = linked.apply_async(link=called)
    run_all(app)

    assert result.get(timeout=5) == 6
    assert app.AsyncResult(str(then.id)).get(timeout=5) == 106
    assert app.AsyncResult(str(called.id)).get(timeout=5) == 1006


def test_a_groups_callback_runs_once_after_its_first_member_and_errbacks_for_each(
    app: Celeriac,
) -> None:
    """As in Celery: ``group.link`` links the first member (immutable), ``link_error`` all."""
    add, boom = app.tasks["add"], app.tasks["boom"]
    callback = add.si(1, 1).set(task_id=str(uuid.uuid4()))

    group(add.s(1, 1), add.s(2, 2)).apply_async(link=callback)
    group(boom.s("a"), boom.s("b")).apply_async(link_error=app.tasks["record_error"].s())
    ran = run_all(app)

    assert ran.count("add") == 3
    assert app.AsyncResult(str(callback.id)).get(timeout=5) == 2
    assert sorted(str(exc) for _, exc in app.errors) == ["a", "b"]  # type: ignore[attr-defined]
