"""State: the cluster as the event stream shows it, workers and tasks (services layer).

Celery's ``celery.events.state.State``, which monitors (``celery events``, Flower) feed
every received event: ``state.event(event)``. It keeps the newest workers and tasks in
bounded maps, orders task events by ``(clock, timestamp, origin)`` (wire protocol
§5.2) for :meth:`State.tasks_by_time`, and indexes tasks by name and by worker.
Thread-safe for writers: :meth:`State.event` holds a lock, which :meth:`State.freeze_while`
holds around a reader that needs a still picture.
"""

from __future__ import annotations

import bisect
import threading
import time
import weakref
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, TypeVar, overload

from celeriac import states
from celeriac.events.record import (
    HEARTBEAT_DRIFT_MAX,
    HEARTBEAT_EXPIRE_WINDOW,
    TASK_EVENT_TO_STATE,
    Task,
    Worker,
    heartbeat_expires,
)

__all__ = [
    "HEARTBEAT_DRIFT_MAX",
    "HEARTBEAT_EXPIRE_WINDOW",
    "TASK_EVENT_TO_STATE",
    "BoundedDict",
    "State",
    "Task",
    "TaskIndex",
    "Worker",
    "heartbeat_expires",
]

R = TypeVar("R")
V = TypeVar("V")

EventBody = Mapping[str, Any]
# What State.event returns: ((worker or task, created), subject) for worker and task
# events, (what the handler returned, subject) for a group in State.handlers, else None.
EventOutcome = tuple[Any, str] | None
GroupHandler = Callable[[str, EventBody], object]


class BoundedDict(OrderedDict[str, V]):
    """A dict that keeps only the ``limit`` entries added last (None: all)."""

    def __init__(self, limit: int | None) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: str, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        if self.limit is not None:
            while len(self) > self.limit:
                self.popitem(last=False)


class TaskIndex(defaultdict[str, "weakref.WeakSet[Task]"]):
    """Tasks by a key (type name, worker hostname): ``index[key]`` is their set, and
    ``index(key, limit=None, reverse=True)`` yields their ``(uuid, task)`` by time,
    as Celery's ``state.tasks_by_type`` allows both."""

    def __init__(self, by_time: Callable[[str, int | None, bool], Iterator[tuple[str, Task]]]):
        super().__init__(weakref.WeakSet)
        self._by_time = by_time

    def __call__(
        self, key: str, limit: int | None = None, reverse: bool = True
    ) -> Iterator[tuple[str, Task]]:
        return self._by_time(key, limit, reverse)


@dataclass(frozen=True, slots=True, eq=False)
class _Moment:
    """When a task event happened, for the time-ordered list of task events.

    Ordered as Celery's monitors order events: by Lamport clock, the origin breaking a
    tie, or by timestamp when either has no clock.
    """

    clock: int
    timestamp: float
    origin: str
    task: weakref.ref[Task]

    def __lt__(self, other: _Moment) -> bool:
        if self.clock and other.clock:
            if self.clock == other.clock:
                return self.origin < other.origin
            return self.clock < other.clock
        return self.timestamp < other.timestamp


def _moment_of(task: Task) -> _Moment:
    """The moment of a task's last event, as far as the task remembers it."""
    return _Moment(task.clock, task.timestamp or 0.0, task.origin or "", weakref.ref(task))


class State:
    """Records the cluster's state from its events.

    Args:
        callback: called as ``callback(state, event)`` for every event.
        max_workers_in_memory, max_tasks_in_memory: how many of the newest are kept.
        on_node_join: called with a worker on its first event and on ``worker-online``.
        on_node_leave: called with a worker on ``worker-offline``, which then forgets it
            (without this callback the worker stays, not alive).
        now: the wall clock the workers' liveness is judged by.
    """

    heap_multiplier = 4

    def __init__(
        self,
        callback: Callable[[State, EventBody], object] | None = None,
        *,
        max_workers_in_memory: int = 5000,
        max_tasks_in_memory: int = 10000,
        on_node_join: Callable[[Worker], object] | None = None,
        on_node_leave: Callable[[Worker], object] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.event_callback = callback
        self.max_workers_in_memory = max_workers_in_memory
        self.max_tasks_in_memory = max_tasks_in_memory
        self.on_node_join = on_node_join
        self.on_node_leave = on_node_leave
        self.now = now
        self.workers: BoundedDict[Worker] = BoundedDict(max_workers_in_memory)
        self.tasks: BoundedDict[Task] = BoundedDict(max_tasks_in_memory)
        self.event_count = 0
        self.task_count = 0
        # Custom event groups: group -> handler(subject, event).
        self.handlers: dict[str, GroupHandler] = {}
        self.tasks_by_type = TaskIndex(self._tasks_by_type)
        self.tasks_by_worker = TaskIndex(self._tasks_by_worker)
        self._taskheap: list[_Moment] = []
        self._seen_types: set[str] = set()
        # Children whose parent has not been seen yet: parent id -> children.
        self._tasks_to_resolve: dict[str, weakref.WeakSet[Task]] = {}
        self._mutex = threading.Lock()

    # ---- taking events in ------------------------------------------------------------

    @overload
    def event(self, event: EventBody) -> EventOutcome: ...

    @overload
    def event(self, event: Sequence[EventBody]) -> list[EventOutcome]: ...

    def event(self, event: EventBody | Sequence[EventBody]) -> EventOutcome | list[EventOutcome]:
        """Take in one event, or a batch (the list body of ``task.multi``) in its order.

        An event that did not pass through a receiver has no ``local_received``; it
        counts as received now.
        """
        with self._mutex:
            if isinstance(event, Mapping):
                return self._event(event)
            return [self._event(each) for each in event]

    def freeze_while(
        self, fun: Callable[..., R], *args: Any, clear_after: bool = False, **kwargs: Any
    ) -> R:
        """Call ``fun(*args, **kwargs)`` while no event can change the state.

        With ``clear_after`` the state is cleared afterwards, in the same hold (an events
        camera takes a snapshot, then starts afresh).
        """
        with self._mutex:
            try:
                return fun(*args, **kwargs)
            finally:
                if clear_after:
                    self._clear(ready=True)

    def _event(self, event: EventBody) -> EventOutcome:
        self.event_count += 1
        if self.event_callback is not None:
            self.event_callback(self, event)
        group, _, subject = str(event["type"]).partition("-")
        handler = self.handlers.get(group)
        if handler is not None:
            return handler(subject, event), subject
        if group == "worker":
            hostname = event.get("hostname")
            if hostname is None:
                return None
            return self._worker_event(str(hostname), subject, event), subject
        if group == "task":
            return self._task_event(subject, event), subject
        return None

    def _worker_event(self, hostname: str, subject: str, event: EventBody) -> tuple[Worker, bool]:
        local_received = event.get("local_received") or self.now()
        is_offline = subject == "offline"
        worker = self.workers.get(hostname)
        created = worker is None
        if worker is None:
            worker = Worker(hostname, now=self.now)
            if is_offline:
                created = False
            else:
                self.workers[hostname] = worker
        worker.event(subject, event.get("timestamp"), local_received, event)
        if self.on_node_join is not None and (created or subject == "online"):
            self.on_node_join(worker)
        if self.on_node_leave is not None and is_offline:
            self.on_node_leave(worker)
            self.workers.pop(hostname, None)
        return worker, created

    def _task_event(self, subject: str, event: EventBody) -> tuple[Task, bool]:
        uuid = str(event["uuid"])
        hostname = str(event.get("hostname"))
        timestamp = event.get("timestamp")
        local_received = event.get("local_received") or self.now()
        task = self.tasks.get(uuid)
        created = task is None
        if task is None:
            task = self.tasks[uuid] = Task(uuid, cluster_state=self)
        if subject == "sent":
            # Sent by a client, not a worker.
            task.client = hostname
            origin = hostname
        else:
            worker = self.workers.get(hostname)
            if worker is None:
                worker = self.workers[hostname] = Worker(hostname, now=self.now)
            task.worker = worker
            # A worker's task events count as its heartbeats, received at our time.
            worker.event(None, timestamp, local_received)
            origin = worker.id
        clock = event.get("clock") or 0
        self._add_moment(_Moment(clock, timestamp or 0.0, origin, weakref.ref(task)))
        if subject == "received":
            self.task_count += 1
        task.event(subject, timestamp, local_received, event)
        self._index(task)
        return task, created

    def _add_moment(self, moment: _Moment) -> None:
        heap = self._taskheap
        if len(heap) + 1 > self.max_tasks_in_memory * self.heap_multiplier:
            del heap[0]
        # Most events come after the one before them.
        if heap and heap[-1] < moment:
            heap.append(moment)
        else:
            bisect.insort(heap, moment)

    def _index(self, task: Task) -> None:
        """File the task under its name, its worker and its parent once they are known."""
        if task.name is not None:
            self._seen_types.add(task.name)
            self.tasks_by_type[task.name].add(task)
        if task.worker is not None and task.worker.hostname is not None:
            self.tasks_by_worker[task.worker.hostname].add(task)
        if task.parent_id:
            parent = self.tasks.get(task.parent_id)
            if parent is None:
                self._tasks_to_resolve.setdefault(task.parent_id, weakref.WeakSet()).add(task)
            else:
                parent.children.add(task)
        if task.uuid is not None:
            children = self._tasks_to_resolve.pop(task.uuid, None)
            if children is not None:
                task.children.update(children)

    # ---- reading -----------------------------------------------------------------------

    def get_or_create_worker(self, hostname: str, **fields: Any) -> tuple[Worker, bool]:
        """Return ``(worker, created)``; ``fields`` update a known worker."""
        worker = self.workers.get(hostname)
        if worker is not None:
            if fields:
                worker.update(fields)
            return worker, False
        worker = self.workers[hostname] = Worker(hostname, now=self.now, **fields)
        return worker, True

    def get_or_create_task(self, uuid: str) -> tuple[Task, bool]:
        """Return ``(task, created)``."""
        task = self.tasks.get(uuid)
        if task is not None:
            return task, False
        task = self.tasks[uuid] = Task(uuid, cluster_state=self)
        return task, True

    def itertasks(self, limit: int | None = None) -> Iterator[tuple[str, Task]]:
        """Yield ``(uuid, task)``, oldest first, at most ``limit``."""
        yield from islice(list(self.tasks.items()), limit)

    def tasks_by_time(
        self, limit: int | None = None, reverse: bool = True
    ) -> Iterator[tuple[str, Task]]:
        """Yield ``(uuid, task)`` by the time of their last event, newest first unless
        ``reverse`` is False; at most ``limit`` tasks."""
        moments = reversed(self._taskheap) if reverse else iter(self._taskheap)
        seen: set[str] = set()
        for moment in moments:
            task = moment.task()
            if task is None or task.uuid is None or task.uuid in seen:
                continue
            if limit is not None and len(seen) >= limit:
                return
            seen.add(task.uuid)
            yield task.uuid, task

    tasks_by_timestamp = tasks_by_time

    def _tasks_by_type(
        self, name: str, limit: int | None = None, reverse: bool = True
    ) -> Iterator[tuple[str, Task]]:
        by_time = self.tasks_by_time(reverse=reverse)
        return islice(((uuid, task) for uuid, task in by_time if task.name == name), limit)

    def _tasks_by_worker(
        self, hostname: str, limit: int | None = None, reverse: bool = True
    ) -> Iterator[tuple[str, Task]]:
        by_time = self.tasks_by_time(reverse=reverse)
        matching = (
            (uuid, task)
            for uuid, task in by_time
            if task.worker is not None and task.worker.hostname == hostname
        )
        return islice(matching, limit)

    def task_types(self) -> list[str]:
        """The names of every task type seen, sorted."""
        return sorted(self._seen_types)

    def alive_workers(self) -> Iterator[Worker]:
        """The workers that look alive (a heartbeat within their expiry window)."""
        return (worker for worker in list(self.workers.values()) if worker.alive)

    # ---- forgetting --------------------------------------------------------------------

    def clear_tasks(self, ready: bool = True) -> None:
        """Forget the tasks: the finished ones (``ready``) or all."""
        with self._mutex:
            self._clear_tasks(ready)

    def clear(self, ready: bool = True) -> None:
        """Forget the workers, the tasks (the finished ones, or all) and the counts."""
        with self._mutex:
            self._clear(ready)

    def _clear(self, ready: bool) -> None:
        self.workers.clear()
        self._clear_tasks(ready)
        self.event_count = 0
        self.task_count = 0

    def _clear_tasks(self, ready: bool) -> None:
        unfinished = [task for task in self.tasks.values() if task.state not in states.READY_STATES]
        self.tasks.clear()
        self.tasks_by_type.clear()
        self.tasks_by_worker.clear()
        self._tasks_to_resolve.clear()
        self._taskheap.clear()
        for task in unfinished if ready else []:
            self.tasks[str(task.uuid)] = task
            self._add_moment(_moment_of(task))
            self._index(task)

    def __repr__(self) -> str:
        return f"<State: events={self.event_count} tasks={self.task_count}>"
