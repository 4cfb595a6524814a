"""The client side of remote control: ``app.control`` and its ``inspect()`` (services layer).

Celery's ``celery.app.control`` names and parameters. A command is broadcast to every
worker on the ``<control_exchange>.pidbox`` channel of the app's transport; a command that
wants replies subscribes first to the reply channel with a routing key of its own, then
collects ``{node: value}`` replies carrying its ticket until ``timeout``, until ``limit``
replies came, or until every node named in ``destination`` answered. No I/O of its own:
everything goes through the Transport.

A ``revoke`` (or ``terminate``) sent to every worker is also recorded in the broker with
``Transport.record_revokes`` for ``worker_revoke_expires`` seconds, before it is broadcast:
workers read those records when they start and after they reconnect, so a revoke reaches
the workers that were not listening. One sent to named nodes only is not recorded.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import DecodeError
from celeriac.protocol.pidbox import build_request, parse_reply, reply_channel, request_channel
from celeriac.transports.base import TransportError

if TYPE_CHECKING:
    from celeriac.app import Celeriac

__all__ = ["Control", "Inspect"]

logger = logging.getLogger("celeriac.control")

Reply = dict[str, Any]
ReplyCallback = Callable[[Reply], object]
REVOKE_COMMANDS = frozenset({"revoke", "terminate"})


def _as_list(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


class Inspect:
    """Ask workers what they hold and know: ``app.control.inspect(destination, timeout)``.

    Each method returns ``{node: reply}`` for the nodes that answered, or None when none
    did; with a single node name as ``destination``, that node's reply alone.
    """

    def __init__(
        self,
        destination: str | Sequence[str] | None = None,
        timeout: float = 1.0,
        callback: ReplyCallback | None = None,
        connection: Any = None,
        app: Celeriac | None = None,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> None:
        if app is None:
            raise TypeError("Inspect needs an app: use app.control.inspect()")
        self.app = app
        self.destination = destination
        self.timeout = timeout
        self.callback = callback
        self.connection = connection
        self.limit = limit
        self.pattern = pattern
        self.matcher = matcher

    def _request(self, command: str, **kwargs: Any) -> Any:
        replies = self.app.control.broadcast(
            command,
            arguments=kwargs,
            destination=self.destination,
            reply=True,
            timeout=self.timeout,
            limit=self.limit,
            callback=self.callback,
            pattern=self.pattern,
            matcher=self.matcher,
        )
        return self._prepare(replies or [])

    def _prepare(self, replies: list[Reply]) -> Any:
        by_node: dict[str, Any] = {}
        for reply in replies:
            by_node.update(reply)
        if isinstance(self.destination, str):
            return by_node.get(self.destination)
        return by_node or None

    def report(self) -> Any:
        """Each worker's description of itself: ``{"ok": text}``."""
        return self._request("report")

    def clock(self) -> Any:
        """Each worker's logical clock: ``{"clock": N}``."""
        return self._request("clock")

    def active(self, safe: bool | None = None) -> Any:
        """The requests each worker is running (request-info dicts)."""
        return self._request("active", safe=safe)

    def scheduled(self, safe: bool | None = None) -> Any:
        """The ETA requests each worker holds (a celeriac worker leaves them in the broker)."""
        return self._request("scheduled", safe=safe)

    def reserved(self, safe: bool | None = None) -> Any:
        """The requests each worker fetched and has not started yet."""
        return self._request("reserved", safe=safe)

    def stats(self) -> Any:
        """Each worker's statistics: pool, totals, rusage, broker, prefetch_count, clock..."""
        return self._request("stats")

    def revoked(self) -> Any:
        """The task ids each worker knows to be revoked."""
        return self._request("revoked")

    def registered(self, *taskinfoitems: str) -> Any:
        """The task names each worker knows, with the attributes asked for."""
        return self._request("registered", taskinfoitems=list(taskinfoitems))

    registered_tasks = registered

    def ping(self, destination: str | Sequence[str] | None = None) -> Any:
        """``{"ok": "pong"}`` from each worker that is alive."""
        return self._request("ping")

    def active_queues(self) -> Any:
        """The queues each worker consumes, as kombu queue dicts."""
        return self._request("active_queues")

    def query_task(self, *ids: str | Sequence[str]) -> Any:
        """Where each worker has these task ids: ``{id: [state, request-info]}``."""
        flat: list[str] = []
        for task_id in ids:
            flat.extend([task_id] if isinstance(task_id, str) else task_id)
        return self._request("query_task", ids=flat)

    def conf(self, with_defaults: bool = False) -> Any:
        """Each worker's settings (only those changed from the defaults, by default)."""
        return self._request("conf", with_defaults=with_defaults)

    def hello(self, from_node: str, revoked: Sequence[str] | None = None) -> Any:
        """Celery's start-up exchange of revoked ids between workers."""
        return self._request("hello", from_node=from_node, revoked=revoked)


class Control:
    """Remote control of the app's workers: ``app.control``."""

    def __init__(self, app: Celeriac) -> None:
        self.app = app

    @property
    def mailbox(self) -> str:
        """The name control channels are made from (``control_exchange``, ``celery``)."""
        return str(self.app.conf.control_exchange)

    def inspect(
        self,
        destination: str | Sequence[str] | None = None,
        timeout: float = 1.0,
        callback: ReplyCallback | None = None,
        connection: Any = None,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> Inspect:
        """An :class:`Inspect` bound to this app."""
        return Inspect(
            destination=destination,
            timeout=timeout,
            callback=callback,
            connection=connection,
            app=self.app,
            limit=limit,
            pattern=pattern,
            matcher=matcher,
        )

    def broadcast(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        destination: str | Sequence[str] | None = None,
        connection: Any = None,
        reply: bool = False,
        timeout: float = 1.0,
        limit: int | None = None,
        callback: ReplyCallback | None = None,
        channel: Any = None,
        pattern: str | None = None,
        matcher: str | None = None,
        **extra_kwargs: Any,
    ) -> list[Reply] | None:
        """Send ``command`` to the workers; with ``reply``, return the replies that came.

        Extra keyword arguments join ``arguments``. ``connection`` and ``channel`` are
        accepted for Celery compatibility: the app's transport carries the command.
        """
        transport = self.app.transport
        nodes = _as_list(destination)
        merged = {**(arguments or {}), **extra_kwargs}
        if command in REVOKE_COMMANDS and nodes is None:
            self._record_revokes(_as_list(merged.get("task_id")) or [])
        reply_key = str(uuid.uuid4()) if reply else None
        envelope, ticket = build_request(
            self.mailbox,
            command,
            merged,
            destination=nodes,
            pattern=pattern,
            matcher=matcher,
            reply_key=reply_key,
            clock=self.app.clock.forward(),
            timeout=timeout,
        )
        if reply_key is None:
            transport.broadcast(request_channel(self.mailbox), envelope)
            return None
        subscription = transport.subscribe(reply_channel(self.mailbox), routing_key=reply_key)
        try:
            transport.broadcast(request_channel(self.mailbox), envelope)
            return self._collect(subscription, ticket, timeout, limit or len(nodes or ()), callback)
        finally:
            subscription.close()

    def _record_revokes(self, task_ids: list[str]) -> None:
        """Keep the ids revoked in the broker, for workers that start or reconnect later.

        A broker that cannot keep them (a RabbitMQ older than 3.9 has no streams) does not
        stop the broadcast: the failure is logged and the workers listening now still hear.
        """
        ids = [str(task_id) for task_id in task_ids]
        if not ids:
            return
        try:
            self.app.transport.record_revokes(ids, float(self.app.conf.worker_revoke_expires))
        except TransportError as exc:
            logger.warning(
                "Could not record the revoke of %s in the broker, so only the workers"
                " listening now will skip it: %s",
                ", ".join(ids),
                exc,
            )

    def _collect(
        self,
        subscription: Any,
        ticket: str | None,
        timeout: float,
        limit: int,
        callback: ReplyCallback | None,
    ) -> list[Reply]:
        """Gather replies with ``ticket`` until ``timeout``, or until ``limit`` (if not 0) came."""
        replies: list[Reply] = []
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            for envelope in subscription.get(remaining):
                try:
                    reply_ticket, body = parse_reply(envelope)
                except DecodeError as exc:
                    logger.warning("Ignoring a control reply that cannot be read: %s", exc)
                    continue
                if reply_ticket != ticket:
                    continue
                clock = envelope.headers.get("clock")
                if isinstance(clock, int):
                    self.app.clock.adjust(clock)
                replies.append(body)
                if callback is not None:
                    callback(body)
            if limit and len(replies) >= limit:
                break
        return replies

    # ---- commands ---------------------------------------------------------------------

    def ping(
        self, destination: str | Sequence[str] | None = None, timeout: float = 1.0, **kwargs: Any
    ) -> list[Reply] | None:
        """Ping the workers; each alive one replies ``{node: {"ok": "pong"}}``."""
        return self.broadcast(
            "ping", reply=True, destination=destination, timeout=timeout, **kwargs
        )

    def revoke(
        self,
        task_id: str | Sequence[str],
        destination: str | Sequence[str] | None = None,
        terminate: bool = False,
        signal: str = "SIGTERM",
        **kwargs: Any,
    ) -> list[Reply] | None:
        """Tell the workers to skip these tasks; ``terminate`` also ends running ones."""
        return self.broadcast(
            "revoke",
            destination=destination,
            arguments={"task_id": task_id, "terminate": terminate, "signal": signal},
            **kwargs,
        )

    def terminate(
        self,
        task_id: str | Sequence[str],
        destination: str | Sequence[str] | None = None,
        signal: str = "SIGTERM",
        **kwargs: Any,
    ) -> list[Reply] | None:
        """Revoke these tasks and end them where they run, with ``signal``."""
        return self.revoke(task_id, destination, terminate=True, signal=signal, **kwargs)

    def rate_limit(
        self,
        task_name: str,
        rate_limit: str | int | float | None,
        destination: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> list[Reply] | None:
        """Set a task's rate limit on the workers (``"10/m"``; None or 0 removes it)."""
        return self.broadcast(
            "rate_limit",
            destination=destination,
            arguments={"task_name": task_name, "rate_limit": rate_limit},
            **kwargs,
        )

    def time_limit(
        self,
        task_name: str,
        soft: float | None = None,
        hard: float | None = None,
        destination: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> list[Reply] | None:
        """Set a task's soft and hard time limits on the workers."""
        return self.broadcast(
            "time_limit",
            destination=destination,
            arguments={"task_name": task_name, "soft": soft, "hard": hard},
            **kwargs,
        )

    def shutdown(
        self, destination: str | Sequence[str] | None = None, **kwargs: Any
    ) -> list[Reply] | None:
        """Ask the workers to stop (warm shutdown)."""
        return self.broadcast("shutdown", destination=destination, **kwargs)

    def pool_grow(
        self, n: int = 1, destination: str | Sequence[str] | None = None, **kwargs: Any
    ) -> list[Reply] | None:
        """Add ``n`` slots to the workers' pools."""
        return self.broadcast("pool_grow", destination=destination, arguments={"n": n}, **kwargs)

    def pool_shrink(
        self, n: int = 1, destination: str | Sequence[str] | None = None, **kwargs: Any
    ) -> list[Reply] | None:
        """Remove ``n`` slots from the workers' pools."""
        return self.broadcast("pool_shrink", destination=destination, arguments={"n": n}, **kwargs)

    def autoscale(
        self,
        max: int,
        min: int,
        destination: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> list[Reply] | None:
        """Change the autoscaler's bounds, on workers started with ``--autoscale``."""
        return self.broadcast(
            "autoscale", destination=destination, arguments={"max": max, "min": min}, **kwargs
        )

    def add_consumer(
        self,
        queue: str,
        exchange: str | None = None,
        exchange_type: str = "direct",
        routing_key: str | None = None,
        options: Mapping[str, Any] | None = None,
        destination: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> list[Reply] | None:
        """Make the workers consume from ``queue`` as well."""
        return self.broadcast(
            "add_consumer",
            destination=destination,
            arguments={
                "queue": queue,
                "exchange": exchange,
                "exchange_type": exchange_type,
                "routing_key": routing_key,
                **(options or {}),
            },
            **kwargs,
        )

    def cancel_consumer(
        self, queue: str, destination: str | Sequence[str] | None = None, **kwargs: Any
    ) -> list[Reply] | None:
        """Make the workers stop consuming from ``queue``."""
        return self.broadcast(
            "cancel_consumer", destination=destination, arguments={"queue": queue}, **kwargs
        )

    def enable_events(
        self, destination: str | Sequence[str] | None = None, **kwargs: Any
    ) -> list[Reply] | None:
        """Make the workers send task events."""
        return self.broadcast("enable_events", destination=destination, **kwargs)

    def disable_events(
        self, destination: str | Sequence[str] | None = None, **kwargs: Any
    ) -> list[Reply] | None:
        """Make the workers stop sending task events."""
        return self.broadcast("disable_events", destination=destination, **kwargs)

    def heartbeat(
        self, destination: str | Sequence[str] | None = None, **kwargs: Any
    ) -> list[Reply] | None:
        """Make the workers send a ``worker-heartbeat`` event now."""
        return self.broadcast("heartbeat", destination=destination, **kwargs)

    def purge(self, connection: Any = None) -> int:
        """Delete every waiting message in the app's queues; return how many."""
        transport = self.app.transport
        return sum(transport.purge(name) for name in self.app.amqp.queues)

    discard_all = purge
