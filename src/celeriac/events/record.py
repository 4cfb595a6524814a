"""Worker and Task: one node and one task as the event stream shows them (services layer).

Celery's ``celery.events.state.Worker`` and ``Task``, which :class:`~celeriac.events.state.State`
keeps up to date. Every field of an event becomes an attribute, as in Celery, so a
monitor reads ``task.result`` or ``worker.loadavg`` straight from the last event.
Liveness follows wire protocol §5.4: a worker is alive until ``freq * 2`` seconds
(``HEARTBEAT_EXPIRE_WINDOW`` per cent of ``freq``) after the last heartbeat received.
"""

from __future__ import annotations

import bisect
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from celeriac import states

if TYPE_CHECKING:
    from celeriac.events.state import State

__all__ = [
    "HEARTBEAT_DRIFT_MAX",
    "HEARTBEAT_EXPIRE_WINDOW",
    "TASK_EVENT_TO_STATE",
    "Task",
    "Worker",
    "heartbeat_expires",
]

logger = logging.getLogger(__name__)

# Per cent of a worker's ``freq`` after its last heartbeat that it still counts as alive.
HEARTBEAT_EXPIRE_WINDOW = 200

# Seconds between an event's timestamp and its receipt past which clocks look unsynchronised.
HEARTBEAT_DRIFT_MAX = 16

# The state each task event puts a task in; other task events are custom states.
TASK_EVENT_TO_STATE = {
    "sent": states.PENDING,
    "received": states.RECEIVED,
    "started": states.STARTED,
    "failed": states.FAILURE,
    "retried": states.RETRY,
    "succeeded": states.SUCCESS,
    "revoked": states.REVOKED,
    "rejected": states.REJECTED,
}


def heartbeat_expires(
    timestamp: float, freq: float = 60, expire_window: float = HEARTBEAT_EXPIRE_WINDOW
) -> float:
    """Return when a heartbeat received at ``timestamp`` stops counting."""
    return float(timestamp) + float(freq) * (expire_window / 100)


def _assign(record: object, fields: Mapping[str, Any], reserved: Iterable[str]) -> None:
    """Set each event field as an attribute, except the record's own methods and properties."""
    attributes = vars(record)
    for key, value in fields.items():
        if key not in reserved and not key.startswith("_"):
            attributes[key] = value


class Worker:
    """A worker node: its last event's fields and the local times of its last heartbeats.

    Args:
        now: the wall clock :attr:`alive` compares the heartbeats with.
    """

    heartbeat_max: ClassVar[int] = 4
    expire_window: ClassVar[float] = HEARTBEAT_EXPIRE_WINDOW
    _reserved: ClassVar[frozenset[str]] = frozenset(
        {"event", "update", "alive", "heartbeat_expires", "heartbeats", "id", "status_string"}
    )

    def __init__(
        self,
        hostname: str | None = None,
        pid: int | None = None,
        freq: float = 60,
        heartbeats: list[float] | None = None,
        clock: int = 0,
        active: int | None = None,
        processed: int | None = None,
        loadavg: list[float] | None = None,
        sw_ident: str | None = None,
        sw_ver: str | None = None,
        sw_sys: str | None = None,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.hostname = hostname
        self.pid = pid
        self.freq = freq
        self.heartbeats: list[float] = [] if heartbeats is None else heartbeats
        self.clock = clock or 0
        self.active = active
        self.processed = processed
        self.loadavg = loadavg
        self.sw_ident = sw_ident
        self.sw_ver = sw_ver
        self.sw_sys = sw_sys
        self._now = now
        self._warned_of_drift = False

    def event(
        self,
        type_: str | None,
        timestamp: float | None = None,
        local_received: float | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        """Take in an event of this worker: ``online``, ``heartbeat``, ``offline``, or
        None for a task event, which counts as a heartbeat too.

        ``offline`` forgets the heartbeats, so the worker is at once not alive.
        """
        _assign(self, fields or {}, self._reserved)
        if type_ == "offline":
            self.heartbeats.clear()
            return
        if not local_received or not timestamp:
            return
        drift = abs(int(local_received) - int(timestamp))
        if drift > HEARTBEAT_DRIFT_MAX and not self._warned_of_drift:
            self._warned_of_drift = True
            logger.warning(
                "Substantial drift from %s may mean clocks are out of sync. Current drift "
                "is %s seconds. [orig: %s recv: %s]",
                self.hostname,
                drift,
                datetime.fromtimestamp(timestamp),
                datetime.fromtimestamp(local_received),
            )
        if len(self.heartbeats) >= self.heartbeat_max:
            del self.heartbeats[0]
        bisect.insort(self.heartbeats, local_received)

    def update(self, fields: Mapping[str, Any], **more: Any) -> None:
        """Set attributes from ``fields`` and ``more``."""
        for key, value in {**fields, **more}.items():
            setattr(self, key, value)

    @property
    def heartbeat_expires(self) -> float:
        """When the last heartbeat stops counting (the worker must have one)."""
        return heartbeat_expires(self.heartbeats[-1], self.freq, self.expire_window)

    @property
    def alive(self) -> bool:
        """Whether a heartbeat came within the last ``freq * expire_window / 100`` seconds."""
        return bool(self.heartbeats) and self._now() < self.heartbeat_expires

    @property
    def status_string(self) -> str:
        """``ONLINE`` or ``OFFLINE``."""
        return "ONLINE" if self.alive else "OFFLINE"

    @property
    def id(self) -> str:
        """``<hostname>.<pid>``."""
        return f"{self.hostname}.{self.pid}"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Worker):
            return self.hostname == other.hostname
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.hostname)

    def __repr__(self) -> str:
        return f"<Worker: {self.hostname} ({self.status_string} clock:{self.clock})"


class Task:
    """A task: the fields of its events, merged in the order of state precedence.

    An event whose state ranks below the current one happened before it and arrived
    late; it only adds the fields of its merge rule (a late ``task-received`` brings
    ``name``, ``args``...), never moves the state back. RETRY always moves (wire §8).
    """

    name: str | None = None
    state: str = states.PENDING
    sent: float | None = None
    received: float | None = None
    started: float | None = None
    succeeded: float | None = None
    failed: float | None = None
    retried: float | None = None
    revoked: float | None = None
    rejected: float | None = None
    args: str | None = None
    kwargs: str | None = None
    eta: str | None = None
    expires: str | None = None
    retries: int | None = None
    worker: Worker | None = None
    result: str | None = None
    exception: str | None = None
    traceback: str | None = None
    timestamp: float | None = None
    runtime: float | None = None
    exchange: str | None = None
    routing_key: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    client: str | None = None
    clock: int = 0

    merge_rules: ClassVar[dict[str, tuple[str, ...]]] = {
        states.RECEIVED: (
            "name",
            "args",
            "kwargs",
            "parent_id",
            "root_id",
            "retries",
            "eta",
            "expires",
        ),
    }
    _info_fields: ClassVar[tuple[str, ...]] = (
        "args",
        "kwargs",
        "retries",
        "result",
        "eta",
        "runtime",
        "expires",
        "exception",
        "exchange",
        "routing_key",
        "root_id",
        "parent_id",
    )
    _fields: ClassVar[tuple[str, ...]] = (
        "uuid",
        "name",
        "state",
        "received",
        "sent",
        "started",
        "rejected",
        "succeeded",
        "failed",
        "retried",
        "revoked",
        "args",
        "kwargs",
        "eta",
        "expires",
        "retries",
        "worker",
        "result",
        "exception",
        "timestamp",
        "runtime",
        "traceback",
        "exchange",
        "routing_key",
        "clock",
        "client",
        "root_id",
        "parent_id",
    )
    _reserved: ClassVar[frozenset[str]] = frozenset(
        {"event", "info", "as_dict", "id", "origin", "ready", "parent", "root", "children"}
    )

    def __init__(
        self, uuid: str | None = None, cluster_state: State | None = None, **fields: Any
    ) -> None:
        self.uuid = uuid
        self.cluster_state = cluster_state
        self.children: weakref.WeakSet[Task] = weakref.WeakSet()
        _assign(self, fields, self._reserved)

    def event(
        self,
        type_: str,
        timestamp: float | None = None,
        local_received: float | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        """Take in the task event ``task-<type_>`` (``received``, ``succeeded``, a custom one)."""
        fields = dict(fields or {})
        state = TASK_EVENT_TO_STATE.get(type_)
        if state is None:
            state = type_.upper()
        else:
            setattr(self, type_, timestamp)
        is_late = (
            state != states.RETRY
            and self.state != states.RETRY
            and states.precedence(state) > states.precedence(self.state)
        )
        if is_late:
            keep = self.merge_rules.get(state)
            if keep is not None:
                fields = {key: value for key, value in fields.items() if key in keep}
        else:
            fields.update(state=state, timestamp=timestamp)
        _assign(self, fields, self._reserved)

    def info(
        self, fields: Iterable[str] | None = None, extra: Iterable[str] | None = None
    ) -> dict[str, Any]:
        """The fields worth showing (those set), by default ``args``, ``result``..."""
        names = [*(self._info_fields if fields is None else fields), *(extra or ())]
        shown = {name: getattr(self, name, None) for name in names}
        return {name: value for name, value in shown.items() if value is not None}

    def as_dict(self) -> dict[str, Any]:
        """Every known field, children as their ids."""
        fields = {name: getattr(self, name, None) for name in self._fields}
        fields["children"] = [task.uuid for task in self.children]
        return fields

    @property
    def id(self) -> str | None:
        """The task id (``uuid``)."""
        return self.uuid

    @property
    def origin(self) -> str | None:
        """Who sent the last event: the worker's id, else the client's hostname."""
        return self.client if self.worker is None else self.worker.id

    @property
    def ready(self) -> bool:
        """Whether the task is in a ready state (SUCCESS, FAILURE, REVOKED)."""
        return self.state in states.READY_STATES

    @property
    def parent(self) -> Task | None:
        """The parent task, if the state knows it."""
        return self._known(self.parent_id)

    @property
    def root(self) -> Task | None:
        """The root task of the workflow, if the state knows it."""
        return self._known(self.root_id)

    def _known(self, task_id: str | None) -> Task | None:
        if task_id is None or self.cluster_state is None:
            return None
        return self.cluster_state.tasks.get(task_id)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Task):
            return self.uuid == other.uuid
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.uuid)

    def __repr__(self) -> str:
        return f"<Task: {self.name}({self.uuid}) {self.state} clock:{self.clock}>"
