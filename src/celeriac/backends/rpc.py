"""The RPC result backend (edge layer): ``rpc://``, results sent back as messages.

Celery's wire format (wire protocol §7.5). A client names its own reply queue, the app's
``oid``, in the ``reply_to`` of each task it sends; the worker sends every state of the
task there, as a message whose ``correlation_id`` is the task id and whose body is the
result meta. Nothing is stored: only the client that sent the task sees its result, and
it reads each message once, keeping the last state of each task in memory (the latest
``MAX_KEPT`` tasks).

The messages go through the app's broker. On RabbitMQ the reply queue is Celery's
(non-durable, deleted a day after its client stops reading) and is declared when the
client sends its first task, so a real Celery worker can answer a celeriac client and a
celeriac worker a Celery client. On the other brokers it is an ordinary queue of the
broker. A saved group (``GroupResult.save``) is kept by the client that saved it, the
only one that sees its members' results. Chords need counters in a store, so they are
refused, with Celery's message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Iterable
from typing import Any

from celeriac import serialization
from celeriac.backends import accepted_content_types
from celeriac.backends.base import Meta, RefusesChords, ResultTuple
from celeriac.exceptions import DecodeError, TimeoutError
from celeriac.protocol.envelope import Envelope
from celeriac.states import READY_STATES
from celeriac.transports.base import ReplyQueues, Subscription, Transport

logger = logging.getLogger("celeriac.backends.rpc")

NO_CHORDS = (
    'The "rpc" result backend does not support chords! Note that a group chained with a'
    " task is also upgraded to be a chord, as this pattern requires synchronization."
    " Result backends that support chords: Redis, PostgreSQL, SQLite."
)
READ_BATCH = 100
MAX_KEPT = 100_000
"""States kept for tasks nobody asked about yet; past it the oldest are dropped, so a
client that sends tasks and never reads their results does not grow without bound."""


class RPCBackend(RefusesChords):
    """Send results to the calling client's reply queue; read this client's own."""

    chords_refusal = NO_CHORDS

    def __init__(
        self,
        url: str,
        *,
        transport: Transport,
        oid: str,
        serializer: str = "json",
        accept: Collection[str] | None = None,
        expires: float | None = 86400.0,
        persistent: bool | None = False,
        **options: Any,
    ) -> None:
        self.url = url
        self.transport = transport
        self.oid = oid
        self.serializer = serializer
        self.accept = accepted_content_types(serializer, accept)
        self.expires = expires
        self.persistent = bool(persistent)
        self._states: OrderedDict[str, Meta] = OrderedDict()
        self._groups: dict[str, ResultTuple] = {}
        self._lock = threading.Lock()
        # One reader at a time: a subscription is read from one thread.
        self._reading = threading.Lock()
        self._replies: Subscription | None = None
        self._reply_queues = transport if isinstance(transport, ReplyQueues) else None

    # ---- the worker's side -------------------------------------------------------------

    def store(self, task_id: str, meta: Meta) -> None:
        """Send ``meta`` to the reply queue of the task running here (its ``reply_to``)."""
        from celeriac.current import get_current_task

        task = get_current_task()
        reply_to = task.request.reply_to if task is not None else None
        self.store_reply(task_id, meta, reply_to)

    def store_reply(self, task_id: str, meta: Meta, reply_to: str | None) -> None:
        """Send ``meta`` to ``reply_to``; a task sent without one has nobody to tell."""
        if not reply_to:
            logger.debug("No reply_to for task %s: its %s goes nowhere", task_id, meta["status"])
            return
        content_type, content_encoding, body = serialization.dumps(meta, self.serializer)
        envelope = Envelope(
            body,
            content_type,
            content_encoding,
            properties={"correlation_id": task_id, "delivery_mode": 2 if self.persistent else 1},
        )
        if self._reply_queues is not None:
            self._reply_queues.publish_reply(reply_to, envelope)
        else:
            self.transport.publish(reply_to, envelope)

    # ---- the client's side -------------------------------------------------------------

    def ensure_reply_queue(self) -> None:
        """Start reading this client's reply queue; the client calls it before sending."""
        with self._lock:
            if self._replies is None:
                self._replies = self._open_replies()

    def get(self, task_id: str) -> Meta | None:
        """The latest state received for the task, reading what has arrived; None: PENDING."""
        self._read(0.0)
        with self._lock:
            return self._states.get(task_id)

    def get_many(self, task_ids: Iterable[str]) -> dict[str, Meta]:
        """The latest state received for each task that has one."""
        self._read(0.0)
        with self._lock:
            return {
                task_id: self._states[task_id] for task_id in task_ids if task_id in self._states
            }

    def wait(self, task_id: str, timeout: float | None, interval: float) -> Meta:
        """Read replies until the task's ready state arrives.

        Raises:
            TimeoutError: it did not arrive within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                meta = self._states.get(task_id)
            if meta is not None and meta.get("status") in READY_STATES:
                return meta
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"The operation timed out ({timeout} s) waiting for {task_id}")
            self._read(1.0 if remaining is None else min(remaining, 1.0))

    def forget(self, task_id: str) -> None:
        """Drop what this client received for the task."""
        with self._lock:
            self._states.pop(task_id, None)

    def cleanup(self) -> int:
        """Nothing is stored, so nothing expires here; return 0."""
        return 0

    def save_group(self, group_id: str, result: ResultTuple) -> None:
        """Keep a group's result tuple in this client, the only one that sees its results."""
        with self._lock:
            self._groups[group_id] = result

    def restore_group(self, group_id: str) -> ResultTuple | None:
        """Return a group this client saved, or None."""
        with self._lock:
            return self._groups.get(group_id)

    def delete_group(self, group_id: str) -> None:
        """Forget a group this client saved."""
        with self._lock:
            self._groups.pop(group_id, None)

    def close(self) -> None:
        """Stop reading the reply queue."""
        with self._lock:
            replies, self._replies = self._replies, None
        if replies is not None:
            replies.close()

    def _open_replies(self) -> Subscription:
        if self._reply_queues is not None:
            return self._reply_queues.open_replies(self.oid, self.expires)
        return FetchedReplies(self.transport, self.oid)

    def _read(self, timeout: float) -> None:
        """Take the replies that arrived (waiting up to ``timeout`` for the first)."""
        self.ensure_reply_queue()
        with self._lock:
            replies = self._replies
        if replies is None:
            return
        with self._reading:
            envelopes = replies.get(timeout)
        for envelope in envelopes:
            try:
                meta = serialization.loads(
                    envelope.body,
                    envelope.content_type,
                    envelope.content_encoding,
                    accept=self.accept,
                )
            except DecodeError as exc:
                logger.warning("Dropping a reply that cannot be decoded: %s", exc)
                continue
            task_id = envelope.properties.get("correlation_id") or (
                meta.get("task_id") if isinstance(meta, dict) else None
            )
            if isinstance(meta, dict) and task_id:
                with self._lock:
                    self._states[str(task_id)] = meta
                    self._states.move_to_end(str(task_id))
                    while len(self._states) > MAX_KEPT:
                        self._states.popitem(last=False)


class FetchedReplies:
    """A reply queue read as an ordinary queue: fetch, then acknowledge at once."""

    def __init__(self, transport: Transport, queue: str) -> None:
        self.transport = transport
        self.queue = queue

    def get(self, timeout: float) -> list[Envelope]:
        """Take up to a batch of replies, waiting up to ``timeout`` for the first."""
        deliveries = self.transport.fetch([self.queue], READ_BATCH, timeout)
        if deliveries:
            self.transport.ack([delivery.tag for delivery in deliveries])
        return [delivery.envelope for delivery in deliveries]

    def close(self) -> None:
        """Nothing to release: the transport is the app's."""
