"""``celeriac multi``: start, stop and restart several detached workers (edge layer).

Celery's command, for the init scripts and systemd units written for ``celery multi``::

    celeriac -A proj multi start w1 w2 -l INFO -c:w1 4 --pidfile=/run/celeriac/%n.pid
    celeriac -A proj multi stopwait w1 w2 --pidfile=/run/celeriac/%n.pid

Each node is a ``celeriac worker --detach`` of its own; its pidfile is how ``stop`` and
``kill`` find it later, so they must be given the same ``--pidfile`` as ``start`` (the
default, ``%n.pid``, is in the working directory). The node syntax is in
:mod:`celeriac.cli.multi_nodes`. The exit status is the number of nodes that failed.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from celeriac import __version__
from celeriac.cli.app_loading import PRELOAD_OPTIONS_KEY, CeleriacCommand, CLIContext
from celeriac.cli.multi_nodes import Node, parse_nodes
from celeriac.cli.pidfile import is_alive, read_live_pid

__all__ = ["multi"]

STOP_TIMEOUT = 300.0
"""How long ``stopwait`` and ``restart`` wait for a node to exit, in seconds."""

Action = Callable[[list[Node], list[str]], int]


def worker_command(node: Node, prefix: list[str]) -> list[str]:
    """The ``celeriac worker --detach`` command line that starts ``node``."""
    return [
        sys.executable, "-m", "celeriac", *prefix, "worker", "--detach",
        "-n", node.name, f"--pidfile={node.pidfile}", f"--logfile={node.logfile}",
        *node.arguments,
    ]  # fmt: skip


def _start(nodes: list[Node], prefix: list[str]) -> int:
    click.echo("> Starting nodes...")
    failed = 0
    for node in nodes:
        for path in (node.pidfile, node.logfile):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(worker_command(node, prefix), capture_output=True, text=True)
        if done.returncode == 0:
            click.echo(f"\t> {node.name}: OK")
            continue
        failed += 1
        reason = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        click.echo(f"\t> {node.name}: FAILED: {reason[0]}", err=True)
    return failed


def _signal_nodes(nodes: list[Node], signum: signal.Signals) -> dict[Node, int]:
    """Send ``signum`` to each node that runs; return the pids signalled."""
    sent: dict[Node, int] = {}
    for node in nodes:
        pid = read_live_pid(node.pidfile)
        if pid is None:
            click.echo(f"\t> {node.name}: DOWN")
            continue
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            click.echo(f"\t> {node.name}: DOWN")
            continue
        click.echo(f"\t> {node.name}: {signum.name.removeprefix('SIG')} -> {pid}")
        sent[node] = pid
    return sent


def _stop(nodes: list[Node], prefix: list[str]) -> int:
    click.echo("> Stopping nodes...")
    _signal_nodes(nodes, signal.SIGTERM)
    return 0


def _stopwait(nodes: list[Node], prefix: list[str]) -> int:
    click.echo("> Stopping nodes...")
    sent = _signal_nodes(nodes, signal.SIGTERM)
    if not sent:
        return 0
    count = len(sent)
    pids = ", ".join(str(pid) for pid in sent.values())
    click.echo(f"> Waiting for {count} {'node' if count == 1 else 'nodes'} -> {pids}...")
    failed = 0
    deadline = time.monotonic() + STOP_TIMEOUT
    for node, pid in sent.items():
        while is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if is_alive(pid):
            failed += 1
            click.echo(f"\t> {node.name}: still running after {STOP_TIMEOUT:.0f} s", err=True)
        else:
            click.echo(f"\t> {node.name}: OK")
    return failed


def _restart(nodes: list[Node], prefix: list[str]) -> int:
    return _stopwait(nodes, prefix) or _start(nodes, prefix)


def _kill(nodes: list[Node], prefix: list[str]) -> int:
    click.echo("> Killing nodes...")
    _signal_nodes(nodes, signal.SIGKILL)
    return 0


def _show(nodes: list[Node], prefix: list[str]) -> int:
    for node in nodes:
        click.echo(shlex.join(worker_command(node, prefix)))
    return 0


def _names(nodes: list[Node], prefix: list[str]) -> int:
    for node in nodes:
        click.echo(node.name)
    return 0


ACTIONS: dict[str, Action] = {
    "start": _start,
    "stop": _stop,
    "stopwait": _stopwait,
    "restart": _restart,
    "kill": _kill,
    "show": _show,
    "names": _names,
}


def _root_prefix(ctx: click.Context) -> list[str]:
    """The global options and the app's preload options this command was given, for the
    worker command lines (the root command takes both)."""
    params = ctx.find_root().params
    prefix: list[str] = []
    for key, flag in (
        ("app_name", "-A"),
        ("broker", "--broker"),
        ("result_backend", "--result-backend"),
        ("config", "--config"),
    ):
        if params.get(key):
            prefix += [flag, str(params[key])]
    cli = ctx.find_object(CLIContext)
    values = ctx.meta.get(PRELOAD_OPTIONS_KEY, {})
    for option in cli.app.user_options.get("preload", ()) if cli is not None else ():
        prefix += _given(option, values.get(option.name))
    return prefix


def _given(option: click.Parameter, value: object) -> list[str]:
    """The arguments that give ``option`` the value ``value``; none for its default."""
    if value is None or value == option.default or not isinstance(option, click.Option):
        return []
    flag = max(option.opts, key=len)
    if option.is_flag:
        return [flag] if value else []
    values = value if option.multiple and isinstance(value, list | tuple) else [value]
    return [part for item in values for part in (flag, str(item))]


@click.command(
    cls=CeleriacCommand,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("command", type=click.Choice([*ACTIONS, "expand", "get"]))
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def multi(ctx: click.Context, command: str, arguments: tuple[str, ...]) -> None:
    """Start, stop or restart several detached workers: celery multi's commands and syntax.

    \b
    celeriac -A proj multi start w1 w2 -l INFO -c:w1 4 --pidfile=%n.pid
    celeriac multi stopwait w1 w2 --pidfile=%n.pid
    celeriac multi start 3 -Q:1-2 images -Q default
    celeriac multi show w1 w2        (print the worker command lines)
    celeriac multi expand "%n.log" w1 w2
    celeriac multi get w1 w1 w2      (the command line of one node)
    """
    words = list(arguments)
    template = words.pop(0) if command in ("expand", "get") and words else None
    if command in ("expand", "get") and template is None:
        needed = "template" if command == "expand" else "node name"
        raise click.UsageError(f"multi {command} needs a {needed}")
    try:
        nodes = parse_nodes(words)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    prefix = _root_prefix(ctx)
    if command == "expand":
        for node in nodes:
            click.echo(node.expand(str(template)))
        return
    if command == "get":
        wanted = [node for node in nodes if template in (node.name, node.short_name)]
        if not wanted:
            raise click.ClickException(f"no node named {template!r}")
        click.echo(shlex.join(worker_command(wanted[0], prefix)))
        return
    if command not in ("show", "names"):
        click.echo(f"celeriac multi v{__version__}")
    ctx.exit(ACTIONS[command](nodes, prefix))
