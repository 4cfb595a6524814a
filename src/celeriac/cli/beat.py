"""``celeriac beat``: send periodic tasks on their schedules (edge layer).

Any number of beats may run against one broker (or result store): one leads and sends,
the others stand by and take over within seconds if it dies. SIGTERM or SIGINT stops a
beat after its current pass; it gives the lead up on the way out.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

from celeriac import __version__, log
from celeriac.beat.service import Service
from celeriac.cli.app_loading import CeleriacCommand, CLIContext
from celeriac.cli.detach import detach_from_options, detach_options
from celeriac.cli.pidfile import pidfile
from celeriac.cli.worker import log_options
from celeriac.transports import redact_url

__all__ = ["beat"]


def _banner(service: Service) -> str:
    """The lines printed when beat starts (not with ``-q``), URL passwords masked."""
    return "\n".join(
        [
            f"celeriac beat v{__version__} is starting.",
            f"  broker:      {redact_url(service.app.broker_url)}",
            f"  state:       {service.store.location}",
            f"  entries:     {len(service.scheduler.entries)}",
            f"  maxinterval: {service.max_interval:g} s",
            f"  lease:       {service.lease_seconds:g} s",
        ]
    )


def _stop_on_signals(service: Service) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum: int, frame: Any) -> None:
        service.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


@click.command(cls=CeleriacCommand)
@click.option(
    "-s",
    "--schedule",
    "schedule_filename",
    help="Local file for the last runs, used when neither the broker nor the result "
    "backend can hold them (default: the beat_schedule_filename setting).",
)
@click.option(
    "-S",
    "--scheduler",
    help="Scheduler class; celeriac has one, Celery's PersistentScheduler by either name.",
)
@click.option(
    "--max-interval",
    type=click.FloatRange(min=0, min_open=True),
    help="Max seconds to sleep between schedule iterations.",
)
@log_options
@click.option("--pidfile", help="File holding beat's pid; refused while its process is alive.")
@detach_options
@click.pass_context
def beat(ctx: click.Context, /, **options: Any) -> None:
    """Start the beat periodic task scheduler.

    Example: celeriac -A proj beat -l INFO
    """
    cli = ctx.find_object(CLIContext)
    assert cli is not None
    app = cli.app
    if options["scheduler"]:
        app.conf.beat_scheduler = options["scheduler"]
    detach = detach_from_options(options)
    if detach is not None:
        detach.start(logfile=options["logfile"], pidfile=options["pidfile"])
    try:
        log.setup_logging(
            app,
            options["loglevel"],
            logfile=options["logfile"],
            colorize=False if cli.no_color else None,
        )
    except OSError as exc:
        raise click.ClickException(f"cannot open the log file: {exc}") from exc
    app.import_default_modules()
    service = Service(
        app, max_interval=options["max_interval"], schedule_filename=options["schedule_filename"]
    )
    with pidfile(options["pidfile"]):
        cli.echo(_banner(service))
        _stop_on_signals(service)
        service.start()
