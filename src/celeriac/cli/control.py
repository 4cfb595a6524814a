"""``celeriac control COMMAND [ARGS]...``: change something on the workers (edge layer).

Sends one control command of the worker's table (``rate_limit tasks.add 10/m``,
``pool_grow 2``, ``revoke ID...``, ``shutdown``, or one of the app's own
``control_command``) and prints each node's reply as it comes. A command that sends no
reply, such as ``shutdown``, ends with Celery's "No nodes replied" error (status 69).
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
    verify_command,
)

__all__ = ["control"]


@click.command(cls=RemoteCommand, command_type="control")
@click.argument("command")
@click.argument("arguments", nargs=-1)
@list_option("control")
@remote_options
@click.pass_obj
def control(
    cli: CLIContext,
    command: str,
    arguments: tuple[str, ...],
    timeout: float,
    destination: list[str],
    as_json: bool,
) -> None:
    """Send the COMMAND control command to the workers.

    Example: celeriac -A proj control rate_limit tasks.add 10/m
    """
    meta = verify_command("control", command)
    keywords = compile_arguments(meta, arguments)
    printer = None if as_json else ReplyPrinter(cli, show_body=True)
    with remote_errors(f"control {command}"):
        replies = cli.app.control.broadcast(
            command,
            arguments=keywords,
            destination=destination or None,
            reply=True,
            timeout=timeout,
            callback=printer,
        )
    if not replies:
        raise no_replies()
    if as_json:
        echo_json(replies)
