"""What ``celeriac inspect``, ``control`` and ``status`` share (edge layer).

Their options (``-t/--timeout``, ``-d/--destination``, ``-j/--json``), a command's
arguments converted by the worker's command table (``Panel.meta``), the table of commands
in their help, and the replies printed as Celery 5.7 prints them::

    ->  w0@e2e: OK
            pong

    1 node online.

When no node replies, or the broker cannot be reached, they fail as Celery's do: one
``Error:`` line and exit status 69 (``EX_UNAVAILABLE``).
"""

from __future__ import annotations

import json
import os
import pprint
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, Literal, TypeVar

import click

from celeriac.cli.app_loading import CeleriacCommand, CLIContext
from celeriac.cli.purge import split_commas
from celeriac.exceptions import OperationalError
from celeriac.log import redact_urls
from celeriac.serialization import dumps
from celeriac.worker.control import CommandMeta, Panel

__all__ = [
    "EX_UNAVAILABLE",
    "CommandType",
    "RemoteCommand",
    "RemoteCommandError",
    "ReplyPrinter",
    "compile_arguments",
    "echo_json",
    "list_option",
    "no_replies",
    "remote_errors",
    "remote_options",
    "say_online",
    "verify_command",
]

CommandType = Literal["inspect", "control"]
F = TypeVar("F", bound=Callable[..., Any])

EX_UNAVAILABLE: Final = getattr(os, "EX_UNAVAILABLE", 69)
BROKER_UNREACHABLE: Final = (
    "Could not connect to the message broker. Please make sure your broker (e.g., RabbitMQ "
    "or Redis) is running and the connection settings are correct. Reason: {reason}"
)


class RemoteCommandError(click.ClickException):
    """No node replied, or the broker could not be reached: exit status 69, as Celery."""

    exit_code = EX_UNAVAILABLE


def no_replies() -> RemoteCommandError:
    """The error of a command no node answered within ``--timeout``."""
    return RemoteCommandError("No nodes replied within time constraint")


@contextmanager
def remote_errors(command: str) -> Iterator[None]:
    """Turn a broker failure while running ``command`` into Celery's error and status."""
    try:
        yield
    except OperationalError as exc:
        reason = redact_urls(str(exc))
        raise RemoteCommandError(BROKER_UNREACHABLE.format(reason=reason)) from exc


def remote_options(function: F) -> F:
    """Add Celery's remote-control options: ``-t``, ``-d`` and ``-j``."""
    options = (
        click.option(
            "-t",
            "--timeout",
            type=click.FloatRange(min=0),
            default=1.0,
            show_default=True,
            help="Timeout in seconds waiting for reply.",
        ),
        click.option(
            "-d",
            "--destination",
            metavar="COMMA SEPARATED LIST",
            callback=split_commas,
            help="Comma separated list of destination node names.",
        ),
        click.option("-j", "--json", "as_json", is_flag=True, help="Use json as output format."),
    )
    for option in reversed(options):
        function = option(function)
    return function


# ---- the worker's command table -------------------------------------------------------


def visible_commands(command_type: CommandType) -> dict[str, CommandMeta]:
    """The commands of one type that the worker's table shows, by name."""
    return {
        name: meta
        for name, meta in sorted(Panel.meta.items())
        if meta.type == command_type and meta.visible
    }


def verify_command(command_type: CommandType, name: str) -> CommandMeta:
    """Return the table entry of command ``name``; a usage error names the known ones."""
    known = visible_commands(command_type)
    if name not in known:
        raise click.UsageError(
            f"Command {name} not recognized. Available {command_type} commands: {', '.join(known)}"
        )
    return known[name]


def compile_arguments(meta: CommandMeta, values: Sequence[str]) -> dict[str, Any]:
    """Turn the words after the command into its keyword arguments.

    The first words fill ``meta.args`` in order, each through its converter; the rest
    form the list of the ``variadic`` argument (``revoke ID1 ID2``), as in Celery. Unlike
    Celery, words that fit nowhere are an error rather than dropped.
    """
    named = list(meta.args or ())
    if len(values) > len(named) and not meta.variadic:
        wanted = f"takes arguments: {meta.signature}" if named else "takes no arguments"
        raise click.UsageError(f"Command {meta.name!r} {wanted}")
    arguments: dict[str, Any] = {}
    for (name, convert), value in zip(named, values, strict=False):
        try:
            arguments[name] = convert(value)
        except (TypeError, ValueError) as exc:
            raise click.UsageError(
                f"Command {meta.name!r}: invalid {name} {value!r} ({meta.signature})"
            ) from exc
    if meta.variadic:
        arguments[meta.variadic] = list(values[len(named) :])
    return arguments


def _help_of(meta: CommandMeta) -> str:
    """The command's help, else the first line of its docstring (as Celery takes it)."""
    if meta.help:
        return meta.help
    doc = (Panel.data[meta.name].__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def write_command_table(formatter: click.HelpFormatter, command_type: CommandType) -> None:
    """Write the ``Inspect Commands``/``Control Commands`` section: usage, then help."""
    rows = [
        (f"{name} {meta.signature}" if meta.signature else name, _help_of(meta))
        for name, meta in visible_commands(command_type).items()
    ]
    with formatter.section(f"{command_type.capitalize()} Commands"):
        formatter.write_dl(rows)


class RemoteCommand(CeleriacCommand):
    """``inspect`` or ``control``: its ``--help`` ends with the table of its commands.

    The table is read when help is asked for, after ``-A`` loaded the app, so it holds
    the app's own commands too.
    """

    def __init__(self, *args: Any, command_type: CommandType, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.command_type: CommandType = command_type

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        write_command_table(formatter, self.command_type)


def _print_command_table(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """Print the table of the command's commands and exit (``--list``)."""
    if not value or ctx.resilient_parsing:
        return
    command = ctx.command
    assert isinstance(command, RemoteCommand)
    formatter = ctx.make_formatter()
    write_command_table(formatter, command.command_type)
    click.echo(formatter.getvalue(), nl=False)
    ctx.exit()


def list_option(command_type: CommandType) -> Callable[[F], F]:
    """Celery's ``--list``: print the table of ``command_type`` commands and exit."""
    decorator: Callable[[F], F] = click.option(
        "--list",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_print_command_table,
        help=f"List available {command_type} commands and exit.",
    )
    return decorator


# ---- printing the replies -------------------------------------------------------------


def _indent(text: str, width: int = 4) -> str:
    return "\n".join(" " * width + line for line in text.splitlines())


class ReplyPrinter:
    """Print each node's reply as it comes: ``->  node: OK`` (or ``ERROR``) and, with
    ``show_body``, the reply indented below it. The reply callback of ``app.control``."""

    def __init__(self, cli: CLIContext, show_body: bool) -> None:
        self.cli = cli
        self.show_body = show_body

    def __call__(self, reply: dict[str, Any]) -> None:
        for node, value in reply.items():
            status, body = self.pretty(value)
            arrow = "" if self.cli.quiet else f"{self._style('->', fg='white', bold=True)} "
            click.echo(f"{arrow} {self._style(f'{node}: ', fg='cyan', bold=True)}{status}")
            if self.show_body:
                click.echo(_indent(body))

    def pretty(self, value: Any) -> tuple[str, str]:
        """Return the status word and the text of one reply, in Celery's layout."""
        ok = self._style("OK", fg="green", bold=True)
        if isinstance(value, list):
            items = [f"{self._style('*', fg='white')} {item}" for item in value]
            return ok, "\n".join(items) if items else "- empty -"
        if isinstance(value, dict):
            if "ok" in value:
                return ok, _indent(self.pretty(value["ok"])[1])
            if "error" in value:
                error = self._style("ERROR", fg="red", bold=True)
                return error, _indent(self.pretty(value["error"])[1])
            return ok, json.dumps(value, sort_keys=True, indent=4, default=str)
        if isinstance(value, str):
            return ok, value
        return ok, pprint.pformat(value)

    def _style(self, text: str, **style: Any) -> str:
        return text if self.cli.no_color else click.style(text, **style)


def say_online(cli: CLIContext, count: int) -> None:
    """Close the replies with ``N node(s) online.`` after a blank line (not with ``-q``)."""
    cli.echo(f"\n{count} {'node' if count == 1 else 'nodes'} online.")


def echo_json(replies: Any) -> None:
    """Print the replies as one line of JSON, with Celery's type tags where needed."""
    click.echo(dumps(replies, "json")[2].decode())
