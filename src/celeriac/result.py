"""Results: AsyncResult (a task's outcome read from the result backend) and EagerResult.

Reading never busy-polls when the backend can wait (SQLite and memory wake waiters on
store; Redis uses pub/sub). ``get()`` re-raises a failed task's own exception type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from celeriac import states
from celeriac.current import get_current_task
from celeriac.protocol.result_meta import pending_meta, result_from_meta

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.backends.base import Meta, ResultBackend

R = TypeVar("R")


def assert_will_not_block() -> None:
    """Refuse to wait for a result inside a running task: it can deadlock the worker."""
    task = get_current_task()
    if task is not None:
        request = task.request
        if not request.called_directly and not request.is_eager:
            raise RuntimeError(
                "Never call result.get() within a task! See "
                "https://docs.celeryq.dev/en/latest/userguide/tasks.html#avoid-launching-synchronous-subtasks"
            )


class AsyncResult(Generic[R]):
    """The pending or finished outcome of a task, by id."""

    def __init__(
        self,
        id: str,
        backend: ResultBackend | None = None,
        task_name: str | None = None,
        app: Celeriac | None = None,
        parent: AsyncResult[Any] | None = None,
    ) -> None:
        if id is None:
            raise ValueError(f"AsyncResult needs a task id, got {id!r}")
        self.id = str(id)
        self._backend = backend
        self._app = app
        self.task_name = task_name
        self.parent = parent
        self._cache: Meta | None = None

    @property
    def task_id(self) -> str:
        """Celery's older name for ``id``."""
        return self.id

    @property
    def app(self) -> Celeriac:
        """The app whose backend holds this result."""
        if self._app is None:
            from celeriac.current import get_current_app

            self._app = get_current_app()
        return self._app

    @property
    def backend(self) -> ResultBackend:
        """The result backend read by this result."""
        return self._backend if self._backend is not None else self.app.backend

    def _get_task_meta(self) -> Meta:
        if self._cache is not None:
            return self._cache
        meta = self.backend.get(self.id) or pending_meta(self.id)
        if meta.get("status") in states.READY_STATES:
            self._cache = meta
        return meta

    def _set_cache(self, meta: Meta) -> None:
        if meta.get("status") in states.READY_STATES:
            self._cache = meta

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        no_ack: bool = True,
        follow_parents: bool = True,
        callback: Callable[[str, Any], None] | None = None,
        on_message: Callable[[Meta], None] | None = None,
        on_interval: Callable[[], None] | None = None,
        disable_sync_subtasks: bool = True,
        EXCEPTION_STATES: frozenset[str] = states.EXCEPTION_STATES,
        PROPAGATE_STATES: frozenset[str] = states.PROPAGATE_STATES,
    ) -> R:
        """Wait until the task is ready and return its value.

        A failed task's exception is re-raised (``propagate``) with its own type.
        Raises ``celeriac.exceptions.TimeoutError`` after ``timeout`` seconds.
        """
        if disable_sync_subtasks:
            assert_will_not_block()
        if follow_parents and propagate and self.parent is not None:
            self.parent.maybe_throw()
        meta = self._cache or self.backend.wait(self.id, timeout, interval)
        self._set_cache(meta)
        if on_message is not None:
            on_message(meta)
        value = result_from_meta(meta)
        if callback is not None:
            callback(self.id, value)
        if (
            propagate
            and meta.get("status") in PROPAGATE_STATES
            and isinstance(value, BaseException)
        ):
            raise value
        return value  # type: ignore[no-any-return]

    wait = get

    def maybe_throw(self, propagate: bool = True) -> None:
        """Raise the task's exception if it failed."""
        meta = self._get_task_meta()
        value = result_from_meta(meta)
        is_failure = meta.get("status") in states.PROPAGATE_STATES
        if propagate and is_failure and isinstance(value, BaseException):
            raise value

    def forget(self) -> None:
        """Delete the stored result."""
        self._cache = None
        self.backend.forget(self.id)

    def ready(self) -> bool:
        """True once the task succeeded, failed or was revoked."""
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        """True if the task succeeded."""
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        """True if the task failed."""
        return self.state == states.FAILURE

    @property
    def state(self) -> str:
        """The task's state: PENDING, STARTED, RETRY, SUCCESS, FAILURE, REVOKED or custom."""
        return str(self._get_task_meta()["status"])

    status = state

    @property
    def result(self) -> Any:
        """The return value, or the exception for a failed task, or meta for custom states."""
        return result_from_meta(self._get_task_meta())

    info = result

    @property
    def traceback(self) -> str | None:
        """The formatted traceback of a failed task."""
        value = self._get_task_meta().get("traceback")
        return str(value) if value is not None else None

    @property
    def date_done(self) -> datetime | None:
        """When the task finished, as an aware datetime."""
        value = self._get_task_meta().get("date_done")
        if isinstance(value, datetime) or value is None:
            return value
        return datetime.fromisoformat(str(value))

    @property
    def children(self) -> list[AsyncResult[Any]]:
        """Results of the tasks this task sent while running."""
        return [
            result_from_tuple(child, self.app)
            for child in self._get_task_meta().get("children") or []
        ]

    def _extended(self, key: str) -> Any:
        return self._get_task_meta().get(key)

    @property
    def name(self) -> str | None:
        """The task name (stored with ``result_extended``)."""
        return self._extended("name") or self.task_name

    @property
    def args(self) -> Any:
        """The task's positional arguments (stored with ``result_extended``)."""
        return self._extended("args")

    @property
    def kwargs(self) -> Any:
        """The task's keyword arguments (stored with ``result_extended``)."""
        return self._extended("kwargs")

    @property
    def worker(self) -> str | None:
        """The node that ran the task (stored with ``result_extended``)."""
        return self._extended("worker")  # type: ignore[no-any-return]

    @property
    def retries(self) -> int | None:
        """How often the task was retried (stored with ``result_extended``)."""
        return self._extended("retries")  # type: ignore[no-any-return]

    @property
    def queue(self) -> str | None:
        """The queue the task came from (stored with ``result_extended``)."""
        return self._extended("queue")  # type: ignore[no-any-return]

    def as_tuple(self) -> tuple[Any, ...]:
        """The nested-tuple form Celery stores in ``children``."""
        parent = self.parent.as_tuple() if self.parent is not None else None
        return (self.id, parent), None

    def iterdeps(self) -> Iterator[tuple[AsyncResult[Any] | None, AsyncResult[Any]]]:
        """Yield (parent, child) pairs of this result's tree, depth first."""
        stack: list[tuple[AsyncResult[Any] | None, AsyncResult[Any]]] = [(None, self)]
        while stack:
            parent, node = stack.pop()
            yield parent, node
            stack.extend((node, child) for child in node.children)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id}>"

    def __str__(self) -> str:
        return self.id

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.id, None, self.task_name, None, self.parent)


class EagerResult(AsyncResult[R]):
    """The outcome of a task run locally with ``apply()``: already known."""

    def __init__(
        self,
        id: str,
        ret_value: Any,
        state: str,
        traceback: str | None = None,
        name: str | None = None,
        app: Celeriac | None = None,
    ) -> None:
        super().__init__(id, task_name=name, app=app)
        self._cache = {
            "status": state,
            "result": ret_value,
            "traceback": traceback,
            "children": [],
            "task_id": id,
        }

    def _get_task_meta(self) -> Meta:
        assert self._cache is not None
        return self._cache

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        no_ack: bool = True,
        follow_parents: bool = True,
        callback: Callable[[str, Any], None] | None = None,
        on_message: Callable[[Meta], None] | None = None,
        on_interval: Callable[[], None] | None = None,
        disable_sync_subtasks: bool = True,
        EXCEPTION_STATES: frozenset[str] = states.EXCEPTION_STATES,
        PROPAGATE_STATES: frozenset[str] = states.PROPAGATE_STATES,
    ) -> R:
        """Return the value, or raise the exception of a failed run (``propagate``)."""
        value = self._get_task_meta()["result"]
        if propagate and self.state in PROPAGATE_STATES and isinstance(value, BaseException):
            raise value
        return value  # type: ignore[no-any-return]

    wait = get

    @property
    def result(self) -> Any:
        """The return value or exception."""
        return self._get_task_meta()["result"]

    info = result

    def forget(self) -> None:
        """Nothing is stored for an eager result."""

    def __reduce__(self) -> tuple[Any, ...]:
        meta = self._get_task_meta()
        return type(self), (self.id, meta["result"], meta["status"], meta["traceback"])


def result_from_tuple(data: Any, app: Celeriac | None = None) -> AsyncResult[Any]:
    """Rebuild an AsyncResult from Celery's nested-tuple form ``[[id, parent], None]``."""
    (task_id, parent), _ = data
    parent_result = result_from_tuple(parent, app) if parent else None
    return AsyncResult(task_id, app=app, parent=parent_result)
