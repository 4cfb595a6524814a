"""Read Celery protocol 1 task messages (core layer, wire protocol §2.7).

A protocol 1 message has no ``task`` header: everything, task name included, is in the body
object. This module turns such a body into protocol 2 headers and an ``(args, kwargs, embed)``
triple so the rest of celeriac sees one shape. celeriac never sends protocol 1.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from celeriac.exceptions import InvalidTaskError

__all__ = ["LegacyTask", "convert_v1_body", "is_v1_body"]

# Body keys copied to protocol 2 headers of the same name.
_COPIED_KEYS = (
    "lang",
    "shadow",
    "group_index",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
)


@dataclass(frozen=True, slots=True)
class LegacyTask:
    """A protocol 1 body in protocol 2 form: the headers and the decoded body triple."""

    headers: dict[str, Any]
    args: list[Any]
    kwargs: dict[str, Any]
    embed: dict[str, Any]


def is_v1_body(body: Any) -> bool:
    """Tell whether a decoded body is a protocol 1 task (a mapping that names its task)."""
    return isinstance(body, Mapping) and "task" in body


def convert_v1_body(body: Mapping[str, Any]) -> LegacyTask:
    """Convert a decoded protocol 1 body.

    Naive ``eta``/``expires`` values are UTC when the body says ``utc`` (the default) and local
    time otherwise; the converted headers carry aware datetimes.

    Raises:
        InvalidTaskError: the body lacks the task name or id, or args/kwargs have the wrong type.
    """
    task, task_id = body.get("task"), body.get("id")
    if not isinstance(task, str) or not task:
        raise InvalidTaskError("protocol 1 body has no task name")
    if not isinstance(task_id, str) or not task_id:
        raise InvalidTaskError("protocol 1 body has no task id")
    args = body.get("args", [])
    kwargs = body.get("kwargs", {})
    if not isinstance(args, list | tuple):
        raise InvalidTaskError("args is not a list")
    if not isinstance(kwargs, Mapping):
        raise InvalidTaskError("kwargs is not a mapping")
    is_utc = body.get("utc", True) is not False
    headers: dict[str, Any] = {
        "task": task,
        "id": task_id,
        "eta": _aware(body.get("eta"), is_utc),
        "expires": _aware(body.get("expires"), is_utc),
        "group": body.get("group") or body.get("taskset"),
        "retries": body.get("retries") or 0,
        "timelimit": body.get("timelimit") or [None, None],
    }
    for key in _COPIED_KEYS:
        if key in body:
            headers[key] = body[key]
    embed = {
        "callbacks": body.get("callbacks"),
        "errbacks": body.get("errbacks"),
        "chain": None,
        "chord": body.get("chord"),
    }
    return LegacyTask(headers=headers, args=list(args), kwargs=dict(kwargs), embed=embed)


def _aware(value: Any, is_utc: bool) -> Any:
    """Make a naive time aware: UTC if the sender said so, else the local zone."""
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidTaskError(f"protocol 1 body has an invalid time {value!r}") from exc
    if isinstance(value, datetime.datetime) and value.tzinfo is None:
        if is_utc:
            return value.replace(tzinfo=datetime.UTC)
        return value.astimezone(datetime.UTC)
    return value
