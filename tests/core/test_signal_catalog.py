"""The signal catalog against seeds 000-002: names, arguments, docstrings, the seeds' handlers."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from celeriac import signals
from celeriac.dispatch import Signal
from celeriac.signals import (
    after_task_publish,
    celeryd_after_setup,
    celeryd_init,
    task_failure,
    task_postrun,
    task_sent,
    task_success,
)

CATALOG: list[tuple[str, set[str]]] = [
    (
        "before_task_publish",
        {"body", "exchange", "routing_key", "headers", "properties", "declare", "retry_policy"},
    ),
    ("after_task_publish", {"body", "exchange", "routing_key", "headers"}),
    ("task_prerun", {"task_id", "task", "args", "kwargs"}),
    ("task_postrun", {"task_id", "task", "args", "kwargs", "retval", "state"}),
    ("task_retry", {"request", "reason", "einfo"}),
    ("task_success", {"result"}),
    ("task_failure", {"task_id", "exception", "args", "kwargs", "traceback", "einfo"}),
    (
        "task_internal_error",
        {"task_id", "args", "kwargs", "request", "exception", "traceback", "einfo"},
    ),
    ("task_received", {"request"}),
    ("task_revoked", {"request", "terminated", "signum", "expired"}),
    ("task_unknown", {"name", "id", "message", "exc"}),
    ("task_rejected", {"message", "exc"}),
    ("task_sent", {"task_id", "task", "args", "kwargs", "eta", "taskset"}),
    ("import_modules", set()),
    ("celeryd_after_setup", {"instance", "conf"}),
    ("celeryd_init", {"instance", "conf", "options"}),
    ("worker_init", set()),
    ("worker_before_create_process", set()),
    ("worker_ready", set()),
    ("heartbeat_sent", set()),
    ("worker_shutting_down", {"sig", "how", "exitcode"}),
    ("worker_process_init", set()),
    ("worker_process_shutdown", {"pid", "exitcode"}),
    ("worker_shutdown", set()),
    ("beat_init", set()),
    ("beat_embedded_init", set()),
    ("eventlet_pool_started", set()),
    ("eventlet_pool_preshutdown", set()),
    ("eventlet_pool_postshutdown", set()),
    ("eventlet_pool_apply", {"target", "args", "kwargs"}),
    ("setup_logging", {"loglevel", "logfile", "format", "colorize"}),
    ("after_setup_logger", {"logger", "loglevel", "logfile", "format", "colorize"}),
    ("after_setup_task_logger", {"logger", "loglevel", "logfile", "format", "colorize"}),
    ("user_preload_options", {"app", "options"}),
]


def _signal_docstrings() -> dict[str, str]:
    """Read the docstring written under each signal assignment in the module's source."""
    tree = ast.parse(inspect.getsource(signals))
    docstrings: dict[str, str] = {}
    for statement, following in zip(tree.body, tree.body[1:], strict=False):
        if (
            isinstance(statement, ast.Assign)
            and isinstance(statement.targets[0], ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docstrings[statement.targets[0].id] = following.value.value
    return docstrings


@pytest.mark.parametrize(("name", "providing_args"), CATALOG)
def test_signal_exists_with_its_name_and_documented_arguments(
    name: str, providing_args: set[str]
) -> None:
    signal = getattr(signals, name)

    assert isinstance(signal, Signal)
    assert signal.name == name
    assert signal.providing_args == providing_args


@pytest.mark.parametrize(("name", "providing_args"), CATALOG)
def test_signal_docstring_names_sender_and_every_argument(
    name: str, providing_args: set[str]
) -> None:
    docstring = _signal_docstrings()[name]

    assert "Sender:" in docstring
    for argument in providing_args:
        assert f"``{argument}``" in docstring
    if not providing_args:
        assert "No arguments." in docstring


def test_all_is_sorted_and_lists_exactly_the_catalog() -> None:
    module_signals = {name for name, value in vars(signals).items() if isinstance(value, Signal)}

    assert signals.__all__ == sorted(signals.__all__)
    assert set(signals.__all__) == module_signals
    assert module_signals == {name for name, _ in CATALOG}


def test_signals_are_distinct_objects() -> None:
    instances = [getattr(signals, name) for name, _ in CATALOG]

    assert len({id(instance) for instance in instances}) == len(CATALOG)


def test_connecting_a_catalog_signal_emits_no_warning() -> None:
    def handler(**kwargs: Any) -> None:
        return None

    task_sent.connect(handler)

    assert task_sent.disconnect(handler)


@pytest.fixture
def disconnect_after() -> Iterator[Callable[..., None]]:
    """Disconnect the handlers a test connects to the process-wide catalog signals."""
    connected: list[tuple[Signal, Callable[..., Any], object]] = []

    def remember(signal: Signal, receiver: Callable[..., Any], sender: object = None) -> None:
        connected.append((signal, receiver, sender))

    yield remember
    for signal, receiver, sender in connected:
        signal.disconnect(receiver, sender=sender)


def test_seed_000_task_sent_handler_filtered_by_task_name(
    disconnect_after: Callable[..., None],
) -> None:
    received: list[str] = []

    def task_sent_handler(
        sender: Any = None,
        task_id: Any = None,
        task: Any = None,
        args: Any = None,
        kwargs: Any = None,
        **kwds: Any,
    ) -> None:
        received.append(f"Got signal task_sent for task id {task_id}")

    task_sent.connect(task_sent_handler, sender="tasks.add")
    disconnect_after(task_sent, task_sent_handler, "tasks.add")

    for name, task_id in (("tasks.mul", "id-1"), ("".join(["tasks.", "add"]), "id-2")):
        task_sent.send(
            sender=name, task_id=task_id, task=name, args=(2, 2), kwargs={}, eta=None, taskset=None
        )

    assert received == ["Got signal task_sent for task id id-2"]


def test_seed_001_after_task_publish_decorator_with_sender(
    disconnect_after: Callable[..., None],
) -> None:
    published: list[str] = []

    @after_task_publish.connect(sender="proj.tasks.add")
    def task_sent_handler(
        sender: Any = None, headers: Any = None, body: Any = None, **kwargs: Any
    ) -> None:
        info = headers if "task" in headers else body
        published.append(f"after_task_publish for task id {info['id']}")

    disconnect_after(after_task_publish, task_sent_handler, "proj.tasks.add")

    for name, task_id in (("proj.tasks.mul", "mul-1"), ("proj.tasks.add", "add-1")):
        after_task_publish.send(
            sender=name,
            headers={"task": name, "id": task_id, "lang": "py"},
            body=((2, 2), {}, {}),
            exchange="",
            routing_key="celery",
        )
    after_task_publish.send(
        sender="proj.tasks.add",
        headers={},
        body={"task": "proj.tasks.add", "id": "v1-id"},
        exchange="",
        routing_key="celery",
    )

    assert published == [
        "after_task_publish for task id add-1",
        "after_task_publish for task id v1-id",
    ]


def test_seed_002_task_postrun_handler_sees_the_rest_in_kwargs(
    disconnect_after: Callable[..., None],
) -> None:
    seen: list[object] = []
    task = SimpleNamespace(name="api.task.add")

    @task_postrun.connect
    def task_execute(
        sender: Any = None,
        task_id: Any = None,
        args: Any = None,
        retval: Any = None,
        state: Any = None,
        **kwargs: Any,
    ) -> None:
        seen.extend([sender, task_id, args, kwargs, retval, state])

    disconnect_after(task_postrun, task_execute)

    task_postrun.send(
        sender=task,
        task_id="f2a8c498",
        task=task,
        args=[1, 2],
        kwargs={},
        retval=3,
        state="SUCCESS",
    )

    assert seen == [
        task,
        "f2a8c498",
        [1, 2],
        {"signal": task_postrun, "task": task, "kwargs": {}},
        3,
        "SUCCESS",
    ]


def test_seed_002_task_success_handler_with_positional_sender(
    disconnect_after: Callable[..., None],
) -> None:
    seen: list[object] = []
    task = SimpleNamespace(name="api.task.add")

    @task_success.connect
    def on_task_success(sender: Any, result: Any = None, *args: Any, **kwargs: Any) -> None:
        seen.extend([sender, f"result is {result}", args, kwargs])

    disconnect_after(task_success, on_task_success)

    task_success.send(sender=task, result=3)

    assert seen == [task, "result is 3", (), {"signal": task_success}]
    assert "providing_args={'result'}" in repr(seen[3])


def test_seed_002_task_failure_handler_with_required_arguments(
    disconnect_after: Callable[..., None],
) -> None:
    seen: list[object] = []
    task = SimpleNamespace(name="api.task.add")

    @task_failure.connect
    def on_task_failure(
        sender: Any,
        task_id: Any,
        exception: Any,
        traceback: Any,
        einfo: Any,
        args: Any,
        **kwargs: Any,
    ) -> None:
        seen.extend([sender, task_id, str(exception), einfo, args, kwargs])

    disconnect_after(task_failure, on_task_failure)

    try:
        1 / 0  # noqa: B018 (raise a real ZeroDivisionError with a traceback)
    except ZeroDivisionError as error:
        task_failure.send(
            sender=task,
            task_id="b0ddfeb7",
            exception=error,
            args=[1, 2],
            kwargs={},
            traceback=error.__traceback__,
            einfo="Traceback (most recent call last): ...",
        )

    assert seen == [
        task,
        "b0ddfeb7",
        "division by zero",
        "Traceback (most recent call last): ...",
        [1, 2],
        {"signal": task_failure, "kwargs": {}},
    ]


def test_seed_001_celeryd_init_configures_one_worker_by_node_name(
    disconnect_after: Callable[..., None],
) -> None:
    @celeryd_init.connect(sender="worker12@example.com")
    def configure_worker12(conf: Any = None, **kwargs: Any) -> None:
        conf.task_default_rate_limit = "10/m"

    disconnect_after(celeryd_init, configure_worker12, "worker12@example.com")
    confs = {
        node: SimpleNamespace(task_default_rate_limit=None)
        for node in ("worker11@example.com", "worker12@example.com")
    }

    for node, conf in confs.items():
        instance = SimpleNamespace(app=None, hostname=node)
        celeryd_init.send(sender=node, instance=instance, conf=conf, options={})

    assert confs["worker12@example.com"].task_default_rate_limit == "10/m"
    assert confs["worker11@example.com"].task_default_rate_limit is None


def test_seed_001_celeryd_init_configures_several_workers_without_sender(
    disconnect_after: Callable[..., None],
) -> None:
    @celeryd_init.connect
    def configure_workers(sender: Any = None, conf: Any = None, **kwargs: Any) -> None:
        if sender in ("worker1@example.com", "worker2@example.com"):
            conf.task_default_rate_limit = "10/m"
        if sender == "worker3@example.com":
            conf.worker_prefetch_multiplier = 0

    disconnect_after(celeryd_init, configure_workers)
    nodes = ("worker1@example.com", "worker3@example.com", "worker4@example.com")
    confs = {
        node: SimpleNamespace(task_default_rate_limit=None, worker_prefetch_multiplier=4)
        for node in nodes
    }

    for node, conf in confs.items():
        celeryd_init.send(sender=node, instance=None, conf=conf, options={"concurrency": 2})

    assert confs["worker1@example.com"].task_default_rate_limit == "10/m"
    assert confs["worker3@example.com"].worker_prefetch_multiplier == 0
    assert confs["worker4@example.com"] == SimpleNamespace(
        task_default_rate_limit=None, worker_prefetch_multiplier=4
    )


class QueueSelection:
    """Stands in for the worker's queue table that the seed's handler adds to."""

    def __init__(self) -> None:
        self.added: list[str] = []

    def select_add(self, queue_name: str) -> None:
        self.added.append(queue_name)


def test_seed_001_celeryd_after_setup_adds_a_direct_queue(
    disconnect_after: Callable[..., None],
) -> None:
    ours: list[str] = []

    @celeryd_after_setup.connect
    def setup_direct_queue(sender: Any, instance: Any, **kwargs: Any) -> None:
        queue_name = f"{sender}.dq"  # sender is the nodename of the worker
        instance.app.amqp.queues.select_add(queue_name)
        ours.append(queue_name)

    disconnect_after(celeryd_after_setup, setup_direct_queue)
    queues = QueueSelection()
    instance = SimpleNamespace(
        app=SimpleNamespace(amqp=SimpleNamespace(queues=queues)), hostname="w1@example.com"
    )

    celeryd_after_setup.send(sender="w1@example.com", instance=instance, conf={})

    # The e2e client imports sigproj, whose own copy of this seed handler stays connected
    # in that test process: count this handler's call, then its effect.
    assert ours == ["w1@example.com.dq"]
    assert "w1@example.com.dq" in queues.added


def test_seed_001_user_preload_options_through_the_signals_module(
    disconnect_after: Callable[..., None],
) -> None:
    enabled: list[bool] = []

    @signals.user_preload_options.connect
    def handle_preload_options(options: Any, **kwargs: Any) -> None:
        if options["monitoring"]:
            enabled.append(True)

    disconnect_after(signals.user_preload_options, handle_preload_options)

    signals.user_preload_options.send(sender=None, app=None, options={"monitoring": True})
    signals.user_preload_options.send(sender=None, app=None, options={"monitoring": False})

    assert enabled == [True]
