"""Consumer: fetch task messages in batches, check them, and hand them to the pool.

Three threads: the fetcher keeps up to ``prefetch_count`` messages held, fetching again
once half of those beyond the pool's slots are gone (so that fetches come in batches);
the dispatcher gives each to the pool when a slot is free; the lease keeper renews the
broker leases of held messages so they never go to another worker while this one is
alive. When a job finishes, the thread that reports it starts the next waiting message
in the slot it frees, so a busy worker hands work over without waking the dispatcher.
Acks, requeues, releases and dead letters are settlements, batched and retried until the
broker takes them (``settlement.py``). Bad input (malformed, disallowed, unknown, redelivered
too often) is rejected with a clear reason, dead-lettered, its task id (when known) gets a
FAILURE stored, and the worker goes on.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from celeriac import signals, states
from celeriac.canvas.chord import report_chord_part
from celeriac.context import Context
from celeriac.exceptions import (
    ContentDisallowed,
    DecodeError,
    InvalidTaskError,
    NotRegistered,
    TaskRevokedError,
)
from celeriac.protocol.envelope import Envelope
from celeriac.protocol.message import parse_task_message, readable_task_id
from celeriac.protocol.result_meta import build_meta
from celeriac.serialization import normalize_accept, serializer_name
from celeriac.transports.base import (
    Delivery,
    Transport,
    TransportError,
    dead_letter_headers,
    dead_letter_queue,
)
from celeriac.worker.batching import Batcher
from celeriac.worker.outcome import OutcomeHandler
from celeriac.worker.pools.base import Pool
from celeriac.worker.rate_limit import RateLimits
from celeriac.worker.request import Request
from celeriac.worker.settlement import Action, Settlement, apply_settlements
from celeriac.worker.state import WorkerState

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.events.dispatcher import EventDispatcher

logger = logging.getLogger("celeriac.worker")

FETCH_TIMEOUT = 0.5
IMPORT_HINT = (
    "Start the worker with -A naming the module that defines the task, or add that module"
    " to -I/--include (the include setting)."
)


class Consumer:
    """Moves messages from the broker to the pool and reports their outcomes.

    When fetching fails, ``reconnect(exc)`` waits for the broker; False means the worker
    is stopping and the fetcher ends.
    """

    def __init__(
        self,
        app: Celeriac,
        transport: Transport,
        pool: Pool,
        state: WorkerState,
        events: EventDispatcher,
        *,
        hostname: str,
        queues: Sequence[str],
        prefetch_count: int,
        reconnect: Callable[[TransportError], bool],
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
    ) -> None:
        self.app = app
        self.reconnect = reconnect
        self.transport = transport
        self.pool = pool
        self.state = state
        self.events = events
        self.hostname = hostname
        self.queues = list(queues)
        self.prefetch_count = max(prefetch_count, pool.limit)
        self.time_limit = time_limit
        self.soft_time_limit = soft_time_limit
        self.accept = normalize_accept(app.conf.accept_content)
        self.max_deliveries = app.conf.task_max_deliveries
        self.max_message_size: int | None = app.conf.worker_max_message_size
        self.settler: Batcher[Settlement] = Batcher(
            lambda batch: apply_settlements(transport, batch),
            max_items=200,
            max_delay=0.0,
            retry_on=(TransportError,),
        )
        self.outcomes = OutcomeHandler(self)
        self.rate_limits = RateLimits(app, transport)
        self._ready: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self._slots = threading.Semaphore(pool.limit)
        # Slots given up by pool_shrink that were busy: each is dropped as its job ends.
        self._slots_owed = 0
        self._slots_lock = threading.Lock()
        self._capacity = threading.Condition()
        self._stopping = threading.Event()
        # Set by a cold shutdown: jobs reported lost from then on were cut off by it.
        self.is_cutting_off = False
        self._threads: list[threading.Thread] = []
        self._dispatcher: threading.Thread | None = None

    # ---- life cycle ----------------------------------------------------------------

    def start(self) -> None:
        """Start fetching, dispatching and lease keeping."""
        self.settler.start()
        for target, name in (
            (self._fetch_loop, "celeriac-fetcher"),
            (self._dispatch_loop, "celeriac-dispatcher"),
            (self._lease_loop, "celeriac-leases"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            if target == self._dispatch_loop:
                self._dispatcher = thread
            thread.start()
            self._threads.append(thread)

    def stop_fetching(self) -> None:
        """Fetch nothing more and give back every message not yet handed to the pool."""
        self._stopping.set()
        with self._capacity:
            self._capacity.notify_all()
        self._ready.put(None)
        for thread in self._threads[:2]:
            thread.join(timeout=5)
        with self.state.lock:
            waiting = list(self.state.reserved.values())
            self.state.reserved.clear()
        if waiting:
            logger.info("Restoring %d unacknowledged message(s)", len(waiting))
            for request in waiting:
                self.settle(request, Action.RELEASE)

    def begin_cold_shutdown(self) -> None:
        """Take nothing more from the broker, and treat jobs reported lost from now on as
        cut off by the shutdown (their messages given back or their failure explained).

        Called before the pool is stopped, so a message given back is not fetched again.
        """
        self.is_cutting_off = True
        self._stopping.set()
        with self._capacity:
            self._capacity.notify_all()

    def close(self) -> None:
        """Give back what the pool left unacknowledged, then flush every settlement.

        Called after the pool stopped; the lease keeper stops with the fetcher.
        """
        with self.state.lock:
            unacked = [
                request for request in self.state.active.values() if not request.acknowledged
            ]
        for request in unacked:
            self.settle(request, Action.RELEASE)
        self.settler.stop()

    # ---- fetching ------------------------------------------------------------------

    def _fetch_loop(self) -> None:
        # Revokes recorded in the broker are read before the first fetch and after each
        # reconnect: broadcasts sent while this worker was not listening never reached it.
        has_revokes = False
        while not self._stopping.is_set():
            with self._capacity:
                while not self._wants_more() and not self._stopping.is_set():
                    self._capacity.wait(FETCH_TIMEOUT)
            if self._stopping.is_set():
                return
            wanted = self.prefetch_count - self.state.held()
            if not has_revokes:
                self._load_revokes()
                has_revokes = True
            try:
                deliveries = self.transport.fetch(self.queues, wanted, FETCH_TIMEOUT)
            except TransportError as exc:
                if not self.reconnect(exc):
                    return
                has_revokes = False
                continue
            received = []
            for delivery in deliveries:
                if self._stopping.is_set():
                    self.settler.add(Settlement(Action.RELEASE, delivery.tag))
                    continue
                try:
                    request = self._receive(delivery)
                except Exception as exc:
                    # The per-message boundary: no input may stop the fetcher.
                    logger.exception("Receiving message %s failed", delivery.tag)
                    self.reject_malformed(delivery, exc)
                    continue
                if request is not None:
                    received.append(request)
            self._admit(received)

    def _load_revokes(self) -> None:
        """Merge the revokes recorded in the broker; a failure is logged, never fatal.

        A broker that cannot give them (a RabbitMQ without streams, a read that timed out)
        must not stop the worker from consuming: it then skips only the revokes it hears.
        A lost connection shows again at the fetch, whose reconnect reads them anew.
        """
        try:
            self.state.merge_revokes(self.transport.read_revokes())
        except TransportError as exc:
            logger.warning("Could not read the revokes recorded in the broker: %s", exc)

    def _wants_more(self) -> bool:
        """Tell whether to fetch: held messages are down to the pool's slots plus half the rest."""
        held = self.state.held()
        refill_level = max(self.pool.limit, self.prefetch_count // 2)
        return held < self.prefetch_count and held <= refill_level

    def _receive(self, delivery: Delivery) -> Request | None:
        """Check one delivery in the main process (only headers are read here); return its
        request if it may run now, None if it was dealt with (rejected, dropped, deferred).
        """
        self.app.clock.forward()
        size = len(delivery.envelope.body)
        if self.max_message_size is not None and size > self.max_message_size:
            # Refused before the body is decompressed or deserialized.
            reason = f"body of {size} bytes exceeds worker_max_message_size={self.max_message_size}"
            self.reject_malformed(delivery, InvalidTaskError(reason))
            return None
        try:
            message = parse_task_message(
                delivery.envelope, accept=self.accept, max_size=self.max_message_size
            )
        except (DecodeError, InvalidTaskError) as exc:
            self.reject_malformed(delivery, exc)
            return None
        request = Request(delivery, message, self.hostname)
        if message.content_type not in self.accept:
            self.reject_malformed(delivery, self._disallowed(message.content_type), request=request)
            return None
        if self.max_deliveries and delivery.delivery_count > self.max_deliveries:
            reason = (
                f"delivered {delivery.delivery_count} times, more than "
                f"task_max_deliveries={self.max_deliveries}"
            )
            self.reject_malformed(delivery, InvalidTaskError(reason), request=request)
            return None
        if request.name not in self.app.tasks:
            self._unknown(request)
            return None
        if self.state.is_revoked(request.id) or request.is_expired():
            self.discard_revoked(request, expired=not self.state.is_revoked(request.id))
            return None
        if request.eta_in_future():
            eta = request.message.eta
            assert eta is not None
            self._defer(request, eta.timestamp())
            return None
        return request

    def _admit(self, requests: list[Request]) -> None:
        """Hold the requests of one fetch for the pool, each rate-limited one once its start
        slot has come (the slots of the batch are booked together); defer the others."""
        for request, deferral in zip(requests, self.rate_limits.deferrals(requests), strict=True):
            if deferral is not None:
                self._defer(request, deferral.until, deferral.headers)
            else:
                self._hold(request)

    def _hold(self, request: Request) -> None:
        """Reserve a request for the pool and announce it (``task_received``, an event)."""
        self.state.reserve(request)
        if logger.isEnabledFor(logging.INFO):
            logger.info("Task %s[%s] received", request.display_name, request.id)
        signals.task_received.send(sender=self, request=request)
        if self._sends_task_events():
            self._send_task_event("task-received", request, **self._received_fields(request))
        self._ready.put(request)

    def _received_fields(self, request: Request) -> dict[str, Any]:
        message = request.message
        return {
            "name": request.display_name,
            "args": message.argsrepr,
            "kwargs": message.kwargsrepr,
            "root_id": message.root_id,
            "parent_id": message.parent_id,
            "retries": message.retries,
            "eta": message.headers.get("eta"),
            "expires": message.headers.get("expires"),
        }

    def _disallowed(self, content_type: str) -> ContentDisallowed:
        """The refusal of a content type outside ``accept_content``, saying how to allow it."""
        name = serializer_name(content_type)
        label = f"{name} ({content_type})" if name else content_type
        accepted = ", ".join(sorted(serializer_name(item) or item for item in self.accept))
        return ContentDisallowed(
            f"Refusing to deserialize untrusted content of type {label}: add"
            f" {name or content_type!r} to the worker's accept_content to run it, or send"
            f" the task with a serializer the worker accepts ({accepted})"
        )

    def reject_malformed(
        self, delivery: Delivery, exc: Exception, request: Request | None = None
    ) -> None:
        """Dead-letter a message that cannot run, with the reason; send ``task_rejected``.

        With a ``request`` (the headers could be read) the log line names the task, and
        its task gets FAILURE stored with the reason, so a caller waiting on the result
        hears of it at once; without one, so does a task id still readable.
        """
        reason = f"{type(exc).__name__}: {exc}"
        dead_letters = dead_letter_queue(delivery.queue)
        if request is None:
            logger.error(
                "Rejecting message %s from %r: %s. It has been dead-lettered to %r.",
                delivery.tag,
                delivery.queue,
                reason,
                dead_letters,
            )
        else:
            logger.error(
                "Rejecting task %s[%s]: %s. The message has been dead-lettered to %r.",
                request.name,
                request.id,
                reason,
                dead_letters,
            )
        self.settler.add(Settlement(Action.DEAD_LETTER, delivery.tag, reason=reason))
        signals.task_rejected.send(sender=self, message=delivery.envelope, exc=exc)
        if request is not None:
            request.acknowledged = True
            self.store_outcome(request, states.FAILURE, exc)
            self._send_task_event("task-rejected", request, requeue=False)
        elif (task_id := readable_task_id(delivery.envelope)) is not None:
            meta = build_meta(task_id, states.FAILURE, exc)
            self._quietly(self._store, meta, delivery.envelope)

    def settle(
        self, request: Request, action: Action, *, reason: str = "", delay: float = 0.0
    ) -> None:
        """Settle a request's message (batched, retried until the broker takes it)."""
        request.acknowledged = True
        self.settler.add(Settlement(action, request.tag, reason=reason, delay=delay))

    def dead_letter_envelope(self, request: Request, reason: str) -> None:
        """Put an already-acknowledged message on the dead-letter queue with ``reason``."""
        delivery = request.delivery
        headers = dead_letter_headers(
            delivery.envelope.headers, delivery.queue, reason, delivery.delivery_count
        )
        envelope = dataclasses.replace(delivery.envelope, headers=headers)
        self._quietly(self.transport.publish, dead_letter_queue(delivery.queue), envelope)

    def _unknown(self, request: Request) -> None:
        exc = NotRegistered(
            f"Task of kind {request.name!r} never registered, please make sure it's imported."
            f" {IMPORT_HINT}"
        )
        logger.error(
            "Received unregistered task of type %r (id %s). The message has been dead-lettered"
            " to %r. Did you remember to import the module containing this task? %s",
            request.name,
            request.id,
            dead_letter_queue(request.delivery.queue),
            IMPORT_HINT,
        )
        signals.task_unknown.send(
            sender=self,
            name=request.name,
            id=request.id,
            message=request.delivery.envelope,
            exc=exc,
        )
        self.store_outcome(request, states.FAILURE, exc)
        self.settle(request, Action.DEAD_LETTER, reason=f"NotRegistered: {request.name}")
        self._send_task_event("task-failed", request, exception=repr(exc), traceback=None)

    def discard_revoked(
        self,
        request: Request,
        *,
        expired: bool,
        terminated: bool = False,
        signum: int | None = None,
    ) -> None:
        """Drop a revoked or expired message: store REVOKED, send ``task_revoked``."""
        reason = "expired" if expired else "terminated" if terminated else "revoked"
        logger.info("Discarding %s task %s[%s]", reason, request.name, request.id)
        self.store_outcome(request, states.REVOKED, TaskRevokedError(reason))
        if not request.acknowledged:
            self.ack(request)
        task = self.app.tasks.get(request.name)
        signals.task_revoked.send(
            sender=task, request=request, terminated=terminated, signum=signum, expired=expired
        )
        self._send_task_event(
            "task-revoked", request, terminated=terminated, signum=signum, expired=expired
        )

    def _defer(self, request: Request, until: float, headers: dict[str, Any] | None = None) -> None:
        """Put a message back in the broker until the Unix time ``until``: never hold it.

        ``headers`` are added to the copy that goes back.
        """
        envelope = request.message_envelope()
        if headers:
            envelope = dataclasses.replace(envelope, headers={**envelope.headers, **headers})
        priority = envelope.properties.get("priority") or 0
        try:
            self.transport.publish(request.delivery.queue, envelope, priority=priority, eta=until)
        except Exception:
            logger.exception("Could not put task %s back until later; requeued", request.id)
            self.settle(request, Action.REQUEUE)
            return
        self.ack(request)

    # ---- dispatching ---------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        while True:
            self._slots.acquire()
            request = self._ready.get()
            if request is None or self._stopping.is_set():
                self._slots.release()
                return
            if request.tag not in self.state.reserved:
                self._slots.release()
                continue
            self._start(request)

    def _start(self, request: Request) -> None:
        if self.state.is_revoked(request.id):
            self.state.finish(request)
            self.discard_revoked(request, expired=False)
            self._slots.release()
            return
        task = self.app.tasks[request.name]
        request.time_start = datetime.datetime.now(datetime.UTC).timestamp()
        self.state.activate(request)
        if not task.option("acks_late"):
            self.ack(request)
        job = request.as_job(
            task.time_limit or self.time_limit, task.soft_time_limit or self.soft_time_limit
        )
        self._send_task_event("task-started", request)
        self.pool.apply(job, lambda outcome: self.outcomes.handle(request, outcome))

    def slot_freed(self) -> None:
        """A job finished: start the next waiting request in its slot, or free the slot.

        The fetcher is woken once it should fetch again (see ``_wants_more``).
        """
        with self._slots_lock:
            is_owed = self._slots_owed > 0
            if is_owed:
                self._slots_owed -= 1
        request = None if is_owed else self._next_ready()
        if request is not None:
            self._start(request)
        elif not is_owed:
            self._slots.release()
        with self._capacity:
            if self._wants_more():
                self._capacity.notify_all()

    def add_slots(self, n: int) -> None:
        """The pool grew by ``n``: hand out ``n`` more slots (first paying slots owed)."""
        with self._slots_lock:
            paid = min(n, self._slots_owed)
            self._slots_owed -= paid
        for _ in range(n - paid):
            self._slots.release()

    def remove_slots(self, n: int) -> None:
        """The pool shrank by ``n``: take free slots now, and busy ones as their jobs end."""
        with self._slots_lock:
            for _ in range(n):
                if not self._slots.acquire(blocking=False):
                    self._slots_owed += 1

    def add_queue(self, queue: str) -> bool:
        """Consume from ``queue`` too, from the next fetch on; False if it already is."""
        if queue in self.queues:
            return False
        # A new list, not an append: the fetcher reads the attribute without a lock.
        self.queues = [*self.queues, queue]
        return True

    def cancel_queue(self, queue: str) -> bool:
        """Stop consuming from ``queue``; False if it was not consumed."""
        if queue not in self.queues:
            return False
        self.queues = [name for name in self.queues if name != queue]
        self._quietly(self.transport.stop_consuming, [queue])
        return True

    def _next_ready(self) -> Request | None:
        """Take a waiting request without blocking; None when there is none or while stopping.

        The dispatcher's own thread takes none here: a solo pool runs jobs inline on it,
        and chaining them through this call would nest one call per job.
        """
        if self._stopping.is_set() or threading.current_thread() is self._dispatcher:
            return None
        while True:
            try:
                request = self._ready.get_nowait()
            except queue.Empty:
                return None
            if request is None:
                self._ready.put(None)
                return None
            if request.tag in self.state.reserved:
                return request

    # ---- broker helpers --------------------------------------------------------------

    def ack(self, request: Request) -> None:
        """Acknowledge a request's message (batched)."""
        self.settle(request, Action.ACK)

    def _lease_loop(self) -> None:
        """Renew the leases of held messages, and of those whose settlement waits to land."""
        interval = min(float(getattr(self.transport, "lease_seconds", 30.0)) / 3, 10.0)
        while not self._stopping.wait(interval):
            with self.state.lock:
                held = [request.tag for request in self.state.reserved.values()]
                held += [r.tag for r in self.state.active.values() if not r.acknowledged]
            held += [settlement.tag for settlement in self.settler.pending()]
            if held:
                self._quietly(self.transport.extend_lease, held)

    def store_outcome(self, request: Request, state: str, exc: BaseException) -> None:
        """Store an outcome decided here, not by the task, and tell the task's chord of it."""
        self._quietly(self._store, build_meta(request.id, state, exc), request.delivery.envelope)
        if request.message.group is not None:
            self._quietly(self._report_chord_part, request, state, exc)

    def _store(self, meta: dict[str, Any], envelope: Envelope) -> None:
        reply_to = envelope.properties.get("reply_to")
        self.app.store_meta(meta, reply_to=reply_to if isinstance(reply_to, str) else None)

    def _report_chord_part(self, request: Request, state: str, exc: BaseException) -> None:
        _, _, embed = request.message.decode_body(
            self.app.conf.accept_content, max_size=self.max_message_size
        )
        context = Context(
            id=request.id,
            group=request.message.group,
            group_index=request.message.group_index,
            root_id=request.message.root_id,
            chord=embed.get("chord"),
        )
        report_chord_part(self.app, context, state, exc)

    def _quietly(self, function: Any, *args: Any) -> None:
        try:
            function(*args)
        except Exception:
            logger.exception("%s failed", getattr(function, "__name__", function))

    def _sends_task_events(self) -> bool:
        """Tell whether task events go out (the dispatcher may send only worker events)."""
        events = self.events
        return events.enabled and (not events.groups or "task" in events.groups)

    def _send_task_event(self, type_: str, request: Request, **fields: Any) -> None:
        if not self._sends_task_events():
            return
        try:
            self.events.send(type_, uuid=request.id, **fields)
        except Exception:
            logger.exception("Sending the %s event of %s failed", type_, request.id)
