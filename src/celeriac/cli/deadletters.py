"""``celeriac deadletters``: list, show, replay and purge dead-lettered messages (edge layer).

The commands are thin: ``celeriac.deadletters`` does the work, so the same is at hand
from Python.
"""

from __future__ import annotations

import json

import click

from celeriac.cli.app_loading import CeleriacGroup, CLIContext
from celeriac.deadletters import (
    DeadLetter,
    dead_letters,
    purge_dead_letters,
    replay_dead_letters,
)

__all__ = ["deadletters"]


@click.group(cls=CeleriacGroup)
def deadletters() -> None:
    """Look at and deal with the messages workers could not run."""


@deadletters.command(name="list")
@click.argument("queue", required=False)
@click.pass_obj
def list_command(cli: CLIContext, queue: str | None) -> None:
    """List the dead letters of QUEUE (or of all): id, task, queue, deliveries, when, reason."""
    letters = dead_letters(cli.app, queue)
    for letter in letters:
        deliveries = "-" if letter.deliveries is None else str(letter.deliveries)
        columns = [letter.id or "-", letter.task or "-", letter.queue, deliveries, letter.when]
        click.echo("  ".join(columns) + f"  {letter.reason}")
    click.echo(f"{len(letters)} dead {'letter' if len(letters) == 1 else 'letters'}.")


@deadletters.command()
@click.argument("task_id")
@click.option("-Q", "--queue", help="Only look in this queue's dead letters.")
@click.pass_obj
def show(cli: CLIContext, task_id: str, queue: str | None) -> None:
    """Show the dead letter of TASK_ID: its fields, headers and body."""
    letter = _find(dead_letters(cli.app, queue), task_id)
    envelope = letter.envelope
    body = envelope.body.decode(envelope.content_encoding or "utf-8", errors="replace")
    click.echo(
        json.dumps(
            {
                "id": letter.id,
                "task": letter.task,
                "queue": letter.queue,
                "reason": letter.reason,
                "deliveries": letter.deliveries,
                "dead_lettered_at": letter.when,
                "content_type": envelope.content_type,
                "headers": envelope.headers,
                "body": body,
            },
            indent=2,
            default=repr,
        )
    )


@deadletters.command()
@click.argument("task_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter.")
@click.option("-Q", "--queue", help="Only replay this queue's dead letters.")
@click.option("--to", "to", help="Send them to this queue instead of their own.")
@click.pass_obj
def replay(
    cli: CLIContext,
    task_ids: tuple[str, ...],
    replay_all: bool,
    queue: str | None,
    to: str | None,
) -> None:
    """Send the dead letters of TASK_IDS (or --all) back to their queue to run again."""
    if bool(task_ids) == replay_all:
        raise click.UsageError("Give task ids or --all, not both and not neither.")
    replayed = replay_dead_letters(cli.app, None if replay_all else task_ids, queue=queue, to=to)
    for letter in replayed:
        click.echo(f"{letter.id or '-'} -> {to or letter.queue}")
    missing = sorted(set(task_ids) - {letter.id for letter in replayed})
    if missing:
        raise click.ClickException(f"No dead letter for {', '.join(missing)}.")
    click.echo(f"Replayed {len(replayed)}.")


@deadletters.command()
@click.argument("queue", required=False)
@click.option("-f", "--force", is_flag=True, help="Don't prompt for verification.")
@click.pass_obj
def purge(cli: CLIContext, queue: str | None, force: bool) -> None:
    """Delete the dead letters of QUEUE (or of every known queue). There is no undo."""
    if not force:
        click.confirm("Delete the dead letters for good?", abort=True)
    count = purge_dead_letters(cli.app, queue)
    click.echo(f"Purged {count} dead {'letter' if count == 1 else 'letters'}.")


def _find(letters: list[DeadLetter], task_id: str) -> DeadLetter:
    for letter in letters:
        if letter.id == task_id:
            return letter
    raise click.ClickException(f"No dead letter for {task_id}.")
