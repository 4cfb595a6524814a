"""Send task messages: the work behind ``app.send_task`` and ``Task.apply_async``.

Options are turned into one protocol-v2 message, the publish signals are sent around
the transport call, and the result handle is returned. This is the client's hot path:
signals with no receivers and disabled events cost one check each. Inside
``batch_publish`` the messages are gathered and put on the broker in one call, as a
group's members are.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celeriac import signals
from celeriac.current import get_current_task
from celeriac.exceptions import EncodeError, QueueNotFound
from celeriac.messaging import Producer, retry_publish, transport_of
from celeriac.protocol.envelope import Envelope
from celeriac.protocol.message import build_task_message
from celeriac.result import AsyncResult
from celeriac.routing import Route
from celeriac.transports.base import OutgoingMessage, clamp_priority

if TYPE_CHECKING:
    from celeriac.app import Celeriac


@dataclass
class _Batch:
    """Messages gathered by ``batch_publish`` and what to do once they are published."""

    app: Celeriac
    messages: list[OutgoingMessage] = field(default_factory=list)
    after: list[Callable[[], None]] = field(default_factory=list)
    retry: bool = False


_batch: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar(
    "celeriac_publish_batch", default=None
)


@contextlib.contextmanager
def batch_publish(app: Celeriac) -> Iterator[None]:
    """Gather the messages ``app`` sends in this block and publish them in one call.

    Messages sent through a producer or connection of their own are published at once.
    The publish signals and events of each message follow the batch's publish. Nested
    blocks join the outer one.
    """
    if _batch.get() is not None:
        yield
        return
    batch = _Batch(app)
    token = _batch.set(batch)
    try:
        yield
    finally:
        _batch.reset(token)
    if batch.messages:
        transport = app.transport
        policy = app.conf.task_publish_retry_policy

        def publish() -> None:
            transport.publish_many(batch.messages)

        if batch.retry:
            retry_publish(publish, policy)
        else:
            publish()
    for action in batch.after:
        action()


def _utc_datetime(moment: datetime.datetime) -> datetime.datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)


def _eta_of(countdown: float | None, eta: Any, now: float) -> datetime.datetime | None:
    if countdown is not None:
        if eta is not None:
            raise ValueError("give either countdown or eta, not both")
        return datetime.datetime.fromtimestamp(now + float(countdown), datetime.UTC)
    if eta is None:
        return None
    if isinstance(eta, datetime.datetime):
        return _utc_datetime(eta)
    return datetime.datetime.fromisoformat(str(eta))


def _expires_of(expires: Any, now: float) -> datetime.datetime | None:
    if expires is None:
        return None
    if isinstance(expires, datetime.datetime):
        return _utc_datetime(expires)
    if isinstance(expires, datetime.timedelta):
        expires = expires.total_seconds()
    if isinstance(expires, int | float):
        return datetime.datetime.fromtimestamp(now + float(expires), datetime.UTC)
    return datetime.datetime.fromisoformat(str(expires))


def _signature_list(value: Any) -> list[Any] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return [dict(value)]
    return [dict(item) for item in value]


def _publisher(
    app: Celeriac,
    route: Route,
    envelope: Envelope,
    eta: float | None,
    producer: Any,
    connection: Any,
) -> Callable[[], None]:
    """Return the call that puts the message on the broker, through whatever was handed in.

    A celeriac Producer or Connection lends its transport; any other kombu-style producer
    has its ``publish`` called with the encoded body, as Celery calls it.
    """
    if producer is not None and not isinstance(producer, Producer):
        properties = {k: v for k, v in envelope.properties.items() if k != "delivery_info"}
        return lambda: producer.publish(
            envelope.body,
            exchange=route.exchange,
            routing_key=route.routing_key,
            content_type=envelope.content_type,
            content_encoding=envelope.content_encoding,
            headers=envelope.headers,
            **properties,
        )
    handle = producer if producer is not None else connection
    transport = app.transport if handle is None else transport_of(handle)
    messages = _outgoing(route, envelope, eta)
    if len(messages) == 1:
        one = messages[0]
        return lambda: transport.publish(one.queue, envelope, priority=one.priority, eta=eta)
    return lambda: transport.publish_many(messages)


def _outgoing(route: Route, envelope: Envelope, eta: float | None) -> list[OutgoingMessage]:
    if not route.queues:
        raise QueueNotFound(
            f"no queue is bound to exchange {route.exchange!r}"
            f" with routing key {route.routing_key!r}"
        )
    priority = clamp_priority(envelope.properties.get("priority"))
    return [OutgoingMessage(queue, envelope, priority, eta) for queue in route.queues]


def send_task_message(
    app: Celeriac,
    name: str,
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    *,
    countdown: float | None = None,
    eta: Any = None,
    task_id: str | None = None,
    producer: Any = None,
    connection: Any = None,
    expires: Any = None,
    link: Any = None,
    link_error: Any = None,
    add_to_parent: bool = True,
    group_id: str | None = None,
    group_index: int | None = None,
    retries: int = 0,
    chord: Any = None,
    reply_to: str | None = None,
    time_limit: float | None = None,
    soft_time_limit: float | None = None,
    root_id: str | None = None,
    parent_id: str | None = None,
    shadow: str | None = None,
    chain: Any = None,
    headers: Mapping[str, Any] | None = None,
    retry: bool | None = None,
    retry_policy: Mapping[str, Any] | None = None,
    **options: Any,
) -> AsyncResult[Any]:
    """Publish one task message and return its AsyncResult (seed 004's apply_async options)."""
    conf = app.conf
    now = time.time()
    task_id = task_id or str(uuid.uuid4())
    args = list(args or ())
    kwargs = dict(kwargs or {})
    parent = get_current_task()
    if parent is not None and parent_id is None:
        request = parent.request
        if request.id is not None and not request.called_directly:
            parent_id = request.id
            root_id = root_id or request.root_id or request.id
    route = app.amqp.router.resolve(name, args, kwargs, options)
    eta_moment = _eta_of(countdown, eta, now)
    priority = options.get("priority")
    if priority is None:
        priority = conf.task_default_priority or 0
    callbacks = _signature_list(link)
    errbacks = _signature_list(link_error)
    serializer = options.get("serializer") or conf.task_serializer
    try:
        envelope = build_task_message(
            name,
            task_id,
            args,
            kwargs,
            serializer=serializer,
            compression=options.get("compression") or conf.task_compression,
            eta=eta_moment,
            expires=_expires_of(expires, now),
            retries=retries or 0,
            time_limit=time_limit,
            soft_time_limit=soft_time_limit,
            root_id=root_id,
            parent_id=parent_id,
            group_id=group_id,
            group_index=group_index,
            shadow=shadow,
            origin=app.origin,
            ignore_result=options.get("ignore_result"),
            callbacks=callbacks,
            errbacks=errbacks,
            chain=chain,
            chord=chord,
            reply_to=reply_to or app.oid,
            priority=clamp_priority(priority),
            delivery_mode=options.get("delivery_mode") or conf.task_default_delivery_mode,
            exchange=route.exchange,
            routing_key=route.routing_key,
            headers=headers,
            replaced_task_nesting=options.get("replaced_task_nesting") or 0,
            stamped_headers=options.get("stamped_headers"),
            stamps=options.get("stamps"),
            argsrepr=options.get("argsrepr"),
            kwargsrepr=options.get("kwargsrepr"),
            now=lambda: now,
        )
    except EncodeError as exc:
        raise unencodable_arguments(name, serializer, exc) from exc
    app.prepare_replies(reply_to, options.get("ignore_result"))
    embed = {"callbacks": callbacks, "errbacks": errbacks, "chain": chain, "chord": chord}
    body = (args, kwargs, embed)
    policy = dict(conf.task_publish_retry_policy, **(retry_policy or {}))
    eta_time = eta_moment.timestamp() if eta_moment is not None else None
    batch = _batch.get()
    if batch is not None and (batch.app is not app or producer or connection):
        batch = None
    publish = None if batch else _publisher(app, route, envelope, eta_time, producer, connection)
    if signals.before_task_publish.has_listeners(name):
        signals.before_task_publish.send(
            sender=name,
            body=body,
            exchange=route.exchange,
            routing_key=route.routing_key,
            headers=envelope.headers,
            properties=envelope.properties,
            declare=[],
            retry_policy=policy,
        )
    should_retry = conf.task_publish_retry if retry is None else retry

    def after() -> None:
        app.clock.forward()
        _after_publish(
            app, name, task_id, body, route.exchange, route.routing_key, envelope.headers
        )
        if conf.task_send_sent_event:
            _send_task_sent_event(
                app, envelope.headers, route.queue, route.exchange, route.routing_key
            )

    if batch is not None:
        batch.messages.extend(_outgoing(route, envelope, eta_time))
        batch.retry = batch.retry or bool(should_retry)
        batch.after.append(after)
    else:
        assert publish is not None
        if should_retry:
            retry_publish(publish, policy)
        else:
            publish()
        after()
    result: AsyncResult[Any] = AsyncResult(task_id, app=app, task_name=name)
    result.ignored = bool(options.get("ignore_result"))
    if add_to_parent and parent is not None and parent.trail and parent_id is not None:
        parent.request.children.append(result)
    return result


def unencodable_arguments(name: str, serializer: str, exc: EncodeError) -> EncodeError:
    """Say which task's arguments could not be encoded, and which settings to change."""
    return EncodeError(
        f"Cannot send task {name}: its arguments hold a value the {serializer} serializer"
        f" cannot encode ({exc}). Send values {serializer} can encode, or choose a"
        " serializer that can (the task_serializer setting, or serializer= on the call)"
        " and add it to the worker's accept_content."
    )


def _after_publish(
    app: Celeriac,
    name: str,
    task_id: str,
    body: tuple[list[Any], dict[str, Any], dict[str, Any]],
    exchange: str,
    routing_key: str,
    headers: dict[str, Any],
) -> None:
    if signals.after_task_publish.has_listeners(name):
        signals.after_task_publish.send(
            sender=name, body=body, exchange=exchange, routing_key=routing_key, headers=headers
        )
    if signals.task_sent.has_listeners(name):
        args, kwargs, _ = body
        signals.task_sent.send(
            sender=name,
            task_id=task_id,
            task=app.tasks.get(name, name),
            args=args,
            kwargs=kwargs,
            eta=headers.get("eta"),
            taskset=headers.get("group"),
        )


def _send_task_sent_event(
    app: Celeriac,
    headers: Mapping[str, Any],
    queue: str | None,
    exchange: str,
    routing_key: str,
) -> None:
    with app.events.default_dispatcher() as dispatcher:
        dispatcher.send(
            "task-sent",
            uuid=headers["id"],
            root_id=headers.get("root_id"),
            parent_id=headers.get("parent_id"),
            name=headers["task"],
            args=headers.get("argsrepr"),
            kwargs=headers.get("kwargsrepr"),
            retries=headers.get("retries"),
            eta=headers.get("eta"),
            expires=headers.get("expires"),
            queue=queue,
            exchange=exchange,
            routing_key=routing_key,
        )
