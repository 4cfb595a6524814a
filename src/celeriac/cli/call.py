"""``celeriac call NAME``: send a task by name and print its id (edge layer)."""

from __future__ import annotations

import datetime
import json
from typing import Any

import click

from celeriac.cli.app_loading import CeleriacCommand, CLIContext, load_stores
from celeriac.exceptions import QueueNotFound

__all__ = ["call"]


def _json(value: str, param: click.Parameter, expected: type, kind: str) -> Any:
    try:
        decoded = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{value!r} is not valid JSON: {exc}", param=param) from None
    if not isinstance(decoded, expected):
        raise click.BadParameter(f"{value!r} is not a {kind}", param=param)
    return decoded


def parse_args(ctx: click.Context, param: click.Parameter, value: str | None) -> list[Any]:
    """Decode ``--args``: a JSON array."""
    return list(_json(value, param, list, "JSON array")) if value else []


def parse_kwargs(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, Any]:
    """Decode ``--kwargs``: a JSON object."""
    return dict(_json(value, param, dict, "JSON object")) if value else {}


def _iso8601(value: str, param: click.Parameter) -> datetime.datetime:
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO-8601 date and time", param=param
        ) from None
    # Without a zone the time is UTC, as Celery takes it.
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def parse_eta(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> datetime.datetime | None:
    """Decode ``--eta``: an ISO-8601 date and time."""
    return _iso8601(value, param) if value else None


def parse_expires(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> float | datetime.datetime | None:
    """Decode ``--expires``: seconds from now, or an ISO-8601 date and time."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return _iso8601(value, param)


@click.command(cls=CeleriacCommand)
@click.argument("name")
@click.option(
    "-a",
    "--args",
    "positional",
    metavar="JSON ARRAY",
    callback=parse_args,
    help="Positional arguments.",
)
@click.option(
    "-k",
    "--kwargs",
    "keyword",
    metavar="JSON OBJECT",
    callback=parse_kwargs,
    help="Keyword arguments.",
)
@click.option("--eta", metavar="ISO-8601", callback=parse_eta, help="scheduled time.")
@click.option("--countdown", type=float, help="eta in seconds from now.")
@click.option("--expires", metavar="ISO-8601 OR FLOAT", callback=parse_expires, help="expiry time.")
@click.option("--serializer", help="task serializer (default: the task_serializer setting).")
@click.option("--queue", help="custom queue name.")
@click.option("--exchange", help="custom exchange name.")
@click.option("--routing-key", help="custom routing key.")
@click.option("--priority", type=click.IntRange(0, 255), help="message priority (0-9 honoured).")
@click.pass_obj
def call(
    cli: CLIContext,
    /,
    name: str,
    positional: list[Any],
    keyword: dict[str, Any],
    eta: datetime.datetime | None,
    countdown: float | None,
    **options: Any,
) -> None:
    """Call a task by name.

    Example: celeriac -A proj call tasks.add --args '[2, 2]' --countdown 10
    """
    if eta is not None and countdown is not None:
        raise click.UsageError("give --eta or --countdown, not both")
    given = {option: value for option, value in options.items() if value is not None}
    # A result store that cannot be loaded could never give the result: fail before sending.
    load_stores(cli.app)
    try:
        result = cli.app.send_task(
            name, args=positional, kwargs=keyword, eta=eta, countdown=countdown, **given
        )
    except QueueNotFound as exc:
        raise click.ClickException(str(exc.args[0]) if exc.args else repr(exc)) from exc
    cli.echo(result.id)
