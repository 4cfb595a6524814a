"""One RabbitMQ connection and the I/O thread that alone touches it (edge layer).

py-amqp is not thread-safe, and the Transport is called from several threads at once (the
worker fetches in one and acknowledges in others). So each connection has one thread
that owns its socket: other threads hand it operations with :meth:`Session.call` and wait
for the result, and between operations it reads the socket, which keeps deliveries,
publisher confirms and heartbeats flowing while nobody calls. A call costs two thread
switches; blocking on the socket and waking on a command go through one ``select``.

Three channels: ``consume`` carries the consumers and their acks, ``publish`` is in
confirm mode, and ``declare`` runs passive declarations, which close it when the entity
is missing (404), so it is reopened as needed without disturbing the other two.

Deliveries wait in ``ready`` until a fetch takes them; every unacknowledged delivery
is in ``held`` by its AMQP delivery tag, oldest first. Both, and the subscription inboxes,
are guarded by the lock of the ``changed`` condition, which is notified on every task
delivery and on failure; ``broadcast`` shares that lock and is notified on every message
to a subscription and on failure, so a worker's pidbox thread does not wake for each task
and its fetcher does not wake for each event. Acks of the oldest deliveries go as one
``multiple`` ack. Other threads may read ``consumers`` and ``prefetch_count`` to skip a
call when there is no consumer to start.
When the connection fails the session is over for good: waiters get the TransportError and
the transport opens a new session on its next call. The broker requeues what was held.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import select
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import amqp

from celeriac.protocol.envelope import Envelope
from celeriac.transports import redact_url
from celeriac.transports.amqp_connection import ConnectionSettings, open_connection
from celeriac.transports.amqp_message import Received, from_amqp
from celeriac.transports.amqp_topology import Binding, ExchangeSpec, QueueSpec
from celeriac.transports.base import TransportError

__all__ = ["Held", "Session", "ack_frames"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
CONNECTION_ERRORS = (OSError, amqp.exceptions.ConnectionError)
# How long the I/O thread sleeps at most, so heartbeats are sent and checked in time.
MAX_IDLE = 1.0


@dataclass(slots=True)
class Held:
    """An unacknowledged delivery: what ``release`` and ``dead_letter`` need of it."""

    queue: str
    delivery_tag: int
    received: Received
    order: int


@dataclass(slots=True)
class _Batch:
    """Messages published together whose confirms one caller waits for."""

    remaining: int
    future: Future[None] = field(default_factory=Future)
    nacked: bool = False

    def settle(self, nacked: bool) -> None:
        self.nacked = self.nacked or nacked
        self.remaining -= 1
        if self.remaining == 0:
            if self.nacked:
                self.future.set_exception(TransportError("the broker refused a message (nack)"))
            else:
                self.future.set_result(None)


def ack_frames(tags: list[int], oldest_held: int | None) -> list[tuple[int, bool]]:
    """The ``basic_ack`` frames, ``(delivery_tag, multiple)``, that ack the sorted ``tags``.

    One ``multiple`` ack covers every unacknowledged delivery up to its tag, so it may
    only stand for the tags below ``oldest_held``, the oldest delivery that stays held;
    the rest are acked one by one.
    """
    below = tags if oldest_held is None else [tag for tag in tags if tag < oldest_held]
    frames = [(below[-1], True)] if len(below) > 1 else [(tag, False) for tag in below]
    return frames + [(tag, False) for tag in tags[len(below) :]]


class Session:
    """A live connection with its I/O thread; built by connecting, ended by failure or close.

    Every attribute not named in the module docstring belongs to the I/O thread.
    """

    def __init__(self, settings: ConnectionSettings, generation: int) -> None:
        self.settings = settings
        self.generation = generation
        self.pid = os.getpid()
        guard = threading.RLock()
        self.changed = threading.Condition(guard)
        self.broadcast = threading.Condition(guard)
        self.ready: list[Held] = []
        self.held: dict[int, Held] = {}
        self.inboxes: dict[str, list[Envelope]] = {}
        self.failure: TransportError | None = None
        self.consumers: dict[str, str] = {}
        self.declared: set[str] = set()
        self.prefetch_count = 0
        self._order = itertools.count()
        self._commands: deque[tuple[Callable[[Session], Any], Future[Any]]] = deque()
        self._commands_lock = threading.Lock()
        self._unconfirmed: dict[int, _Batch | None] = {}
        self._next_publish = 1
        self._stopping = False
        self._connection = open_connection(settings)
        try:
            self._consume = self._connection.channel()
            self._publish = self._connection.channel()
            self._publish.confirm_select()
            self._publish.events["basic_ack"].add(self._on_ack)
            self._publish.events["basic_nack"].add(self._on_nack)
            self._declare: Any = None
            self._wake_reader, self._wake_writer = socket.socketpair()
        except BaseException:
            self._connection.collect()
            raise
        self._wake_reader.setblocking(False)
        self._thread = threading.Thread(
            target=self._run, name=f"celeriac-amqp-{generation}", daemon=True
        )
        self._thread.start()

    @property
    def is_alive(self) -> bool:
        """True until the connection failed or was closed."""
        return self.failure is None

    # ---- called from any thread ------------------------------------------------------

    def call(self, operation: Callable[[Session], T]) -> T:
        """Run ``operation(self)`` on the I/O thread and return its result.

        Raises:
            TransportError: the session failed before or while running it.
        """
        future: Future[T] = Future()
        with self._commands_lock:
            if self.failure is not None:
                raise self.failure
            self._commands.append((operation, future))
        self._wake()
        try:
            return future.result(timeout=self.settings.operation_timeout)
        except TimeoutError as exc:
            self._fail_from_outside("no answer from the I/O thread")
            raise self._failure_or(exc) from exc

    def wait_confirmed(self, future: Future[None]) -> None:
        """Wait for the confirms of a batch from :meth:`publish`."""
        try:
            future.result(timeout=self.settings.confirm_timeout)
        except TimeoutError as exc:
            raise TransportError(
                f"RabbitMQ broker {redact_url(self.settings.url)} did not confirm within"
                f" confirm_timeout={self.settings.confirm_timeout} s"
            ) from exc

    def close(self) -> None:
        """Close the connection and stop the I/O thread; pending calls fail."""
        with self._commands_lock:
            self._stopping = True
        self._wake()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=self.settings.operation_timeout)

    # ---- run on the I/O thread (through call) -----------------------------------------

    def declare_queue(self, spec: QueueSpec) -> int:
        """Make sure queue ``spec.name`` exists, as it is or as ``spec`` says; return its size.

        Passive first: a queue someone else declared (Celery, with other arguments) is used
        as it is, where declaring it with ours would fail with 406 and close the channel.
        An exclusive queue is ours alone and is created at once.
        """
        count = None if spec.exclusive else self.queue_size(spec.name)
        if count is not None:
            self.declared.add("queue:" + spec.name)
            return count
        try:
            _, count, _ = self._declarer().queue_declare(
                spec.name,
                durable=spec.durable,
                exclusive=spec.exclusive,
                auto_delete=spec.auto_delete,
                arguments=spec.arguments or None,
            )
        except amqp.exceptions.PreconditionFailed:
            # Declared in between by someone with other arguments: theirs stand.
            self._declare = None
            count = self.queue_size(spec.name)
            if count is None:
                raise
        self.declared.add("queue:" + spec.name)
        return int(count)

    def declare_exchange(self, spec: ExchangeSpec) -> None:
        """Make sure exchange ``spec.name`` exists, as it is or as ``spec`` says."""
        try:
            self._declarer().exchange_declare(spec.name, spec.type, passive=True)
        except amqp.exceptions.NotFound:
            self._declare = None
            try:
                self._declarer().exchange_declare(
                    spec.name, spec.type, durable=spec.durable, auto_delete=False
                )
            except amqp.exceptions.PreconditionFailed:
                self._declare = None
                self._declarer().exchange_declare(spec.name, spec.type, passive=True)
        self.declared.add("exchange:" + spec.name)

    def bind(self, binding: Binding) -> None:
        """Bind a queue or an exchange; binding twice is harmless."""
        if binding.to_queue:
            self._declarer().queue_bind(binding.destination, binding.source, binding.routing_key)
        else:
            self._declarer().exchange_bind(binding.destination, binding.source, binding.routing_key)

    def queue_size(self, queue: str) -> int | None:
        """Count the ready messages of ``queue``; None if it does not exist."""
        try:
            _, count, _ = self._declarer().queue_declare(queue, passive=True)
        except amqp.exceptions.NotFound:
            self._declare = None
            self.declared.discard("queue:" + queue)
            return None
        return int(count)

    def purge(self, queue: str) -> int:
        """Delete the ready messages of ``queue``; return how many."""
        return int(self._declarer().queue_purge(queue) or 0)

    def publish(
        self, messages: list[tuple[str, str, Any]], *, confirm: bool = True
    ) -> Future[None]:
        """Publish ``(exchange, routing_key, message)`` triples; the future settles on confirms.

        Without ``confirm`` the future is already settled: the broker confirms anyway
        (the channel is in confirm mode), but nobody waits for it.
        """
        batch = _Batch(len(messages)) if confirm and messages else None
        for exchange, routing_key, message in messages:
            self._publish.basic_publish(message, exchange, routing_key)
            self._unconfirmed[self._next_publish] = batch
            self._next_publish += 1
        if batch is None:
            done: Future[None] = Future()
            done.set_result(None)
            return done
        return batch.future

    def consume(self, queue: str) -> None:
        """Start a consumer on ``queue`` whose deliveries go to ``ready``."""
        if queue in self.consumers:
            return
        self.consumers[queue] = self._consume.basic_consume(
            queue,
            callback=lambda message: self._on_delivery(queue, message),
            on_cancel=lambda tag: self._on_cancel(queue),
        )

    def cancel_consumers(self, queues: Iterable[str] | None = None) -> None:
        """Stop the consumers of task ``queues`` (None: all); what they delivered stays held."""
        for queue in list(self.consumers) if queues is None else queues:
            tag = self.consumers.pop(queue, None)
            if tag is not None:
                self._consume.basic_cancel(tag)

    def subscribe(self, queue: str) -> str:
        """Start an auto-ack consumer on ``queue`` whose messages go to an inbox; return its tag."""
        inbox: list[Envelope] = []

        def deliver(message: Any) -> None:
            with self.broadcast:
                inbox.append(from_amqp(message).envelope)
                self.broadcast.notify_all()

        tag: str = self._consume.basic_consume(queue, no_ack=True, callback=deliver)
        with self.changed:
            self.inboxes[tag] = inbox
        return tag

    def unsubscribe(self, tag: str, queue: str) -> None:
        """Stop a subscription's consumer and delete its queue."""
        with self.changed:
            self.inboxes.pop(tag, None)
        self._consume.basic_cancel(tag)
        self._declarer().queue_delete(queue)

    def set_prefetch(self, count: int) -> None:
        """Set the consumer prefetch (per consumer, as quorum queues require) once."""
        if not self.prefetch_count:
            self._consume.basic_qos(0, count, False)
            self.prefetch_count = count

    def settle(self, delivery_tags: list[int], action: str) -> None:
        """``ack``, ``requeue`` or ``drop`` deliveries this session still holds.

        Tags no longer held (acked already, or of messages given back) are skipped: an
        unknown delivery tag is a channel error on RabbitMQ.
        """
        with self.changed:
            present = sorted(tag for tag in delivery_tags if self.held.pop(tag, None) is not None)
            if self.ready and present:
                settled = set(present)
                self.ready[:] = [held for held in self.ready if held.delivery_tag not in settled]
            oldest_held = next(iter(self.held), None)
        if action != "ack":
            for tag in present:
                self._consume.basic_reject(tag, requeue=action == "requeue")
            return
        for tag, multiple in ack_frames(present, oldest_held):
            self._consume.basic_ack(tag, multiple=multiple)

    # ---- the I/O thread --------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._run_commands():
                self._drain()
                self._connection.heartbeat_tick()
                with self._commands_lock:
                    if self._commands or self._stopping:
                        continue
                readable, _, _ = select.select(
                    [self._connection.sock, self._wake_reader], [], [], self._idle()
                )
                if self._wake_reader in readable:
                    with contextlib.suppress(BlockingIOError):
                        self._wake_reader.recv(4096)
        except BaseException as exc:  # any end of the loop ends the session
            self._fail(exc)
        else:
            self._fail(None)

    def _run_commands(self) -> bool:
        """Run the queued operations; False once the session is to stop."""
        while True:
            with self._commands_lock:
                if self._stopping:
                    return False
                if not self._commands:
                    return True
                operation, future = self._commands.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = operation(self)
            except amqp.exceptions.ChannelError as exc:
                future.set_exception(self._error(exc))
                self._declare = None
                self._check_channels()
            except CONNECTION_ERRORS as exc:
                future.set_exception(self._error(exc))
                raise
            except BaseException as exc:  # the caller gets it
                future.set_exception(exc)
            else:
                future.set_result(result)

    def _drain(self) -> None:
        """Handle every frame that has arrived, without blocking."""
        while True:
            try:
                self._connection.drain_events(timeout=0)
            except TimeoutError:
                return

    def _idle(self) -> float:
        heartbeat = self._connection.heartbeat or 0
        return min(MAX_IDLE, heartbeat / 4) if heartbeat else MAX_IDLE

    def _check_channels(self) -> None:
        """A closed consume or publish channel ends the session (its deliveries are void)."""
        for channel in (self._consume, self._publish):
            if not channel.is_open:
                raise amqp.exceptions.ChannelNotOpen("a channel of the session was closed")

    def _declarer(self) -> Any:
        if self._declare is None or not self._declare.is_open:
            self._declare = self._connection.channel()
        return self._declare

    def _on_delivery(self, queue: str, message: Any) -> None:
        delivery_tag = int(message.delivery_info["delivery_tag"])
        held = Held(queue, delivery_tag, from_amqp(message), next(self._order))
        with self.changed:
            self.held[delivery_tag] = held
            self.ready.append(held)
            self.changed.notify_all()

    def _on_cancel(self, queue: str) -> None:
        """The broker cancelled a consumer (its queue was deleted): declare it again on use."""
        logger.warning("RabbitMQ cancelled the consumer of queue %r", queue)
        self.consumers.pop(queue, None)
        self.declared.discard("queue:" + queue)
        self.declared.discard("task:" + queue)
        self.declared.discard("delay:" + queue)

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._confirm(delivery_tag, multiple, nacked=False)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._confirm(delivery_tag, multiple, nacked=True)

    def _confirm(self, delivery_tag: int, multiple: bool, *, nacked: bool) -> None:
        if multiple:
            numbers = list(itertools.takewhile(lambda n: n <= delivery_tag, self._unconfirmed))
        else:
            numbers = [delivery_tag]
        for number in numbers:
            batch = self._unconfirmed.pop(number, None)
            if batch is not None:
                batch.settle(nacked)

    def _fail(self, exc: BaseException | None) -> None:
        """End the session: fail waiters and pending calls, close the socket."""
        failure = self._error(exc) if exc is not None else self._closed_error()
        if exc is not None:
            logger.warning("%s", failure)
        with self._commands_lock:
            self.failure = failure
            pending = list(self._commands)
            self._commands.clear()
        for _, future in pending:
            if future.set_running_or_notify_cancel():
                future.set_exception(failure)
        for batch in {id(batch): batch for batch in self._unconfirmed.values() if batch}.values():
            if not batch.future.done():
                batch.future.set_exception(failure)
        self._unconfirmed.clear()
        with self.changed:
            self.ready.clear()
            self.held.clear()
            self.changed.notify_all()
            self.broadcast.notify_all()
        with contextlib.suppress(*CONNECTION_ERRORS, AttributeError):
            if exc is None:
                self._connection.close()
            self._connection.collect()
        self._wake_reader.close()
        self._wake_writer.close()

    def _fail_from_outside(self, reason: str) -> None:
        with self._commands_lock:
            if self.failure is None:
                self._stopping = True
        self._wake()
        logger.warning("RabbitMQ broker %s: %s", redact_url(self.settings.url), reason)

    def _failure_or(self, exc: BaseException) -> TransportError:
        return self.failure or self._error(exc)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")

    def _error(self, exc: BaseException) -> TransportError:
        return TransportError(f"RabbitMQ broker {redact_url(self.settings.url)}: {exc!r}")

    def _closed_error(self) -> TransportError:
        return TransportError(f"RabbitMQ broker {redact_url(self.settings.url)}: connection closed")
