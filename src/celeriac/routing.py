"""Routing: which queue (and exchange, routing key) a task message goes to.

Routes come from ``task_routes`` (a dict of names or glob patterns, a router function,
or a list of those, tried in order) and fall back to ``task_default_queue``. Explicit
``queue``/``exchange``/``routing_key`` options given to ``apply_async`` win.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from celeriac.exceptions import QueueNotFound

Router = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Route:
    """Where one message goes."""

    queue: str
    exchange: str
    routing_key: str


def _match_mapping(routes: Mapping[Any, Any], name: str) -> Any:
    if name in routes:
        return routes[name]
    for pattern, route in routes.items():
        if isinstance(pattern, re.Pattern):
            if pattern.match(name):
                return route
        elif any(char in pattern for char in "*?[") and fnmatch.fnmatchcase(name, pattern):
            return route
    return None


def _lookup(
    routes: Any,
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    options: Mapping[str, Any],
) -> Any:
    if routes is None:
        return None
    if isinstance(routes, Mapping):
        return _match_mapping(routes, name)
    if callable(routes):
        return routes(name, args, kwargs, options, task=None)
    for router in routes:
        route = _lookup(router, name, args, kwargs, options)
        if route is not None:
            return route
    return None


def route_task(
    conf: Mapping[str, Any],
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    options: Mapping[str, Any],
) -> Route:
    """Resolve where task ``name`` goes, given the call's options and the settings."""
    queue = options.get("queue")
    exchange = options.get("exchange")
    routing_key = options.get("routing_key")
    if queue is None and exchange is None and routing_key is None:
        route = _lookup(conf["task_routes"], name, args, kwargs, options)
        if isinstance(route, str):
            queue = route
        elif isinstance(route, Mapping):
            queue = route.get("queue")
            exchange = route.get("exchange")
            routing_key = route.get("routing_key")
    if queue is not None and not isinstance(queue, str):
        queue = getattr(queue, "name", None) or str(queue)
    queue = queue or routing_key or conf["task_default_queue"]
    assert isinstance(queue, str)
    check_queue_exists(conf, queue)
    return Route(
        queue=queue,
        exchange="" if exchange is None else str(getattr(exchange, "name", exchange)),
        routing_key=str(routing_key or queue),
    )


def check_queue_exists(conf: Mapping[str, Any], queue: str) -> None:
    """Refuse a queue outside ``task_queues`` when missing queues may not be created."""
    declared = conf["task_queues"]
    if conf["task_create_missing_queues"] or not declared:
        return
    names = {getattr(item, "name", item) for item in declared}
    if queue not in names and queue != conf["task_default_queue"]:
        raise QueueNotFound(f"Queue {queue!r} missing from task_queues")
