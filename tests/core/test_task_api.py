"""Seed 004's Task API, run in-process on the memory broker and backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celeriac, Task, states
from celeriac.context import Context
from celeriac.exceptions import MaxRetriesExceededError
from celeriac.protocol.message import parse_task_message


@pytest.fixture
def app() -> Iterator[Celeriac]:
    name = uuid.uuid4().hex
    application = Celeriac("proj", broker=f"memory://{name}", backend=f"memory://{name}")
    yield application
    application.close()


def fetch_message(app: Celeriac, queue: str = "celery") -> Any:
    [delivery] = app.transport.fetch([queue], 1, 1.0)
    app.transport.ack([delivery.tag])
    return parse_task_message(delivery.envelope)


def test_decorator_with_and_without_arguments_registers_named_tasks(app: Celeriac) -> None:
    @app.task
    def plain(x: int) -> int:
        return x

    @app.task(name="custom.name", bind=True)
    def bound(self: Task[Any, Any], x: int) -> str:
        return f"{self.name}:{x}"

    assert plain.name == f"{__name__}.plain"
    assert app.tasks["custom.name"] is bound
    assert plain(3) == 3
    assert bound(4) == "custom.name:4"


def test_delay_checks_arguments_at_call_time(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(typing=False)
    def loose(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="missing a required argument"):
        add.delay(1)  # type: ignore[call-arg]  # the wrong call is the point
    loose.delay(1, 2, 3)  # type: ignore[call-arg]


def test_argument_check_follows_a_replaced_run(app: Celeriac) -> None:
    @app.task
    def one(x: int) -> int:
        return x

    one.delay(1)

    def two(x: int, y: int) -> int:
        return x + y

    one.run = two  # type: ignore[assignment]  # replacing run is the point
    one.delay(1, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="missing a required argument"):
        one.delay(1)


def test_apply_async_puts_every_option_on_the_message(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.apply_async(
        (1, 2),
        countdown=0,
        expires=60,
        priority=7,
        headers={"custom": "value"},
        time_limit=10,
        soft_time_limit=5,
        shadow="shown-name",
        link=add.s(10),
        link_error=add.si(0, 0),
    )

    message = fetch_message(app)
    assert message.id == result.id
    assert message.name == "tests.core.test_task_api.add"
    assert message.shadow == "shown-name"
    assert message.timelimit == (10, 5)
    assert message.expires is not None
    assert message.headers["custom"] == "value"
    assert message.properties["priority"] == 7
    _, _, embed = message.decode_body()
    assert embed["callbacks"][0]["args"] == [10]
    assert embed["errbacks"][0]["immutable"] is True


def test_handlers_given_to_the_decorator_act_as_methods(app: Celeriac) -> None:
    seen: list[tuple[str, Any]] = []

    def on_failure(self: Task[Any, Any], exc: BaseException, task_id: str, *args: Any) -> None:
        seen.append(("failure", (self.name, type(exc).__name__)))

    def after_return(self: Task[Any, Any], status: str, retval: Any, *args: Any) -> None:
        seen.append(("after_return", status))

    @app.task(on_failure=on_failure, after_return=after_return)
    def explode() -> None:
        raise ValueError("no")

    result = explode.apply()

    assert result.state == states.FAILURE
    assert seen == [
        ("failure", ("tests.core.test_task_api.explode", "ValueError")),
        ("after_return", states.FAILURE),
    ]


def test_base_class_handlers_run_in_celerys_order(app: Celeriac) -> None:
    calls: list[str] = []

    class Recording(Task[Any, Any]):
        def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
            calls.append("before_start")

        def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
            calls.append(f"on_success:{retval}")

        def after_return(self, status: str, retval: Any, *rest: Any) -> None:
            calls.append(f"after_return:{status}")

    @app.task(base=Recording)
    def double(x: int) -> int:
        calls.append("run")
        return 2 * x

    assert double.apply((21,)).get() == 42
    assert calls == ["before_start", "run", "on_success:42", "after_return:SUCCESS"]


def test_eager_retry_runs_again_and_returns_the_final_outcome(app: Celeriac) -> None:
    retries_seen: list[int] = []

    @app.task(bind=True, max_retries=3)
    def flaky(self: Task[Any, Any]) -> int:
        retries_seen.append(self.request.retries)
        if self.request.retries < 2:
            raise self.retry(countdown=60, exc=KeyError("again"))
        return self.request.retries

    assert flaky.apply().get() == 2
    assert retries_seen == [0, 1, 2]


def test_retry_past_max_retries_raises_exc_or_max_retries_exceeded(app: Celeriac) -> None:
    @app.task(bind=True, max_retries=1)
    def with_exc(self: Task[Any, Any]) -> None:
        raise self.retry(exc=KeyError("gone"))

    @app.task(bind=True, max_retries=0)
    def without_exc(self: Task[Any, Any]) -> None:
        raise self.retry()

    with pytest.raises(KeyError):
        with_exc.apply().get()
    with pytest.raises(MaxRetriesExceededError):
        without_exc.apply().get()


def test_retry_in_a_worker_sends_the_task_again_with_eta(app: Celeriac) -> None:
    @app.task(bind=True)
    def again(self: Task[Any, Any]) -> None:
        raise self.retry(countdown=30)

    request = Context(id="t-1", args=[], kwargs={}, retries=0, called_directly=False)
    again.push_request(request.as_dict())
    with pytest.raises(Exception, match="Retry in 30"):
        again.run()
    again.pop_request()

    assert app.transport.queue_size("celery") == 1
    assert app.transport.fetch(["celery"], 1, 0.2) == []


def test_autoretry_for_with_backoff_retries_then_raises(app: Celeriac) -> None:
    attempts: list[int] = []

    @app.task(
        bind=True,
        autoretry_for=(ConnectionError,),
        retry_backoff=True,
        retry_jitter=False,
        max_retries=2,
    )
    def down(self: Task[Any, Any]) -> None:
        attempts.append(self.request.retries)
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        down.apply().get()
    assert attempts == [0, 1, 2]


def test_update_state_is_visible_through_async_result(app: Celeriac) -> None:
    @app.task(bind=True)
    def progress(self: Task[Any, Any]) -> None:
        self.update_state(state="PROGRESS", meta={"done": 3, "total": 10})

    progress.apply(task_id="p-1", store_eager_result=True)

    result = app.AsyncResult("p-1")
    assert result.state == "PROGRESS"
    assert result.info == {"done": 3, "total": 10}


def test_send_event_from_a_task_reaches_an_event_subscriber(app: Celeriac) -> None:
    subscription = app.transport.subscribe("celeryev")

    @app.task(bind=True)
    def reporting(self: Task[Any, Any]) -> None:
        self.send_event("task-progress", current=1)

    reporting.apply(task_id="e-1")

    [envelope] = subscription.get(2.0)
    assert b'"task-progress"' in envelope.body
    assert b'"uuid": "e-1"' in envelope.body


def test_add_around_wraps_a_method_of_the_class(app: Celeriac) -> None:
    class Traced(Task[Any, Any]):
        pass

    wrapped_calls: list[str] = []

    def around(original: Any) -> Any:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            wrapped_calls.append("around")
            return original(self, *args, **kwargs)

        return wrapper

    Traced.add_around("__call__", around)

    @app.task(base=Traced)
    def echo(x: int) -> int:
        return x

    assert echo(5) == 5
    assert echo.apply((6,)).get() == 6
    assert wrapped_calls == ["around", "around"]


def test_shadow_name_function_sets_the_display_name(app: Celeriac) -> None:
    def shadow(task: Task[Any, Any], args: Any, kwargs: Any, options: Any) -> str:
        return f"shadow-{args[0]}"

    @app.task(shadow_name=shadow)
    def call(name: str) -> str:
        return name

    call.delay("report")

    assert fetch_message(app).shadow == "shadow-report"


def test_signature_shortcuts_and_immutability(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    partial = add.s(2)
    frozen = add.si(1, 1)

    assert partial.apply((3,)).get() == 5
    assert frozen.apply((100,)).get() == 2
    assert dict(add.signature((1,), {"y": 2}, countdown=5)) == {
        "task": add.name,
        "args": [1],
        "kwargs": {"y": 2},
        "options": {"countdown": 5},
        "subtask_type": None,
        "immutable": False,
    }


def test_request_inside_a_direct_call_is_called_directly(app: Celeriac) -> None:
    @app.task(bind=True)
    def inspect_request(self: Task[Any, Any]) -> tuple[bool, Any]:
        return self.request.called_directly, self.request.args

    assert inspect_request() == (True, ())
