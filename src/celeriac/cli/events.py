"""``celeriac events``: watch the cluster's event stream (edge layer).

Without options, a live view of the workers, the recent tasks and the tasks by state,
redrawn in place (:mod:`celeriac.cli.event_view`, which needs rich: the ``monitor``
extra). With ``--dump``, each event on a line of its own, formatted as ``celery events
--dump`` formats it, for a pipe or a file. Both read ``celeryev`` on the app's broker,
first broadcast the ``heartbeat`` control command so that the workers show up at once,
and end quietly on Ctrl-C.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Final

import click

from celeriac.app import Celeriac
from celeriac.cli.app_loading import CeleriacCommand, CLIContext
from celeriac.cli.remote import remote_errors
from celeriac.events.state import BoundedDict

__all__ = ["EventDumper", "events"]

HUMAN_TYPES: Final = {
    "worker-offline": "shutdown",
    "worker-online": "started",
    "worker-heartbeat": "heartbeat",
}
# How many tasks the dump remembers the name and arguments of (Celery's 0xFFF).
REMEMBERED_TASKS: Final = 4095
NAMED_TASK_EVENTS: Final = frozenset({"task-received", "task-sent"})


def humanize_type(type_: str) -> str:
    """``worker-heartbeat`` -> ``heartbeat``, ``task-succeeded`` -> ``task succeeded``."""
    lowered = type_.lower()
    return HUMAN_TYPES.get(lowered, lowered.replace("-", " "))


class EventDumper:
    """Print events as ``celery events --dump`` does, one line each.

    ``<hostname> [<UTC time>] <what>: <task> <field>=<value>, ...``: a task's later events
    name it as its ``task-received`` (or ``task-sent``) did, ``name(id) args=.. kwargs=..``.
    """

    def __init__(self) -> None:
        self.tasks: BoundedDict[str] = BoundedDict(REMEMBERED_TASKS)

    def __call__(self, event: Mapping[str, Any]) -> None:
        click.echo(self.format(event))

    def format(self, event: Mapping[str, Any]) -> str:
        """Return the line of one received event."""
        fields = dict(event)
        moment = datetime.datetime.fromtimestamp(fields.pop("timestamp", 0.0), datetime.UTC)
        type_ = str(fields.pop("type")).lower()
        hostname = fields.pop("hostname", None)
        task = None
        if type_.startswith("task-"):
            uuid = str(fields.pop("uuid", ""))
            if type_ in NAMED_TASK_EVENTS:
                name, args, kwargs = (fields.pop(key, None) for key in ("name", "args", "kwargs"))
                self.tasks[uuid] = f"{name}({uuid}) args={args} kwargs={kwargs}"
            task = self.tasks.get(uuid, "")
        text = ", ".join(f"{key}={fields[key]}" for key in sorted(fields))
        what = f"{humanize_type(type_)}{':' if text else ''}"
        if task is None:
            return f"{hostname} [{moment}] {what} {text}"
        return f"{hostname} [{moment}] {what} {task} {text}"


def dump_events(app: Celeriac) -> None:
    """Print every event as it comes until Ctrl-C."""
    dumper = EventDumper()
    click.echo("-> evdump: starting capture...")
    with app.events.Receiver(handlers={"*": dumper}) as receiver:
        receiver.capture()


@click.command(cls=CeleriacCommand)
@click.option("-d", "--dump", is_flag=True, help="Print each event on a line of its own.")
@click.option(
    "-F",
    "--frequency",
    "--freq",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    help="Seconds between redraws of the live view.",
)
@click.pass_obj
def events(cli: CLIContext, dump: bool, frequency: float) -> None:
    """Event-stream utilities: a live view of workers and tasks, or a raw dump (-d).

    The live view needs rich: pip install 'celeriac[monitor]'. Ctrl-C quits.
    """
    try:
        with remote_errors("events"):
            if dump:
                dump_events(cli.app)
            else:
                _watch(cli.app, frequency)
    except KeyboardInterrupt:
        return


def _watch(app: Celeriac, frequency: float) -> None:
    # rich is an optional dependency: imported only when the live view starts.
    try:
        from celeriac.cli.event_view import watch
    except ModuleNotFoundError as exc:
        if exc.name != "rich":
            raise
        raise click.ClickException(
            "the live view needs rich: pip install 'celeriac[monitor]' (or use --dump)"
        ) from exc
    watch(app, frequency)
