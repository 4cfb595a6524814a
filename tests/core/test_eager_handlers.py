"""An error raised by a task's own ``on_success`` handler, eagerly and on a worker.

In eager mode (``apply()``, ``task_always_eager``) it reaches the caller after
``task_internal_error``, as Celery's tracer raises it; on a worker it is logged and the
task keeps its SUCCESS.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celeriac, Task, signals, states
from celeriac.context import Context
from celeriac.execution import trace_task


class HandlerBroke(Exception):
    """What the ``on_success`` handler raises."""


class BrokenHandlerTask(Task[Any, Any]):
    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        raise HandlerBroke(f"on_success saw {retval}")


@pytest.fixture
def app() -> Iterator[Celeriac]:
    name = uuid.uuid4().hex
    application = Celeriac("proj", broker=f"memory://{name}", backend=f"memory://{name}")
    yield application
    application.close()


Sent = dict[str, list[dict[str, Any]]]


@pytest.fixture
def sent() -> Iterator[Sent]:
    """The task_internal_error and task_success signals sent during the test."""
    seen: Sent = {"task_internal_error": [], "task_success": []}

    def internal_error(sender: Any = None, **kwargs: Any) -> None:
        seen["task_internal_error"].append(kwargs)

    def success(sender: Any = None, **kwargs: Any) -> None:
        seen["task_success"].append(kwargs)

    signals.task_internal_error.connect(internal_error)
    signals.task_success.connect(success)
    yield seen
    signals.task_internal_error.disconnect(internal_error)
    signals.task_success.disconnect(success)


def test_apply_raises_the_error_of_the_on_success_handler(app: Celeriac, sent: Sent) -> None:
    @app.task(base=BrokenHandlerTask)
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(HandlerBroke, match="on_success saw 5"):
        add.apply((2, 3), throw=False)

    [error] = sent["task_internal_error"]
    assert isinstance(error["exception"], HandlerBroke)
    assert (error["args"], error["kwargs"]) == ([2, 3], {})
    assert sent["task_success"] == []


def test_always_eager_delay_raises_the_error_of_the_on_success_handler(
    app: Celeriac, sent: Sent
) -> None:
    app.conf.task_always_eager = True

    @app.task(base=BrokenHandlerTask)
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(HandlerBroke):
        add.delay(1, 1)


def test_on_a_worker_the_handler_error_is_logged_and_the_task_succeeds(
    app: Celeriac, sent: Sent, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task(base=BrokenHandlerTask)
    def add(x: int, y: int) -> int:
        return x + y

    with caplog.at_level(logging.ERROR, logger="celeriac.execution"):
        outcome = trace_task(add, Context(id="t-1", args=[2, 3], kwargs={}), hostname="w1")

    assert (outcome.state, outcome.retval) == (states.SUCCESS, 5)
    assert app.AsyncResult("t-1").get(timeout=1) == 5
    assert any("on_success raised" in record.getMessage() for record in caplog.records)
    assert sent["task_internal_error"] == []
    assert len(sent["task_success"]) == 1
