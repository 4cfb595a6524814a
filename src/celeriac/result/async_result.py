"""AsyncResult (one task's outcome, read from the result backend) and EagerResult.

Reading never busy-polls when the backend can wait (SQLite and memory wake waiters on
store; Redis uses pub/sub). ``get()`` re-raises a failed task's own exception type. A
result's ``parent`` is the result before it in a chain; its ``children`` are the results
of the tasks it started, as the worker recorded them (wire protocol §7.1).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from celeriac import states
from celeriac.current import get_current_task
from celeriac.exceptions import IncompleteStream, TimeoutError
from celeriac.protocol.result_meta import pending_meta, result_from_meta
from celeriac.utils.graph import DependencyGraph

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.backends.base import Meta, ResultBackend
    from celeriac.result.result_set import GroupResult

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


class ResultBase:
    """Base class of every result: an AsyncResult or a set of them."""

    parent: AsyncResult[Any] | GroupResult | None = None
    """The result before this one in a chain, if any."""


class AsyncResult(ResultBase, Generic[R]):
    """The pending or finished outcome of a task, by id."""

    def __init__(
        self,
        id: str,
        backend: ResultBackend | None = None,
        task_name: str | None = None,
        app: Celeriac | None = None,
        parent: AsyncResult[Any] | GroupResult | None = None,
    ) -> None:
        if id is None:
            raise ValueError(f"AsyncResult needs a task id, got {id!r}")
        self.id = str(id)
        self._backend = backend
        self._app = app
        self.task_name = task_name
        self.parent = parent
        self._ignored = False
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

    @property
    def ignored(self) -> bool:
        """True if the task was sent with ``ignore_result``: ``get()`` then returns None."""
        return self._ignored

    @ignored.setter
    def ignored(self, value: bool) -> None:
        self._ignored = value

    def _get_task_meta(self) -> Meta:
        if self._cache is not None:
            return self._cache
        meta = self.backend.get(self.id) or pending_meta(self.id)
        self._set_cache(meta)
        return meta

    def _set_cache(self, meta: Meta) -> None:
        """Keep ``meta`` if it is final: a ready state is never read again."""
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

        A failed task's exception is re-raised (``propagate``) with its own type; with
        ``follow_parents``, so is the first failure along the chain of parents.
        Raises ``celeriac.exceptions.TimeoutError`` after ``timeout`` seconds.
        """
        if self.ignored:
            return None  # type: ignore[return-value]  # nothing will ever be stored
        if disable_sync_subtasks:
            assert_will_not_block()
        following = follow_parents and propagate and self.parent is not None
        if following:
            self._raise_parent_failure()
        meta = self._cache or self._wait(timeout, interval, following)
        if following:
            self._raise_parent_failure()
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

    def _wait(self, timeout: float | None, interval: float, following: bool) -> Meta:
        """Wait for a ready state; when following parents, look at them every ``interval``.

        A parent that fails while we wait (a chain hop before this one) ends the wait
        with its error, as in Celery, instead of waiting out the timeout.
        """
        if not following or interval <= 0:
            return self.backend.wait(self.id, timeout, interval)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            step = interval if remaining is None else min(interval, remaining)
            try:
                return self.backend.wait(self.id, step, interval)
            except TimeoutError:
                if remaining is not None and remaining <= step:
                    raise
            self._raise_parent_failure()

    def _raise_parent_failure(self) -> None:
        """Raise the exception of the failed parent nearest the start of the chain."""
        parents: list[AsyncResult[Any] | GroupResult] = []
        node = self.parent
        while node is not None:
            parents.append(node)
            node = node.parent
        for ancestor in reversed(parents):
            ancestor.maybe_throw()

    def maybe_throw(
        self, propagate: bool = True, callback: Callable[[str, Any], None] | None = None
    ) -> Any:
        """Raise the task's exception if it failed; else return its current value."""
        meta = self._get_task_meta()
        value = result_from_meta(meta)
        is_failure = meta.get("status") in states.PROPAGATE_STATES
        if propagate and is_failure and isinstance(value, BaseException):
            raise value
        if callback is not None:
            callback(self.id, value)
        return value

    maybe_reraise = maybe_throw

    def forget(self) -> None:
        """Delete the stored result."""
        self._cache = None
        self.backend.forget(self.id)

    def revoke(
        self,
        connection: Any = None,
        terminate: bool = False,
        signal: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """Tell the workers to skip this task (``terminate``: and end it where it runs).

        With ``wait`` the workers' replies are returned, collected for ``timeout`` seconds.
        """
        return self.app.control.revoke(
            self.id,
            connection=connection,
            terminate=terminate,
            signal=signal or "SIGTERM",
            reply=wait,
            timeout=1.0 if timeout is None else timeout,
        )

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
    def children(self) -> list[AsyncResult[Any] | GroupResult]:
        """Results of the tasks this task sent while running; a group's is a GroupResult."""
        # result_set builds on this module, so it is imported on use.
        from celeriac.result.result_set import result_from_tuple

        return [
            result_from_tuple(child, self.app)
            for child in self._get_task_meta().get("children") or []
        ]

    def iterdeps(
        self, intermediate: bool = False
    ) -> Iterator[tuple[AsyncResult[Any] | GroupResult | None, AsyncResult[Any] | GroupResult]]:
        """Yield (parent, node) pairs over this result and its children, breadth first.

        The children of a task are known only once it is ready: on reaching a node that
        is still not ready when the next pair is asked for, raise ``IncompleteStream``,
        unless ``intermediate`` (its children are then skipped).
        """
        queue: deque[
            tuple[AsyncResult[Any] | GroupResult | None, AsyncResult[Any] | GroupResult]
        ] = deque([(None, self)])
        while queue:
            parent, node = queue.popleft()
            yield parent, node
            if node.ready():
                queue.extend((node, child) for child in node.children)
            elif not intermediate:
                raise IncompleteStream(f"{node!r} is not ready yet")

    def collect(
        self, intermediate: bool = False, **kwargs: Any
    ) -> Iterator[tuple[AsyncResult[Any] | GroupResult, Any]]:
        """Yield (result, value) for this result and every result below it, waiting for each.

        ``kwargs`` go to each ``get()``; a GroupResult's value is the list of its values.
        """
        for _, node in self.iterdeps(intermediate=intermediate):
            yield node, node.get(**kwargs)

    def get_leaf(self) -> Any:
        """Wait for every result of the tree and return the value of the last one reached."""
        value = None
        for _, node in self.iterdeps():
            value = node.get()
        return value

    @property
    def graph(self) -> DependencyGraph[AsyncResult[Any] | GroupResult]:
        """The tree of results below this one, as ``build_graph()`` makes it."""
        return self.build_graph()

    def build_graph(
        self,
        intermediate: bool = False,
        formatter: Callable[[AsyncResult[Any] | GroupResult], str] | None = None,
    ) -> DependencyGraph[AsyncResult[Any] | GroupResult]:
        """Return a graph with an edge from each result to each of its children.

        ``formatter`` labels a node in ``to_dot``; by default it is the result's id.
        """
        graph: DependencyGraph[AsyncResult[Any] | GroupResult] = DependencyGraph(
            formatter=formatter or _result_label
        )
        for parent, node in self.iterdeps(intermediate=intermediate):
            graph.add_arc(node)
            if parent is not None:
                graph.add_edge(parent, node)
        return graph

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
        """The nested-tuple form stored in ``children``: ``((id, parent tuple), None)``."""
        parent = self.parent.as_tuple() if self.parent is not None else None
        return (self.id, parent), None

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
    """The outcome of a task run locally with ``apply()``: already known, never stored."""

    def __init__(
        self,
        id: str,
        ret_value: Any,
        state: str,
        traceback: str | None = None,
        name: str | None = None,
        app: Celeriac | None = None,
        parent: AsyncResult[Any] | GroupResult | None = None,
    ) -> None:
        super().__init__(id, task_name=name, app=app, parent=parent)
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
        """Return the value, or raise the exception of a failed run (``propagate``).

        Like Celery's, it refuses inside a task run by a worker (``disable_sync_subtasks``).
        With ``follow_parents`` a failed parent's exception comes first, as it does for
        an AsyncResult, so an eager canvas fails the way a worker-run one does.
        """
        if disable_sync_subtasks:
            assert_will_not_block()
        if follow_parents and propagate:
            self._raise_parent_failure()
        value = self._get_task_meta()["result"]
        if callback is not None:
            callback(self.id, value)
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
        return type(self), (
            self.id,
            meta["result"],
            meta["status"],
            meta["traceback"],
            self.task_name,
            None,
            self.parent,
        )


def _result_label(node: AsyncResult[Any] | GroupResult) -> str:
    return node.id
