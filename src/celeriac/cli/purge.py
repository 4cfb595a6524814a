"""``celeriac purge``: erase the waiting messages of the known task queues (edge layer).

Also holds what the worker's ``-Q``/``-X``/``--purge`` share with it: the comma-list
option type, the names of the app's known queues, and purging a set of queues.
"""

from __future__ import annotations

from collections.abc import Iterable

import click

from celeriac.app import Celeriac
from celeriac.cli.app_loading import CeleriacCommand, CLIContext

__all__ = ["known_queue_names", "purge", "purge_queues", "purged_message", "split_commas"]


def split_commas(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str]:
    """Turn an ``a,b,c`` option value into the list of its non-empty items."""
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def known_queue_names(app: Celeriac) -> set[str]:
    """Return ``task_default_queue`` plus the names of the queues in ``task_queues``."""
    names = {app.conf.task_default_queue}
    for queue in app.conf.task_queues or ():
        names.add(str(getattr(queue, "name", queue)))
    return names


def purge_queues(app: Celeriac, names: Iterable[str]) -> int:
    """Delete every waiting message of the queues ``names``; return how many were deleted."""
    return sum(app.transport.purge(name) for name in sorted(names))


def _plural(count: int, word: str) -> str:
    return word if count == 1 else f"{word}s"


def purged_message(messages: int, queues: int) -> str:
    """Say what a purge did, in Celery's words."""
    if messages:
        return (
            f"Purged {messages} {_plural(messages, 'message')} from {queues} known task"
            f" {_plural(queues, 'queue')}."
        )
    return f"No messages purged from {queues} {_plural(queues, 'queue')}."


@click.command(cls=CeleriacCommand)
@click.option("-f", "--force", is_flag=True, help="Don't prompt for verification.")
@click.option(
    "-Q",
    "--queues",
    metavar="COMMA SEPARATED LIST",
    callback=split_commas,
    help="Comma separated list of queue names to purge.",
)
@click.option(
    "-X",
    "--exclude-queues",
    metavar="COMMA SEPARATED LIST",
    callback=split_commas,
    help="Comma separated list of queues names not to purge.",
)
@click.pass_obj
def purge(cli: CLIContext, force: bool, queues: list[str], exclude_queues: list[str]) -> None:
    """Erase all messages from all known task queues.

    There is no undo for this operation.
    """
    names = (set(queues) or known_queue_names(cli.app)) - set(exclude_queues)
    count = len(names)
    if not names:
        cli.echo(purged_message(0, 0))
        return
    if not force:
        cli.echo(
            f"WARNING: This will remove all tasks from {_plural(count, 'queue')}:"
            f" {', '.join(sorted(names))}.\n"
            "         There is no undo for this operation!\n\n"
            "(to skip this prompt use the -f option)",
            fg="red",
        )
        click.confirm("Are you sure you want to delete all tasks", abort=True)
    cli.echo(purged_message(purge_queues(cli.app, names), count))
