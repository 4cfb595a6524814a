"""``task_annotations`` rewrites task attributes as Celery's does: every attribute, in
Celery's order, with ``@`` wrapping a method, applied when a task is first sent or run."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from celeriac import Celeriac, Task


@pytest.fixture
def app() -> Iterator[Celeriac]:
    name = uuid.uuid4().hex
    application = Celeriac("proj", broker=f"memory://{name}", backend=f"memory://{name}")

    @application.task(name="tasks.add", rate_limit="2/s")
    def add(x: int, y: int) -> int:
        return x + y

    @application.task(name="tasks.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    @application.task(name="other.fail")
    def fail() -> None:
        raise ValueError("no")

    yield application
    application.close()


class SlowTasks:
    """An annotation object in Celery's shape: ``annotate(task)`` returns attributes."""

    def annotate(self, task: Task[Any, Any]) -> dict[str, Any] | None:
        return {"rate_limit": "1/h"} if task.name.startswith("tasks.") else None


def annotated(app: Celeriac, annotations: Any, name: str = "tasks.add") -> Task[Any, Any]:
    app.conf.task_annotations = annotations
    task = app.tasks[name]
    task.annotate()
    return task


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        pytest.param(None, "2/s", id="none"),
        pytest.param({"tasks.add": {"rate_limit": "10/s"}}, "10/s", id="by name"),
        pytest.param({"*": {"rate_limit": "5/m"}}, "5/m", id="every task"),
        pytest.param({"tasks.mul": {"rate_limit": "10/s"}}, "2/s", id="another task"),
        pytest.param(SlowTasks(), "1/h", id="object"),
        pytest.param("tests.core.test_annotations:SlowTasks", "1/h", id="import path of class"),
        pytest.param(
            {"tasks.add": {"rate_limit": "10/s"}, "*": {"rate_limit": "5/m"}},
            "5/m",
            id="* applies after the task's own entry, as in Celery",
        ),
        pytest.param(
            [{"tasks.add": {"rate_limit": "1/s"}}, {"tasks.add": {"rate_limit": "9/s"}}],
            "1/s",
            id="the first match in a list",
        ),
        pytest.param(
            [SlowTasks(), {"*": {"rate_limit": "7/s"}}],
            "7/s",
            id="object, then * from the list",
        ),
    ],
)
def test_annotations_take_celery_s_shapes_and_order(
    app: Celeriac, annotations: Any, expected: str
) -> None:
    assert annotated(app, annotations).rate_limit == expected


def test_any_attribute_is_set_on_the_named_tasks_only(app: Celeriac) -> None:
    mul = app.tasks["tasks.mul"]
    before = (mul.acks_late, mul.ignore_result)

    add = annotated(app, {"tasks.add": {"acks_late": True, "ignore_result": True}})
    mul.annotate()

    assert (add.acks_late, add.ignore_result) == (True, True)
    assert (mul.acks_late, mul.ignore_result) == before


def test_a_function_given_for_a_handler_becomes_the_task_s_method(app: Celeriac) -> None:
    seen: list[tuple[str, str, type[BaseException]]] = []

    def my_on_failure(
        self: Task[Any, Any], exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        seen.append((self.name, task_id, type(exc)))

    app.conf.task_annotations = {"*": {"on_failure": my_on_failure}}

    result = app.tasks["other.fail"].apply(task_id="t-1")

    assert result.failed()
    assert seen == [("other.fail", "t-1", ValueError)]


def test_an_at_key_wraps_the_method_once_however_often_it_is_applied(app: Celeriac) -> None:
    calls: list[str] = []

    def around(method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: Task[Any, Any], *args: Any, **kwargs: Any) -> Any:
            calls.append(self.name)
            return method(self, *args, **kwargs)

        return wrapper

    task = annotated(app, {"tasks.add": {"@on_success": around}})
    annotated(app, {"tasks.add": {"@on_success": around}})

    assert task.apply((1, 2)).get() == 3
    assert calls == ["tasks.add"]


def test_annotations_given_after_the_task_apply_when_it_is_sent(app: Celeriac) -> None:
    app.conf.task_annotations = {"tasks.mul": {"priority": 7, "expires": 60}}

    app.tasks["tasks.mul"].delay(2, 3)

    [delivery] = app.transport.fetch(["celery"], 1, timeout=1.0)
    assert delivery.envelope.properties["priority"] == 7
    assert delivery.envelope.headers["expires"] is not None


def test_a_later_rate_limit_change_is_not_undone(app: Celeriac) -> None:
    task = annotated(app, {"tasks.add": {"rate_limit": "10/s"}})
    task.rate_limit = "3/s"

    task.annotate()

    assert task.rate_limit == "3/s"
