"""``app.amqp``: the app's queues and router, by Celery's names (core layer).

``app.amqp.queues`` maps queue names to :class:`~celeriac.entity.Queue` and knows which of
them a worker consumes (``select``, ``deselect``, ``select_add``, ``consume_from``);
``app.amqp.router`` resolves where a task message goes. Both are built from the settings
on first use (``task_queues``, ``task_routes``, ``task_default_*``,
``task_create_missing_queues``, ``task_queue_max_priority``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from celeriac.entity import Exchange, Queue, as_queue
from celeriac.exceptions import QueueNotFound
from celeriac.routing import Router as RouterClass
from celeriac.routing import prepare_routes

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.connection import ProducerPool
    from celeriac.messaging import Producer as ProducerClass

__all__ = ["AMQP", "Queues"]


class Queues(dict[str, Queue]):
    """The queues an app knows, by name, and the subset a worker consumes from.

    Args:
        queues: the declared queues (Queue objects, kombu-style queues, or names).
        default_exchange: the exchange of queues declared without one.
        create_missing: look-ups of unknown names create a queue (with a direct exchange and
            routing key of the same name) instead of raising QueueNotFound.
        max_priority: ``x-max-priority`` for queues that do not set their own.
        default_routing_key: the routing key of queues declared without one.
    """

    def __init__(
        self,
        queues: Iterable[Any] | Mapping[str, Any] | None = None,
        default_exchange: Exchange | None = None,
        create_missing: bool = True,
        max_priority: int | None = None,
        default_routing_key: str | None = None,
    ) -> None:
        super().__init__()
        self.default_exchange = default_exchange
        self.create_missing = create_missing
        self.max_priority = max_priority
        self.default_routing_key = default_routing_key
        self._consume_from: dict[str, Queue] | None = None
        if isinstance(queues, Mapping):
            for name, options in queues.items():
                self.add_compat(name, **options)
        else:
            for queue in queues or ():
                self.add(queue)

    def __missing__(self, name: str) -> Queue:
        if self.create_missing:
            return self.add(self.new_missing(name))
        raise QueueNotFound(f"Queue {name!r} missing from task_queues")

    def add(self, queue: Any, **options: Any) -> Queue:
        """Add a queue (a Queue, a kombu-style queue, or a name with Queue options)."""
        if isinstance(queue, str):
            return self.add_compat(queue, **options)
        added = as_queue(queue)
        if added.exchange is None or added.exchange_name == "":
            added.exchange = self.default_exchange or Exchange(added.name)
        if not added.routing_key:
            added.routing_key = self.default_routing_key or added.name
        if added.max_priority is None and self.max_priority is not None:
            added.max_priority = self.max_priority
        self[added.name] = added
        return added

    def add_compat(self, name: str, **options: Any) -> Queue:
        """Add a queue given by name and the old dict form ``{"exchange": ..., ...}``."""
        exchange = options.pop("exchange", None)
        exchange_type = options.pop("exchange_type", None)
        if isinstance(exchange, str) and exchange_type:
            exchange = Exchange(exchange, exchange_type)
        options.setdefault("routing_key", options.pop("binding_key", None) or "")
        return self.add(Queue(name, exchange, **options))

    def new_missing(self, name: str) -> Queue:
        """The queue created for a name nobody declared: direct exchange and key of that name."""
        return Queue(name, Exchange(name), name)

    @property
    def consume_from(self) -> dict[str, Queue]:
        """The queues a worker consumes: those selected, or all when nothing was selected."""
        if self._consume_from is None:
            return dict(self)
        return dict(self._consume_from)

    def select(self, include: Iterable[str] | str) -> None:
        """Consume only the named queues (created if missing and allowed)."""
        names = [include] if isinstance(include, str) else list(include)
        self._consume_from = {name: self[name] for name in names}

    def deselect(self, exclude: Iterable[str] | str) -> None:
        """Stop consuming the named queues."""
        names = {exclude} if isinstance(exclude, str) else set(exclude)
        if self._consume_from is None:
            self._consume_from = {name: queue for name, queue in self.items() if name not in names}
        else:
            for name in names:
                self._consume_from.pop(name, None)

    def select_add(self, queue: Any, **options: Any) -> Queue:
        """Add a queue and consume from it too (the ``celeryd_after_setup`` seed example)."""
        added = self.add(queue, **options)
        if self._consume_from is not None:
            self._consume_from[added.name] = added
        return added

    def format(self, indent: int = 0, indent_first: bool = True) -> str:
        """One line per consumed queue, as the worker's banner lists them."""
        lines = [
            f".> {queue.name:<16} exchange={queue.exchange_name}"
            f"({_exchange_type(queue)}) key={queue.routing_key}"
            for queue in sorted(self.consume_from.values(), key=lambda queue: queue.name)
        ]
        padding = " " * indent
        text = ("\n" + padding).join(lines)
        return padding + text if indent_first else text


def _exchange_type(queue: Queue) -> str:
    return queue.exchange.type if isinstance(queue.exchange, Exchange) else "direct"


QueueMap = Queues
"""The queue mapping class, under a name the AMQP factory method does not shadow."""


class AMQP:
    """The app's messaging surface: queues, router and producers, made from the settings."""

    def __init__(self, app: Celeriac) -> None:
        self.app = app
        self._queues: QueueMap | None = None
        self._router: RouterClass | None = None

    @property
    def default_queue(self) -> str:
        """The name of the queue of tasks without a route (``task_default_queue``)."""
        return str(self.app.conf.task_default_queue)

    @property
    def default_exchange(self) -> Exchange:
        """``task_default_exchange`` (the default queue's name when unset), of its type."""
        conf = self.app.conf
        return Exchange(
            conf.task_default_exchange or self.default_queue, conf.task_default_exchange_type
        )

    @property
    def default_routing_key(self) -> str:
        """``task_default_routing_key``, or the default queue's name when unset."""
        return str(self.app.conf.task_default_routing_key or self.default_queue)

    def Queues(
        self, queues: Iterable[Any] | Mapping[str, Any] | None, create_missing: bool | None = None
    ) -> QueueMap:
        """Build a queue mapping with the app's defaults; no queues means the default queue."""
        conf = self.app.conf
        if not queues:
            queues = [Queue(self.default_queue, self.default_exchange, self.default_routing_key)]
        return QueueMap(
            queues,
            default_exchange=self.default_exchange,
            create_missing=conf.task_create_missing_queues
            if create_missing is None
            else create_missing,
            max_priority=conf.task_queue_max_priority,
            default_routing_key=self.app.conf.task_default_routing_key,
        )

    def Router(self, queues: QueueMap | None = None) -> RouterClass:
        """Build a router over ``task_routes`` and the given (or the app's) queues."""
        return RouterClass(
            prepare_routes(self.app.conf.task_routes),
            self.queues if queues is None else queues,
            self.default_queue,
        )

    @property
    def queues(self) -> QueueMap:
        """The app's queues, built from ``task_queues`` on first use."""
        if self._queues is None:
            self._queues = self.Queues(self.app.conf.task_queues)
        return self._queues

    @property
    def router(self) -> RouterClass:
        """The app's router, built from ``task_routes`` on first use."""
        if self._router is None:
            self._router = self.Router()
        return self._router

    def flush_routes(self) -> None:
        """Forget the built router and queues so the next use reads the settings again."""
        self._router = None
        self._queues = None

    @property
    def producer_pool(self) -> ProducerPool:
        """The app's producer pool (``app.producer_pool``)."""
        return self.app.producer_pool

    def Producer(self, **options: Any) -> ProducerClass:
        """A producer on the app's own broker connection."""
        return self.app.producer_pool.create_producer(**options)
