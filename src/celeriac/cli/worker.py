"""``celeriac worker``: start a worker with Celery's flags (edge layer).

The default node name is ``celeriac@%h`` (Celery's is ``celery@%h``); give
``-n celery@%h`` where a tool expects Celery's. ``-O``, ``--without-heartbeat``,
``--without-mingle`` and ``--without-gossip`` are accepted so that Celery command
lines keep working, and have no effect: celeriac has no mingle or gossip steps and
always sends its heartbeat. They still reach ``celeryd_init`` in ``options``.

``-B`` runs beat in a thread of the worker's main process, started by ``worker_ready``
and stopped by the shutdown signals, so the worker itself knows nothing of beat.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, Final, TypeVar

import click

from celeriac import __version__, log, signals
from celeriac.app import Celeriac
from celeriac.beat.service import EmbeddedService
from celeriac.cli.app_loading import (
    PRELOAD_OPTIONS_KEY,
    CeleriacCommand,
    CLIContext,
    load_stores,
)
from celeriac.cli.detach import detach_from_options, detach_options
from celeriac.cli.pidfile import pidfile
from celeriac.cli.purge import purge_queues, purged_message, split_commas
from celeriac.transports import redact_url
from celeriac.transports.base import Transport
from celeriac.worker.autoscale import parse_autoscale
from celeriac.worker.controller import WorkController
from celeriac.worker.pools import POOLS
from celeriac.worker.statedb import persistent_state

__all__ = ["DEFAULT_NODENAME", "default_nodename", "host_format", "shown_url", "worker"]

logger = logging.getLogger("celeriac.worker")

DEFAULT_NODENAME: Final = "celeriac@%h"
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "FATAL")
F = TypeVar("F", bound=Callable[..., Any])


def log_options(command: F) -> F:
    """Add ``-l/--loglevel`` and ``-f/--logfile``, as Celery's worker and beat take them."""
    command = click.option(
        "-f", "--logfile", help="Path to log file. If no logfile is specified, stderr is used."
    )(command)
    return click.option(
        "-l",
        "--loglevel",
        type=click.Choice(LOG_LEVELS, case_sensitive=False),
        default="WARNING",
        help="Logging level.",
    )(command)


# Celery's name for the prefork pool, kept as an alias.
POOL_ALIASES: Final = {"processes": "prefork"}
SQLITE_SCHEMES: Final = ("sqlite", "db+sqlite")


def host_format(template: str, host: str | None = None) -> str:
    """Expand ``%h`` (this host), ``%n`` (its first label), ``%d`` (its domain) and ``%%``."""
    host = host or socket.gethostname()
    short, _, domain = host.partition(".")
    values = {"h": host, "n": short, "d": domain, "%": "%"}
    return re.sub(r"%(.)", lambda match: values.get(match.group(1), match.group(0)), template)


def default_nodename(hostname: str | None) -> str:
    """Return the node name for ``-n``: ``w1@%h`` expanded; ``w1`` alone means ``celeriac@w1``."""
    template = hostname or DEFAULT_NODENAME
    if "@" not in template:
        template = f"celeriac@{template}"
    return host_format(template)


def _banner(controller: WorkController, transport: Transport, loglevel: int) -> str:
    """The lines printed when the worker starts (not with ``-q``), URL passwords masked.

    At INFO and below the registered tasks follow, as in Celery: Celery's built-in
    ``celery.*`` tasks only at DEBUG.
    """
    app = controller.app
    results = app.result_backend_url
    lines = [
        f"{controller.hostname} v{__version__}",
        f"  app:         {app.main or '__main__'}",
        f"  transport:   {shown_url(transport.url)}",
        f"  results:     {shown_url(results) if results else 'disabled'}",
        f"  concurrency: {_concurrency(controller)}",
        f"  task events: {'ON' if controller.send_events else 'OFF'}",
        f"  queues:      {', '.join(controller.queues)}",
    ]
    if loglevel <= logging.INFO:
        names = sorted(_task_names(app, include_builtins=loglevel <= logging.DEBUG))
        lines += ["", "[tasks]", *(f"  . {name}" for name in names), ""]
    return "\n".join(lines)


def _concurrency(controller: WorkController) -> str:
    if controller.autoscale is None:
        return f"{controller.concurrency} ({controller.pool_name})"
    maximum, minimum = controller.autoscale
    return f"{minimum}..{maximum} ({controller.pool_name}, autoscale)"


def _autoscale(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        return parse_autoscale(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def shown_url(url: str) -> str:
    """Show a URL with its password masked and, for an SQLite file, its absolute path."""
    scheme, separator, rest = url.partition(":///")
    if separator and scheme in SQLITE_SCHEMES:
        path, query_mark, query = rest.partition("?")
        if path and path != ":memory:":
            return f"{scheme}:///{os.path.abspath(path)}{query_mark}{query}"
    return redact_url(url)


def _task_names(app: Celeriac, *, include_builtins: bool) -> list[str]:
    return [name for name in app.tasks if include_builtins or not name.startswith("celery.")]


def _warn_if_no_tasks(app: Celeriac) -> None:
    """Say at start that the app has no tasks of its own: such a worker can run nothing."""
    if not _task_names(app, include_builtins=False):
        logger.warning(
            "The app %r has no tasks registered, so this worker can run none: give -A the"
            " module that defines them, or name their modules with -I/--include or the"
            " include setting.",
            app.main or "__main__",
        )


@click.command(cls=CeleriacCommand)
@click.option(
    "-n",
    "--hostname",
    help="Set custom hostname (e.g., 'w1@%h'). Expands: %h (hostname), %n (name) and "
    f"%d, (domain). Default: {DEFAULT_NODENAME}.",
)
@click.option(
    "-P",
    "--pool",
    type=click.Choice(sorted({*POOLS, *POOL_ALIASES}), case_sensitive=False),
    help="Pool implementation (default: the worker_pool setting).",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    help="Number of child processes (or threads) processing the queue. "
    "The default is the number of CPUs available on your system.",
)
@click.option(
    "--autoscale",
    metavar="MAX,MIN",
    callback=_autoscale,
    help="Resize the pool between MIN and MAX processes (or threads) as work comes and goes,"
    " such as 10,3.",
)
@click.option(
    "-Q",
    "--queues",
    metavar="COMMA SEPARATED LIST",
    callback=split_commas,
    help="Comma separated list of queues to consume; by default all configured queues.",
)
@click.option(
    "-X",
    "--exclude-queues",
    metavar="COMMA SEPARATED LIST",
    callback=split_commas,
    help="Comma separated list of queues not to consume.",
)
@click.option(
    "-I",
    "--include",
    metavar="COMMA SEPARATED LIST",
    callback=split_commas,
    help="Comma separated list of additional modules to import.",
)
@log_options
@click.option(
    "--prefetch-multiplier",
    type=click.IntRange(min=0),
    help="Set custom prefetch multiplier value for this worker instance.",
)
@click.option(
    "-E",
    "--task-events",
    "--events",
    "task_events",
    is_flag=True,
    default=None,
    help="Send task-related events that can be captured by monitors like celery events.",
)
@click.option(
    "--time-limit", type=click.FloatRange(min=0), help="Hard time limit for tasks, in seconds."
)
@click.option(
    "--soft-time-limit",
    type=click.FloatRange(min=0),
    help="Soft time limit for tasks, in seconds.",
)
@click.option(
    "--max-tasks-per-child",
    type=click.IntRange(min=1),
    help="Maximum number of tasks a pool worker can execute before it's replaced.",
)
@click.option(
    "--max-memory-per-child",
    type=click.IntRange(min=1),
    help="Maximum resident memory, in KiB, a pool child may use before it's replaced.",
)
@click.option(
    "--pidfile", help="File holding the worker's pid; refused while its process is alive."
)
@detach_options
@click.option(
    "-S",
    "--statedb",
    help="File keeping revoked ids and the logical clock across restarts "
    "(default: the worker_state_db setting). Expands %n and %h as --pidfile does.",
)
@click.option(
    "--purge",
    "--discard",
    "purge",
    is_flag=True,
    help="Purges all waiting tasks before the worker is started.",
)
@click.option(
    "-O",
    "--optimization",
    type=click.Choice(("default", "fair")),
    help="Accepted for Celery compatibility; no effect.",
)
@click.option(
    "-B",
    "--beat",
    is_flag=True,
    help="Also run beat, the periodic task scheduler, in a thread of this worker.",
)
@click.option(
    "-s",
    "--schedule-filename",
    "--schedule",
    "schedule_filename",
    help="With -B: beat's local file for the last runs, when neither the broker nor the "
    "result backend can hold them.",
)
@click.option(
    "--scheduler",
    help="With -B: beat's scheduler class; celeriac has one, Celery's PersistentScheduler.",
)
@click.option("--without-heartbeat", is_flag=True, help="Accepted for compatibility; no effect.")
@click.option("--without-mingle", is_flag=True, help="Accepted for compatibility; no effect.")
@click.option("--without-gossip", is_flag=True, help="Accepted for compatibility; no effect.")
@click.pass_context
def worker(ctx: click.Context, /, **options: Any) -> None:
    """Start worker instance.

    Example: celeriac -A proj worker -l INFO -Q hipri,lopri -c 4
    """
    cli = ctx.find_object(CLIContext)
    assert cli is not None
    app = cli.app
    if options["include"]:
        app.conf.include = (*app.conf.include, *options["include"])
    if options["scheduler"]:
        app.conf.beat_scheduler = options["scheduler"]
    nodename = default_nodename(options["hostname"])
    level_name = str(options["loglevel"]).upper()
    pool = str(options["pool"] or app.conf.worker_pool).lower()
    pool = POOL_ALIASES.get(pool, pool)
    pidfile_path = log.node_format(options["pidfile"], nodename) if options["pidfile"] else None
    detach = detach_from_options(options)
    if detach is not None:
        logfile = log.node_format(options["logfile"], nodename) if options["logfile"] else None
        detach.start(logfile=logfile, pidfile=pidfile_path)
    try:
        log.setup_logging(
            app,
            options["loglevel"],
            logfile=options["logfile"],
            colorize=False if cli.no_color else None,
            hostname=nodename,
        )
    except OSError as exc:
        raise click.ClickException(f"cannot open the log file: {exc}") from exc
    everything = {**options, **ctx.meta.get(PRELOAD_OPTIONS_KEY, {}), "hostname": nodename}
    with pidfile(pidfile_path):
        controller = _controller(app, nodename, pool, options, everything)
        if options["purge"]:
            purged = purge_queues(app, controller.queues)
            cli.echo(purged_message(purged, len(controller.queues)))
        # Loading before the banner makes a bad URL or a missing extra fail first, in one line.
        transport, _ = load_stores(app)
        cli.echo(_banner(controller, transport, logging.getLevelNamesMapping()[level_name]))
        _warn_if_no_tasks(app)
        statedb = options["statedb"] or app.conf.worker_state_db
        with (
            persistent_state(
                log.node_format(statedb, nodename) if statedb else None,
                controller.state,
                app.clock,
            ),
            _embedded_beat(app, options["schedule_filename"]) if options["beat"] else nullcontext(),
        ):
            controller.start()
    ctx.exit(controller.exitcode)


@contextmanager
def _embedded_beat(app: Celeriac, schedule_filename: str | None) -> Iterator[None]:
    """Run beat in a thread from ``worker_ready`` until the worker shuts down (``-B``).

    Beat stops sending when the shutdown begins (``worker_shutting_down``) and has given
    its lead up by ``worker_shutdown``, before the worker closes its connections.
    """
    embedded = EmbeddedService(app, schedule_filename=schedule_filename)

    def start_beat(sender: Any = None, **kwargs: Any) -> None:
        embedded.start()

    def stop_sending(sender: Any = None, **kwargs: Any) -> None:
        embedded.service.stop()

    def stop_beat(sender: Any = None, **kwargs: Any) -> None:
        embedded.stop()

    receivers = (
        (signals.worker_ready, start_beat),
        (signals.worker_shutting_down, stop_sending),
        (signals.worker_shutdown, stop_beat),
    )
    for signal, receiver in receivers:
        signal.connect(receiver, weak=False)
    try:
        yield
    finally:
        for signal, receiver in receivers:
            signal.disconnect(receiver)
        embedded.stop()


def _controller(
    app: Celeriac, nodename: str, pool: str, options: dict[str, Any], everything: dict[str, Any]
) -> WorkController:
    return WorkController(
        app,
        hostname=nodename,
        pool=pool,
        concurrency=options["concurrency"],
        queues=options["queues"] or None,
        exclude_queues=options["exclude_queues"],
        loglevel=options["loglevel"],
        prefetch_multiplier=options["prefetch_multiplier"],
        send_events=options["task_events"],
        max_tasks_per_child=options["max_tasks_per_child"],
        max_memory_per_child=options["max_memory_per_child"],
        time_limit=options["time_limit"],
        soft_time_limit=options["soft_time_limit"],
        autoscale=options["autoscale"],
        options=everything,
    )
