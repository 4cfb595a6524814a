"""``celeriac inspect COMMAND [ARGS]...``: ask the workers what they hold (edge layer).

Sends one inspect command of the worker's table (``ping``, ``stats``, ``active``,
``query_task ID...``, or one of the app's own ``inspect_command``) and prints each
node's reply as it comes, then how many nodes answered.
"""

from __future__ import annotations

import click

from celeriac.cli.app_loading import CLIContext
from celeriac.cli.remote import (
    RemoteCommand,
    ReplyPrinter,
    compile_arguments,
    echo_json,
    list_option,
    no_replies,
    remote_errors,
    remote_options,
    say_online,
    verify_command,
)

__all__ = ["inspect"]


@click.command(cls=RemoteCommand, command_type="inspect")
@click.argument("command")
@click.argument("arguments", nargs=-1)
@list_option("inspect")
@remote_options
@click.pass_obj
def inspect(
    cli: CLIContext,
    command: str,
    arguments: tuple[str, ...],
    timeout: float,
    destination: list[str],
    as_json: bool,
) -> None:
    """Inspect the workers by sending them the COMMAND inspect command.

    Example: celeriac -A proj inspect query_task ID1 ID2 -d w1@host -t 2
    """
    meta = verify_command("inspect", command)
    keywords = compile_arguments(meta, arguments)
    printer = None if as_json else ReplyPrinter(cli, show_body=True)
    inspector = cli.app.control.inspect(
        destination=destination or None, timeout=timeout, callback=printer
    )
    with remote_errors(f"inspect {command}"):
        replies = inspector._request(command, **keywords)
    if not replies:
        raise no_replies()
    if as_json:
        echo_json(replies)
        return
    say_online(cli, len(replies))
