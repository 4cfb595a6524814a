"""``celeriac status``: list the workers that answer a ping (edge layer)."""

from __future__ import annotations

import click

from celeriac.cli.app_loading import CeleriacCommand, CLIContext
from celeriac.cli.remote import (
    ReplyPrinter,
    echo_json,
    no_replies,
    remote_errors,
    remote_options,
    say_online,
)

__all__ = ["status"]


@click.command(cls=CeleriacCommand)
@remote_options
@click.pass_obj
def status(cli: CLIContext, timeout: float, destination: list[str], as_json: bool) -> None:
    """Show list of workers that are online.

    Prints ``->  node: OK`` for each worker that answers within the timeout, then how
    many did; none is an error (exit status 69).
    """
    printer = None if as_json else ReplyPrinter(cli, show_body=False)
    inspector = cli.app.control.inspect(
        destination=destination or None, timeout=timeout, callback=printer
    )
    with remote_errors("status"):
        replies = inspector.ping()
    if not replies:
        raise no_replies()
    if as_json:
        echo_json(replies)
    say_online(cli, len(replies))
