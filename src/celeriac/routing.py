"""Routing: which queue, exchange and routing key a task message goes to (core layer).

Routes come from ``task_routes``: a dict of task names, glob patterns (``"feed.*"``) or
compiled regular expressions, a router function ``(name, args, kwargs, options, task=None)``,
a ``"module:attr"`` string naming one, or a list of those tried in order. A route is a queue
name or a dict of ``queue``/``exchange``/``routing_key`` (and other publish options, which
the caller's own options override). Explicit ``queue``/``exchange``/``routing_key`` options
given to ``apply_async`` skip the routes. Without a route the task goes to
``task_default_queue``.

As on AMQP, a direct route without both an exchange and a routing key is published to the
default exchange ``''`` with the queue name as routing key (wire protocol §2.5).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celeriac.entity import Exchange, Queue, bound_queues

if TYPE_CHECKING:
    from celeriac.amqp import Queues

__all__ = ["Route", "Router", "prepare_routes"]

RouterFunction = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Route:
    """Where one message goes: the queues it lands in, and the exchange and key it names."""

    queues: tuple[str, ...]
    exchange: str
    routing_key: str

    @property
    def queue(self) -> str | None:
        """The queue named in events and signals: the first it lands in, if any."""
        return self.queues[0] if self.queues else None


class MapRoute:
    """A router made of a mapping: exact names first, then globs and regexes in order."""

    def __init__(self, routes: Mapping[Any, Any]) -> None:
        self.exact: dict[str, Any] = {}
        self.patterns: list[tuple[re.Pattern[str], Any]] = []
        for key, route in routes.items():
            if isinstance(key, re.Pattern):
                self.patterns.append((key, route))
            elif any(char in key for char in "*?["):
                self.patterns.append((re.compile(fnmatch.translate(key)), route))
            else:
                self.exact[key] = route

    def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name in self.exact:
            return _copy(self.exact[name])
        for pattern, route in self.patterns:
            if pattern.match(name):
                return _copy(route)
        return None


def _copy(route: Any) -> Any:
    return dict(route) if isinstance(route, Mapping) else route


def prepare_routes(routes: Any) -> list[RouterFunction]:
    """Turn ``task_routes`` into a list of router callables, in the order they are tried."""
    if routes is None:
        return []
    if isinstance(routes, Mapping | str) or callable(routes):
        routes = [routes]
    prepared: list[RouterFunction] = []
    for route in routes:
        if isinstance(route, Mapping):
            prepared.append(MapRoute(route))
        elif isinstance(route, str):
            from celeriac._imports import import_from_string

            prepared.append(_callable_router(import_from_string(route)))
        else:
            prepared.append(_callable_router(route))
    return prepared


def _callable_router(router: Any) -> RouterFunction:
    """Accept a router function, or an object with Celery 3's ``route_for_task`` method."""
    if callable(router):
        return router  # type: ignore[no-any-return]
    route_for_task = getattr(router, "route_for_task", None)
    if route_for_task is None:
        raise TypeError(f"not a router: {router!r} (give a function or a mapping)")

    def call(name: str, args: Any, kwargs: Any, options: Any, task: Any = None) -> Any:
        return route_for_task(name, args, kwargs)

    return call


class Router:
    """``app.amqp.router``: resolves the destination of each task message.

    Args:
        routes: the prepared routers (see :func:`prepare_routes`).
        queues: the app's queue mapping; a queue named by a route is looked up there, and
            created there when ``task_create_missing_queues`` allows.
        default_queue: the queue of tasks no route matches.
    """

    def __init__(self, routes: Sequence[RouterFunction], queues: Queues, default_queue: str):
        self.routes = list(routes)
        self.queues = queues
        self.default_queue = default_queue

    def route(
        self,
        options: Mapping[str, Any],
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        task_type: Any = None,
    ) -> dict[str, Any]:
        """Return ``options`` completed with the destination, as Celery's router does.

        The result's ``queue`` is a :class:`~celeriac.entity.Queue` when a queue is known.

        Raises:
            QueueNotFound: a route names a queue missing from ``task_queues`` while
                ``task_create_missing_queues`` is off.
        """
        options = self._expand(dict(options))
        if not {"queue", "exchange", "routing_key"} & options.keys():
            for router in self.routes:
                route = router(name, args, kwargs or {}, options, task=task_type)
                if route is not None:
                    return {**self._expand(_copy(route)), **options}
            options = {**self._expand(self.default_queue), **options}
        return options

    def resolve(
        self,
        name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        options: Mapping[str, Any],
    ) -> Route:
        """Where to publish task ``name`` called with these arguments and options."""
        routed = self.route(options, name, args, kwargs)
        queue: Queue | None = routed.get("queue")
        exchange = _name_of(routed.get("exchange"))
        routing_key = routed.get("routing_key")
        if queue is not None:
            own = queue.exchange if isinstance(queue.exchange, Exchange) else Exchange("")
            if own.type == "direct" and (not exchange or not routing_key):
                return Route((queue.name,), "", queue.name)
            exchange = own.name if exchange is None else exchange
            routing_key = routing_key or queue.routing_key
        exchange = exchange or ""
        routing_key = str(routing_key or "")
        targets = bound_queues(self.queues.values(), exchange, routing_key)
        if queue is not None and not targets:
            targets = [queue.name]
        return Route(tuple(targets), exchange, routing_key)

    def _expand(self, route: Any) -> dict[str, Any]:
        """Turn a queue name (or a route naming one) into a route holding the Queue."""
        if isinstance(route, str):
            route = {"queue": route}
        queue = route.get("queue")
        if isinstance(queue, str):
            route["queue"] = self.queues[queue]
        elif queue is not None and not isinstance(queue, Queue):
            route["queue"] = self.queues.add(queue)
        return dict(route)


def _name_of(exchange: Any) -> str | None:
    if exchange is None or isinstance(exchange, str):
        return exchange
    return str(getattr(exchange, "name", exchange))
