"""The live view of ``celeriac events``: workers, recent tasks and tasks by state, redrawn
in place with rich (edge layer; rich comes with the ``monitor`` extra).

The receiver feeds a :class:`~celeriac.events.state.State` on the main thread; rich's
refresh thread takes a :class:`Snapshot` of it (under ``State.freeze_while``, so that no
event changes it halfway) every ``refresh`` seconds and draws it on the terminal's
alternate screen, as ``celery events`` does with curses. Only this module imports rich.
"""

from __future__ import annotations

import datetime
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from celeriac import states
from celeriac.app import Celeriac
from celeriac.events.record import Task, Worker
from celeriac.events.state import State
from celeriac.transports import redact_url

__all__ = ["LiveView", "Snapshot", "render", "take_snapshot", "watch"]

# Counts are shown in this order; states outside it follow, by name.
STATE_ORDER: Final = (
    states.PENDING,
    states.RECEIVED,
    states.STARTED,
    states.RETRY,
    states.SUCCESS,
    states.FAILURE,
    states.REVOKED,
    states.REJECTED,
)
STATE_STYLES: Final = {
    states.STARTED: "yellow",
    states.RETRY: "magenta",
    states.SUCCESS: "green",
    states.FAILURE: "bold red",
    states.REVOKED: "red",
    states.REJECTED: "red",
}
# Lines the view takes besides its table rows: the title line, the counts line, and the
# title, borders and header of each table (5 + 5).
FIXED_LINES: Final = 12
# Terminals this wide show whole task ids; narrower ones their first characters.
FULL_UUID_WIDTH: Final = 110
SHORT_UUID: Final = 9


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """One worker as the view shows it."""

    hostname: str
    alive: bool
    heartbeat_age: float | None
    loadavg: tuple[float, ...]
    active: int | None
    processed: int | None


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One task as the view shows it."""

    uuid: str
    name: str
    state: str
    worker: str
    timestamp: float | None
    runtime: float | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the view draws, read from the State at one moment."""

    workers: tuple[WorkerRow, ...]
    tasks: tuple[TaskRow, ...]
    counts: dict[str, int]
    event_count: int
    task_count: int


def _worker_row(worker: Worker, now: float) -> WorkerRow:
    heartbeats = worker.heartbeats
    return WorkerRow(
        hostname=worker.hostname or "?",
        alive=worker.alive,
        heartbeat_age=max(now - heartbeats[-1], 0.0) if heartbeats else None,
        loadavg=tuple(worker.loadavg or ()),
        active=worker.active,
        processed=worker.processed,
    )


def _task_row(task: Task, now: float) -> TaskRow:
    runtime = task.runtime
    if runtime is None and task.state == states.STARTED and task.started:
        runtime = now - task.started
    return TaskRow(
        uuid=task.uuid or "",
        name=task.name or "",
        state=task.state,
        worker=(task.worker.hostname or "") if task.worker is not None else "",
        timestamp=task.timestamp,
        runtime=runtime,
    )


def take_snapshot(state: State, now: float, task_limit: int) -> Snapshot:
    """Read workers, the ``task_limit`` latest tasks and the counts; call it frozen."""
    return Snapshot(
        workers=tuple(
            _worker_row(worker, now)
            for worker in sorted(state.workers.values(), key=lambda worker: worker.hostname or "")
        ),
        tasks=tuple(_task_row(task, now) for _, task in state.tasks_by_time(task_limit)),
        counts=dict(Counter(task.state for task in state.tasks.values())),
        event_count=state.event_count,
        task_count=state.task_count,
    )


def _duration(seconds: float | None) -> str:
    """``0.4ms``, ``2.38s`` or ``61.2s``: short enough for a column."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"


def _workers_table(rows: tuple[WorkerRow, ...]) -> Table:
    table = Table(title="Workers", title_justify="left")
    for column in ("Worker", "Status", "Heartbeat", "Load average", "Active", "Processed"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(
            row.hostname,
            Text("ONLINE", "green") if row.alive else Text("OFFLINE", "red"),
            "-" if row.heartbeat_age is None else f"{row.heartbeat_age:.1f}s ago",
            " ".join(f"{load:.2f}" for load in row.loadavg) or "-",
            "-" if row.active is None else str(row.active),
            "-" if row.processed is None else str(row.processed),
        )
    return table


def _tasks_table(rows: tuple[TaskRow, ...], width: int) -> Table:
    table = Table(title="Recent tasks", title_justify="left", expand=True)
    # On a narrow terminal the ids are cut short: names and states matter more.
    uuid_width = None if width >= FULL_UUID_WIDTH else SHORT_UUID
    table.add_column("UUID", overflow="ellipsis", no_wrap=True, max_width=uuid_width)
    table.add_column("Task", no_wrap=True, min_width=16, ratio=2)
    table.add_column("State", no_wrap=True, min_width=8)
    table.add_column("Time", no_wrap=True, min_width=8)
    table.add_column("Runtime", no_wrap=True, justify="right", min_width=7)
    table.add_column("Worker", no_wrap=True, min_width=8, ratio=1)
    for row in rows:
        moment = (
            datetime.datetime.fromtimestamp(row.timestamp).strftime("%H:%M:%S")
            if row.timestamp
            else "-"
        )
        table.add_row(
            row.uuid,
            row.name,
            Text(row.state, STATE_STYLES.get(row.state, "")),
            moment,
            _duration(row.runtime),
            row.worker,
        )
    return table


def _counts_line(counts: dict[str, int]) -> Text:
    line = Text("Tasks by state: ", "bold")
    ordered = [name for name in STATE_ORDER if name in counts]
    ordered += sorted(name for name in counts if name not in STATE_ORDER)
    for name in ordered:
        line.append(name, STATE_STYLES.get(name, ""))
        line.append(f" {counts[name]}   ")
    if not ordered:
        line.append("none yet", "dim")
    return line


def render(snapshot: Snapshot, broker: str, width: int) -> RenderableType:
    """Draw a snapshot ``width`` columns wide: title line, workers, counts by state, then
    the recent tasks."""
    online = sum(row.alive for row in snapshot.workers)
    title = Text.assemble(
        ("celeriac events", "bold"),
        f"  {broker}  |  events: {snapshot.event_count}  tasks: {snapshot.task_count}"
        f"  workers online: {online}/{len(snapshot.workers)}  |  Ctrl-C quits",
        no_wrap=True,
        overflow="ellipsis",
    )
    return Group(
        title,
        _workers_table(snapshot.workers),
        _counts_line(snapshot.counts),
        _tasks_table(snapshot.tasks, width),
    )


class LiveView:
    """What rich's refresh thread calls for each frame: a snapshot of ``state``, drawn to
    fit the console's height."""

    def __init__(
        self, state: State, console: Console, broker: str, now: Callable[[], float]
    ) -> None:
        self.state = state
        self.console = console
        self.broker = broker
        self.now = now

    def draw(self) -> RenderableType:
        """Render the state as it is now."""
        rows = self.console.size.height - len(self.state.workers) - FIXED_LINES
        snapshot = self.state.freeze_while(take_snapshot, self.state, self.now(), max(rows, 1))
        return render(snapshot, self.broker, self.console.size.width)


def watch(app: Celeriac, refresh: float, now: Callable[[], float] = time.time) -> None:
    """Show the live view, redrawn every ``refresh`` seconds, until Ctrl-C.

    The KeyboardInterrupt is left to the caller, after rich has restored the terminal.
    The receiver's capture first broadcasts ``heartbeat``, so the workers appear at once.
    """
    state = app.events.State(now=now)
    console = Console()
    view = LiveView(state, console, redact_url(app.broker_url), now)
    with (
        app.events.Receiver(handlers={"*": state.event}) as receiver,
        Live(
            console=console,
            screen=True,
            refresh_per_second=1 / refresh,
            vertical_overflow="crop",
            get_renderable=view.draw,
        ),
    ):
        receiver.capture()
