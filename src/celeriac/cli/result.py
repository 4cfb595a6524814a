"""``celeriac result TASK_ID``: print a task's return value or traceback (edge layer)."""

from __future__ import annotations

import json
import pprint
from typing import Any

import click

from celeriac import states
from celeriac.cli.app_loading import CeleriacCommand, CLIContext
from celeriac.exceptions import NotRegistered, TimeoutError
from celeriac.result import AsyncResult

__all__ = ["result"]

_OUTCOMES = {states.FAILURE: "failed", states.REVOKED: "was revoked"}


def pretty(value: Any) -> str:
    """Show a result: text as it is, dicts and lists as indented JSON, the rest as Python."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        try:
            return json.dumps(value, indent=4, sort_keys=True)
        except (TypeError, ValueError):
            pass
    return pprint.pformat(value)


def _handle(cli: CLIContext, task_id: str, task_name: str | None) -> AsyncResult[Any]:
    if task_name is None:
        return cli.app.AsyncResult(task_id)
    try:
        return cli.app.tasks[task_name].AsyncResult(task_id)
    except NotRegistered as exc:
        raise click.ClickException(f"no task named {task_name!r} in {cli.app!r}") from exc


@click.command(cls=CeleriacCommand)
@click.argument("task_id")
@click.option("-t", "--task", help="Name of task (if custom backend).")
@click.option("--traceback", is_flag=True, help="Show traceback instead.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    help="Seconds to wait for a result not ready yet; by default its state is reported at once.",
)
@click.pass_obj
def result(
    cli: CLIContext, task_id: str, task: str | None, traceback: bool, timeout: float | None
) -> None:
    """Print the return value for a given task id.

    A task that failed or was revoked, or that is not ready (PENDING is also the state of
    an id no worker has reported on) and was not waited for with --timeout, is reported
    as an error (exit status 1).
    """
    handle = _handle(cli, task_id, task)
    if traceback:
        text = handle.traceback
        cli.echo(text.rstrip("\n") if text is not None else pretty(None))
        return
    if timeout is None:
        state = handle.state
        if state not in states.READY_STATES:
            raise click.ClickException(_not_ready(task_id, state))
    try:
        value = handle.get(timeout=timeout, propagate=False)
    except TimeoutError as exc:
        raise click.ClickException(
            f"task {task_id} is not ready after {timeout} s (state {handle.state})"
        ) from exc
    outcome = _OUTCOMES.get(handle.state)
    if outcome is not None:
        raise click.ClickException(
            f"task {task_id} {outcome}: {type(value).__name__}: {value} (--traceback shows where)"
        )
    cli.echo(pretty(value))


def _not_ready(task_id: str, state: str) -> str:
    """Say that a task has no result yet, what its state means, and how to wait for it."""
    if state == states.PENDING:
        meaning = "no worker has reported on it yet, or the id is unknown to the result store"
    else:
        meaning = "it is not finished"
    return f"task {task_id} is {state}: {meaning}. Give --timeout SECONDS to wait for its result."
