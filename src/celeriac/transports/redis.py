"""The Redis broker: Redis Streams with one consumer group per queue (edge layer).

A queue is ten streams, one per priority, read by the consumer group ``celeriac``
(``redis_keys.py`` lists every key). Publishing is one XADD; a message with an eta waits
in the queue's delayed sorted set until a fetch moves it to its stream. Fetching is one
Lua script (``redis_scripts/fetch.lua``) that renews this consumer's heartbeat, moves due
delayed messages, takes over the entries of consumers whose heartbeat ran out, and reads
new entries highest priority first; when it finds nothing, a blocking XREADGROUP waits
for the next publish. Acks, requeues and releases are one script call per queue.

Leases: each consumer has a heartbeat per queue, a deadline in the queue's consumers
sorted set that every fetch and ``extend_lease`` renews. Entries of a consumer whose
deadline has passed are claimed (XCLAIM of that consumer's entries, found with XPENDING)
by the next fetch of another consumer; a live consumer's entries are never taken, however
long its task runs. A sorted set of deadlines rather than one expiring key per consumer
lets a fetch find the overdue consumers with one range query instead of listing the group;
XCLAIM by owner rather than XAUTOCLAIM because XAUTOCLAIM picks entries by idle time, which
would take a live consumer's long task.

Every script touches the keys of one queue (one Cluster hash slot), except ``fetch.lua``
(several queues, read together for priority across them in one round trip) and
``rate_slots.lua`` (start slots by the server's clock, in keys of a hash tag of their own);
the blocking read over several queues is likewise multi-key: standalone Redis and Sentinel.

Key names and tags are in ``redis_keys.py``, URL schemes and connection options in
``redis_connection.py``, so that this module holds only the transport's behaviour.

Thread-safe: redis-py's connection pool gives each concurrent call its own connection;
the transport's own state is caches that only grow. Fork-safe: the pool reconnects in a
child, and the consumer name includes the process id.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script

from celeriac.exceptions import DecodeError
from celeriac.protocol.envelope import Envelope
from celeriac.transports import redact_url
from celeriac.transports.base import (
    Delivery,
    OutgoingMessage,
    StartBooking,
    TransportError,
    clamp_priority,
    dead_letter_queue,
    mark_dead_letter,
)
from celeriac.transports.redis_connection import (
    DEFAULT_SOCKET_TIMEOUT,
    broker_errors,
    connect_client,
    master_moves,
)
from celeriac.transports.redis_keys import (
    PRIORITY_ORDER,
    QueueKeys,
    Tag,
    channel_key,
    check_prefix,
    queue_keys,
    revokes_key,
)
from celeriac.transports.redis_rate_slots import book_starts
from celeriac.transports.redis_revokes import read_revokes, record_revokes
from celeriac.transports.redis_subscription import RedisSubscription

__all__ = ["RedisTransport"]

logger = logging.getLogger(__name__)

GROUP = "celeriac"
SCRIPT_NAMES = (
    "fetch",
    "settle",
    "dead_letter",
    "release_owner",
    "purge",
    "queue_size",
    "heartbeat",
    "rate_slots",
)
FETCH_RESULT_FIELDS = 6


@functools.cache
def _script_source(name: str) -> str:
    """Read a Lua script shipped in ``redis_scripts/``."""
    path = resources.files("celeriac.transports").joinpath(f"redis_scripts/{name}.lua")
    return path.read_text(encoding="utf-8")


class RedisTransport:
    """A connection to a Redis broker; see the module docstring for the data layout.

    URLs: ``redis://``, ``rediss://`` (TLS), ``redis+socket:///path.sock`` and
    ``sentinel://host:port[;sentinel://host:port...]`` with the ``master_name`` option.
    A consumer that stops renewing its heartbeat for ``lease_seconds`` (Celery's
    ``visibility_timeout`` is accepted as another name for it) loses its messages to
    other consumers. ``global_keyprefix`` starts every key and channel name. The
    connection options are in ``redis_connection.py``; options meant for other brokers
    are ignored.
    """

    def __init__(
        self,
        url: str,
        *,
        lease_seconds: float | None = None,
        visibility_timeout: float | None = None,
        global_keyprefix: str = "",
        **options: Any,
    ) -> None:
        self.url = url
        self.lease_seconds = float(lease_seconds or visibility_timeout or 30.0)
        self._lease_ms = max(1, round(self.lease_seconds * 1000))
        self._prefix = check_prefix(global_keyprefix)
        self._client = connect_client(url, options)
        socket_timeout = options.get("socket_timeout", DEFAULT_SOCKET_TIMEOUT)
        # A blocking read must end well before the socket timeout, and before the
        # heartbeat it renewed runs out, or another consumer could claim what it got.
        self._max_block = min(
            self.lease_seconds / 2, float(socket_timeout) / 2 if socket_timeout else 5.0
        )
        self._scripts: dict[str, Script] = {
            name: self._client.register_script(_script_source(name)) for name in SCRIPT_NAMES
        }
        self._token = f"{socket.gethostname()}:{uuid.uuid4().hex[:12]}"
        self._keys: dict[str, QueueKeys] = {}
        self._ready_queues: set[str] = set()
        self._rotation = itertools.count()
        self._subscriptions: set[RedisSubscription] = set()
        self._closed = False
        # Entries handed to the worker and not settled yet, and whether a fetch failed
        # since the last look for entries whose fetch reply was lost (see ``_orphans``).
        self._handed_out: set[tuple[str, int, str]] = set()
        self._handed_lock = threading.Lock()
        self._may_have_orphans = False
        self._master_moves = 0

    @property
    def consumer_id(self) -> str:
        """Name this consumer in the groups; a forked child gets a name of its own."""
        return f"{self._token}:{os.getpid()}"

    def publish(
        self, queue: str, envelope: Envelope, *, priority: int = 0, eta: float | None = None
    ) -> None:
        """Put one message on ``queue`` with one command; with ``eta`` it waits until then."""
        priority = clamp_priority(priority)
        with broker_errors(self.url):
            if eta is not None and eta > time.time():
                self._client.zadd(
                    self._queue_keys(queue).delayed,
                    {_delayed_member(envelope, priority): eta * 1000},
                )
            else:
                self._client.xadd(
                    self._queue_keys(queue).stream(priority), {"e": envelope.to_json()}
                )

    def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        """Put several messages on their queues in one round trip (a pipeline, no MULTI)."""
        if not messages:
            return
        now = time.time()
        pipeline = self._client.pipeline(transaction=False)
        for message in messages:
            keys = self._queue_keys(message.queue)
            priority = clamp_priority(message.priority)
            if message.eta is not None and message.eta > now:
                member = _delayed_member(message.envelope, priority)
                pipeline.zadd(keys.delayed, {member: message.eta * 1000})
            else:
                pipeline.xadd(keys.stream(priority), {"e": message.envelope.to_json()})
        with broker_errors(self.url):
            pipeline.execute()

    def fetch(self, queues: Sequence[str], max_messages: int, timeout: float) -> list[Delivery]:
        """Lease up to ``max_messages`` ready messages, waiting up to ``timeout`` for the first.

        Each call starts with a different queue, so none is favoured. The wait ends
        early on a publish, when a delayed message falls due, or when another consumer's
        heartbeat runs out.
        """
        unique = list(dict.fromkeys(queues))
        if not unique or max_messages < 1:
            return []
        try:
            deliveries = self._fetch(unique, max_messages, timeout)
        except TransportError:
            self._may_have_orphans = True
            raise
        self._hand_out(deliveries)
        return deliveries

    def _fetch(self, unique: list[str], max_messages: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        self._ensure_groups(unique)
        moves = master_moves(self._client)
        if moves != self._master_moves:
            # Acks the old master took after the failover were lost with it.
            self._master_moves = moves
            self._may_have_orphans = True
        if self._may_have_orphans:
            orphans = self._orphans(unique, max_messages)
            self._may_have_orphans = len(orphans) >= max_messages
            if orphans:
                return orphans
        while True:
            start = next(self._rotation) % len(unique)
            ordered = unique[start:] + unique[:start]
            deliveries, wait = self._lease(ordered, max_messages)
            remaining = deadline - time.monotonic()
            if deliveries or remaining <= 0:
                return deliveries
            pause = min(remaining, self._max_block, wait if wait is not None else remaining)
            deliveries = self._wait_for_new(ordered, max_messages, pause)
            if deliveries:
                return deliveries

    def _hand_out(self, deliveries: list[Delivery]) -> None:
        if deliveries:
            with self._handed_lock:
                self._handed_out.update(_entry_of(delivery.tag) for delivery in deliveries)

    def _settled(self, tags: Sequence[str]) -> None:
        with self._handed_lock:
            self._handed_out.difference_update(_entry_of(tag) for tag in tags)

    def _orphans(self, queues: list[str], max_messages: int) -> list[Delivery]:
        """Entries Redis gave this consumer whose fetch reply never arrived.

        A fetch cut off by a lost connection may have run on the server: its entries are
        then pending under this live consumer, which nobody else may claim, yet were never
        handed to the worker. After a failed fetch, this consumer's pending entries that
        it did not hand out are delivered again, as they stand in the pending list.
        """
        streams = [
            (queue, priority, stream)
            for queue in queues
            for priority, stream in zip(
                PRIORITY_ORDER, self._queue_keys(queue).streams, strict=True
            )
        ]
        # Look past the entries handed out and still running, which may come first.
        count = max_messages + len(self._handed_out)
        pipeline = self._client.pipeline(transaction=False)
        for _, _, stream in streams:
            pipeline.xpending_range(stream, GROUP, "-", "+", count, self.consumer_id)
        with broker_errors(self.url):
            # A stream without the group (a restarted Redis that kept nothing) has nothing
            # pending: its error is skipped, and the next lease makes the group again.
            pending_lists = pipeline.execute(raise_on_error=False)
        with self._handed_lock:
            handed_out = set(self._handed_out)
        lost: list[tuple[Tag, str]] = []
        for (queue, priority, stream), pending in zip(streams, pending_lists, strict=True):
            if isinstance(pending, Exception):
                continue
            for entry in pending:
                entry_id = _text(entry["message_id"])
                tag = Tag(queue, priority, entry_id, int(entry["times_delivered"]), 0)
                if _entry_of(str(tag)) not in handed_out:
                    lost.append((tag, stream))
        lost = lost[:max_messages]
        if not lost:
            return []
        pipeline = self._client.pipeline(transaction=False)
        for tag, stream in lost:
            pipeline.xrange(stream, tag.entry_id, tag.entry_id, 1)
        with broker_errors(self.url):
            entries = pipeline.execute()
        deliveries = []
        for (tag, _), found in zip(lost, entries, strict=True):
            if found:
                fields = found[0][1]
                earlier = int(fields.get(b"c", 0))
                recovered = Tag(tag.queue, tag.priority, tag.entry_id, tag.times, earlier)
                delivery = self._delivery(recovered, fields.get(b"e", b""))
                if delivery is not None:
                    deliveries.append(delivery)
        if deliveries:
            logger.warning(
                "Recovered %d message(s) whose fetch was cut off by a lost connection",
                len(deliveries),
            )
        return deliveries

    def ack(self, tags: Sequence[str]) -> None:
        """Delete delivered messages; tags of older deliveries are ignored."""
        self._settle(tags, "ack")

    def reject(self, tags: Sequence[str], *, requeue: bool, delay: float = 0.0) -> None:
        """Give leased messages back with their delivery counted (``requeue``), or drop them.

        A message given back joins the end of its priority's stream (a stream cannot
        take an entry back at its old place), or with ``delay`` the queue's delayed set.
        """
        ready_at = round((time.time() + delay) * 1000) if requeue and delay > 0 else 0
        self._settle(tags, "requeue" if requeue else "ack", ready_at)

    def release(self, tags: Sequence[str]) -> None:
        """Give leased messages back and undo the count of their delivery."""
        self._settle(tags, "release")

    def dead_letter(self, tags: Sequence[str], reason: str) -> None:
        """Move leased messages to their queue's dead-letter queue with ``reason`` in headers.

        Two round trips: one reads the envelopes so the headers are set here, in Python,
        and one script moves the entries that are still leased by these tags.
        """
        parsed = [Tag.parse(tag) for tag in tags]
        if not parsed:
            return
        pipeline = self._client.pipeline(transaction=False)
        for tag in parsed:
            pipeline.xrange(
                self._queue_keys(tag.queue).stream(tag.priority), tag.entry_id, tag.entry_id, 1
            )
        with broker_errors(self.url):
            entries = pipeline.execute()
        by_queue: dict[str, list[Any]] = defaultdict(list)
        for tag, found in zip(parsed, entries, strict=True):
            if found:
                fields = found[0][1]
                raw = fields.get(b"e", b"")
                by_queue[tag.queue] += [
                    tag.priority,
                    tag.entry_id,
                    tag.times,
                    mark_dead_letter(raw, tag.queue, reason, tag.delivery_count),
                ]
        pipeline = self._client.pipeline(transaction=False)
        for queue, arguments in by_queue.items():
            keys = (
                *self._queue_keys(queue).streams,
                *self._queue_keys(dead_letter_queue(queue)).streams,
            )
            self._scripts["dead_letter"](keys, [GROUP, *arguments], client=pipeline)
        with broker_errors(self.url):
            pipeline.execute()
        self._settled(tags)

    def extend_lease(self, tags: Sequence[str]) -> None:
        """Renew this consumer's heartbeat in the queues of ``tags`` for ``lease_seconds``."""
        queues = {Tag.parse(tag).queue for tag in tags}
        if not queues:
            return
        pipeline = self._client.pipeline(transaction=False)
        for queue in queues:
            self._scripts["heartbeat"](
                [self._queue_keys(queue).consumers],
                [self.consumer_id, self._lease_ms],
                client=pipeline,
            )
        with broker_errors(self.url):
            pipeline.execute()

    def stop_consuming(self, queues: Sequence[str]) -> None:
        """Do nothing: messages are taken only by a fetch."""

    def purge(self, queue: str) -> int:
        """Delete every waiting message in ``queue`` (ready or delayed); return how many."""
        keys = self._queue_keys(queue)
        with broker_errors(self.url):
            return int(self._scripts["purge"]([*keys.streams, keys.delayed], [GROUP]))

    def queue_size(self, queue: str) -> int:
        """Count the messages waiting in ``queue`` (ready or delayed, not leased)."""
        keys = self._queue_keys(queue)
        with broker_errors(self.url):
            return int(self._scripts["queue_size"]([*keys.streams, keys.delayed], [GROUP]))

    def book_starts(self, bookings: Sequence[StartBooking]) -> list[list[float]]:
        """Book rate-limit start slots by the server's clock (``redis_rate_slots.py``)."""
        with broker_errors(self.url):
            return book_starts(self._scripts["rate_slots"], self._prefix, bookings)

    def broadcast(self, channel: str, envelope: Envelope) -> None:
        """Publish on the channel (Redis pub/sub); nobody subscribed means it is lost."""
        with broker_errors(self.url):
            self._client.publish(channel_key(self._prefix, channel), envelope.to_json())

    def record_revokes(self, task_ids: Sequence[str], expires: float) -> None:
        """Keep ``task_ids`` as revoked for ``expires`` seconds (``redis_revokes.py``)."""
        with broker_errors(self.url):
            record_revokes(self._client, revokes_key(self._prefix), task_ids, expires)

    def read_revokes(self) -> dict[str, float]:
        """Return the revoked ids that have not expired, with their expiry."""
        with broker_errors(self.url):
            return read_revokes(self._client, revokes_key(self._prefix))

    def subscribe(self, channel: str, routing_key: str | None = None) -> RedisSubscription:
        """Start receiving what is broadcast on ``channel`` from now on.

        A ``routing_key`` is matched here, in the subscriber: one pub/sub channel carries all.
        """
        subscription = RedisSubscription(
            self._client, channel_key(self._prefix, channel), self.url, routing_key
        )
        self._subscriptions.add(subscription)
        return subscription

    def close(self) -> None:
        """Give back this consumer's leases as if released, then close the connections.

        Calling it again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._subscriptions):
            subscription.close()
        self._subscriptions.clear()
        try:
            pipeline = self._client.pipeline(transaction=False)
            for queue in self._ready_queues:
                keys = self._queue_keys(queue)
                self._scripts["release_owner"](
                    [*keys.streams, keys.consumers], [GROUP, self.consumer_id], client=pipeline
                )
            with broker_errors(self.url):
                pipeline.execute()
        finally:
            self._client.close()
            self._client.connection_pool.disconnect()

    def _queue_keys(self, queue: str) -> QueueKeys:
        keys = self._keys.get(queue)
        if keys is None:
            keys = self._keys[queue] = queue_keys(self._prefix, queue)
        return keys

    def _ensure_groups(self, queues: Sequence[str], *, again: bool = False) -> None:
        """Create the consumer group on every stream of the queues, once per transport."""
        missing = [queue for queue in queues if again or queue not in self._ready_queues]
        if not missing:
            return
        pipeline = self._client.pipeline(transaction=False)
        for queue in missing:
            for stream in self._queue_keys(queue).streams:
                pipeline.xgroup_create(stream, GROUP, id="0", mkstream=True)
        with broker_errors(self.url):
            replies = pipeline.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception) and not str(reply).startswith("BUSYGROUP"):
                raise TransportError(f"Redis broker {redact_url(self.url)}: {reply}") from reply
        self._ready_queues.update(missing)

    def _lease(self, queues: list[str], max_messages: int) -> tuple[list[Delivery], float | None]:
        """Run ``fetch.lua`` once; return the deliveries and how long until one may be due."""
        keys = [key for queue in queues for key in self._queue_keys(queue).fetch_keys]
        arguments: list[Any] = [
            GROUP,
            self.consumer_id,
            self._lease_ms,
            max_messages,
            round(time.time() * 1000),
        ]
        with broker_errors(self.url):
            try:
                reply: list[Any] = self._scripts["fetch"](keys, arguments)
            except redis.ResponseError:
                # Most likely someone deleted the streams (FLUSHDB, a purge by hand): make
                # them again and try once more; another error is raised by the second try.
                self._ensure_groups(queues, again=True)
                reply = self._scripts["fetch"](keys, arguments)
        waits = [wait / 1000 for wait in reply[:2] if wait >= 0]
        leased: list[tuple[int, Delivery]] = []
        for offset in range(2, len(reply), FETCH_RESULT_FIELDS):
            index, priority, entry_id, times, earlier, raw = reply[
                offset : offset + FETCH_RESULT_FIELDS
            ]
            tag = Tag(queues[index], priority, entry_id.decode(), times, earlier)
            delivery = self._delivery(tag, raw)
            if delivery is not None:
                leased.append((priority, delivery))
        # Claimed entries come first from the script; a stable sort puts priority above that.
        leased.sort(key=lambda pair: -pair[0])
        return [delivery for _, delivery in leased], min(waits, default=None)

    def _wait_for_new(self, queues: list[str], max_messages: int, pause: float) -> list[Delivery]:
        """Block in XREADGROUP until an entry is added to any stream of the queues."""
        streams: dict[str, tuple[str, int]] = {}
        for queue in queues:
            keys = self._queue_keys(queue)
            for priority, stream in zip(PRIORITY_ORDER, keys.streams, strict=True):
                streams[stream] = (queue, priority)
        with broker_errors(self.url):
            try:
                reply: Any = self._client.xreadgroup(
                    GROUP,
                    self.consumer_id,
                    dict.fromkeys(streams, ">"),
                    count=max_messages,
                    block=max(1, round(pause * 1000)),
                )
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._ensure_groups(queues, again=True)
                return []
        deliveries = []
        for name, entries in reply or []:
            queue, priority = streams[name.decode()]
            for entry_id, fields in entries:
                earlier = int(fields.get(b"c", 0))
                tag = Tag(queue, priority, entry_id.decode(), 1, earlier)
                delivery = self._delivery(tag, fields.get(b"e", b""))
                if delivery is not None:
                    deliveries.append(delivery)
        return deliveries

    def _delivery(self, tag: Tag, raw: bytes) -> Delivery | None:
        """Make a Delivery; dead-letter an entry that is not an envelope so it cannot block."""
        try:
            envelope = Envelope.from_json(raw)
        except DecodeError as exc:
            logger.error(
                "entry %s in queue %r of %s is not an envelope (%s): moved to %r",
                tag.entry_id,
                tag.queue,
                redact_url(self.url),
                exc,
                dead_letter_queue(tag.queue),
            )
            self.dead_letter([str(tag)], str(exc))
            return None
        return Delivery(envelope, tag.queue, str(tag), tag.delivery_count)

    def _settle(self, tags: Sequence[str], mode: str, ready_at: int = 0) -> None:
        """Run ``settle.lua`` once per queue of ``tags``, all in one round trip.

        Tags of one queue, the usual case, are settled with a plain EVALSHA: a pipeline
        holding a script first asks SCRIPT EXISTS, a round trip of its own.
        """
        by_queue: dict[str, list[Any]] = defaultdict(list)
        for text in tags:
            tag = Tag.parse(text)
            by_queue[tag.queue] += [tag.priority, tag.entry_id, tag.times]
        if len(by_queue) == 1:
            [(queue, arguments)] = by_queue.items()
            keys = self._queue_keys(queue)
            with broker_errors(self.url):
                self._scripts["settle"](
                    [*keys.streams, keys.delayed], [GROUP, mode, ready_at, *arguments]
                )
        elif by_queue:
            pipeline = self._client.pipeline(transaction=False)
            for queue, arguments in by_queue.items():
                keys = self._queue_keys(queue)
                self._scripts["settle"](
                    [*keys.streams, keys.delayed],
                    [GROUP, mode, ready_at, *arguments],
                    client=pipeline,
                )
            with broker_errors(self.url):
                pipeline.execute()
        self._settled(tags)


def _entry_of(tag: str) -> tuple[str, int, str]:
    """The stream entry a delivery tag names: queue, priority and entry id."""
    parsed = Tag.parse(tag)
    return parsed.queue, parsed.priority, parsed.entry_id


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _delayed_member(envelope: Envelope, priority: int) -> str:
    """Encode a delayed message as a sorted-set member: priority, count, a unique token, JSON.

    The token keeps two equal envelopes with one eta from collapsing into one member.
    """
    return f"{priority}:0:{uuid.uuid4().hex[:16]}:{envelope.to_json()}"
