"""The ``celeriac`` command: the root group, its global options and its errors (edge layer).

``celeriac -A proj worker | beat | call | result | purge | inspect | control | status |
events | deadletters``, one module per subcommand. The
global options are Celery's; the app is loaded once, before the subcommand parses its
arguments, and reaches it as ``ctx.obj.app``. Errors a user can act on (the app cannot
be found, an unknown broker scheme, bad settings, an unreachable broker) are shown as a
single ``Error: ...`` line with URL passwords masked and exit status 1; wrong usage
exits with status 2.
"""

from __future__ import annotations

import os
from typing import Any

import click

from celeriac import __version__
from celeriac.cli.app_loading import AppNotFound, CLIContext, find_app
from celeriac.cli.beat import beat
from celeriac.cli.call import call
from celeriac.cli.control import control
from celeriac.cli.deadletters import deadletters
from celeriac.cli.events import events
from celeriac.cli.inspect import inspect
from celeriac.cli.multi import multi
from celeriac.cli.purge import purge
from celeriac.cli.result import result
from celeriac.cli.shell import shell
from celeriac.cli.status import status
from celeriac.cli.worker import worker
from celeriac.current import get_current_app
from celeriac.exceptions import CeleriacError
from celeriac.log import redact_urls

__all__ = ["main"]


class CeleriacGroup(click.Group):
    """The root group: turns celeriac's errors into one ``Error:`` line, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AppNotFound as exc:
            raise click.ClickException(
                f"Unable to load celeriac application: {redact_urls(str(exc))}"
            ) from exc
        except CeleriacError as exc:
            raise click.ClickException(redact_urls(str(exc))) from exc


@click.group(cls=CeleriacGroup)
@click.option(
    "-A",
    "--app",
    "app_name",
    envvar="APP",
    metavar="APPLICATION",
    help="The app: 'proj', 'proj:app', 'proj.module:attr' or 'proj.app'.",
)
@click.option("-b", "--broker", envvar="BROKER_URL", help="Broker URL (overrides broker_url).")
@click.option(
    "--result-backend",
    envvar="RESULT_BACKEND",
    help="Result backend URL (overrides result_backend).",
)
@click.option("--loader", envvar="LOADER", help="Accepted for Celery compatibility; no effect.")
@click.option(
    "--config",
    envvar="CONFIG_MODULE",
    help="Module to load settings from, as app.config_from_object does.",
)
@click.option(
    "--workdir",
    type=click.Path(exists=True, file_okay=False),
    help="Directory to change to before loading the app.",
)
@click.option("-C", "--no-color", is_flag=True, help="Disable colors in output (or set NO_COLOR).")
@click.option("-q", "--quiet", is_flag=True, help="Give less verbose output.")
@click.version_option(__version__, prog_name="celeriac", message="%(prog)s %(version)s")
@click.pass_context
def main(
    ctx: click.Context,
    app_name: str | None,
    broker: str | None,
    result_backend: str | None,
    loader: str | None,
    config: str | None,
    workdir: str | None,
    no_color: bool,
    quiet: bool,
) -> None:
    """celeriac: a distributed task queue with Celery's API and wire protocol."""
    if workdir:
        os.chdir(workdir)
    app = find_app(app_name) if app_name else get_current_app()
    if config:
        app.config_from_object(config)
    if broker:
        app.conf.broker_url = broker
    if result_backend:
        app.conf.result_backend = result_backend
    if broker or result_backend or config:
        # Connections the app module may have opened used the old URLs.
        app.close()
    ctx.obj = CLIContext(
        app=app,
        quiet=quiet,
        no_color=no_color or bool(os.environ.get("NO_COLOR")),
        workdir=workdir,
    )
    ctx.call_on_close(app.close)


main.add_command(worker)
main.add_command(beat)
main.add_command(call)
main.add_command(result)
main.add_command(purge)
main.add_command(inspect)
main.add_command(control)
main.add_command(status)
main.add_command(events)
main.add_command(deadletters)
main.add_command(shell)
main.add_command(multi)
