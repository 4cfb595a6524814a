"""Key names and delivery tags of the Redis broker (edge layer, beside ``redis.py``).

Kept apart from the transport so the layout of the data in Redis reads in one place.
Every key of a queue carries the queue's name in a hash tag (``{tasks}``), so on Redis
Cluster all of them hash to one slot and a Lua script may touch them together. A
dead-letter queue (``tasks.dead_letter``) uses its original queue's hash tag, so moving a
message there stays within one slot too. With the default empty prefix, queue ``tasks``
has these keys::

    celeriac:{tasks}:p9 ... celeriac:{tasks}:p0   streams, one per priority
    celeriac:{tasks}:delayed                       sorted set of messages with an eta
    celeriac:{tasks}:consumers                     sorted set: consumer -> heartbeat deadline (ms)
    celeriac:{tasks}:swept                         marker: the last sweep for lost consumers
    celeriac:{tasks}.dead_letter:p9 ...            the dead-letter queue's keys
    celeriac:rate-slots:{rate}:tasks.add           hash: next free start slot, spacing (us)
    celeriac:revoked                               sorted set: revoked task id -> expiry
"""

from __future__ import annotations

from dataclasses import dataclass

from celeriac.exceptions import ImproperlyConfigured
from celeriac.transports.base import DEAD_LETTER_SUFFIX, MAX_PRIORITY, MIN_PRIORITY

__all__ = [
    "PRIORITY_ORDER",
    "QueueKeys",
    "Tag",
    "channel_key",
    "check_prefix",
    "queue_keys",
    "rate_slot_key",
    "revokes_key",
]

NAMESPACE = "celeriac:"
PRIORITY_ORDER = tuple(range(MAX_PRIORITY, MIN_PRIORITY - 1, -1))
"""Priorities from the highest down: the order of a queue's streams in every key list."""


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one queue; ``streams`` run from priority 9 down to 0."""

    streams: tuple[str, ...]
    delayed: str
    consumers: str
    sweep: str

    def stream(self, priority: int) -> str:
        """Return the stream that holds messages of ``priority``."""
        return self.streams[MAX_PRIORITY - priority]

    @property
    def fetch_keys(self) -> tuple[str, ...]:
        """The keys ``fetch.lua`` takes for this queue, in its order."""
        return (*self.streams, self.delayed, self.consumers, self.sweep)


def check_prefix(prefix: str) -> str:
    """Return the global key prefix; braces would change the hash tag of every key."""
    if "{" in prefix or "}" in prefix:
        raise ImproperlyConfigured(
            f"global_keyprefix {prefix!r} must not contain braces: they make Redis hash tags"
        )
    return prefix


def queue_keys(prefix: str, queue: str) -> QueueKeys:
    """Name the keys of ``queue``; a dead-letter queue shares its original queue's hash tag."""
    root = queue
    while root.endswith(DEAD_LETTER_SUFFIX) and root != DEAD_LETTER_SUFFIX:
        root = root.removesuffix(DEAD_LETTER_SUFFIX)
    base = f"{prefix}{NAMESPACE}{{{root}}}{queue[len(root) :]}"
    return QueueKeys(
        streams=tuple(f"{base}:p{priority}" for priority in PRIORITY_ORDER),
        delayed=f"{base}:delayed",
        consumers=f"{base}:consumers",
        sweep=f"{base}:swept",
    )


def revokes_key(prefix: str) -> str:
    """Name the sorted set of revoked task ids (``redis_revokes.py``)."""
    return f"{prefix}{NAMESPACE}revoked"


def rate_slot_key(prefix: str, task_name: str) -> str:
    """Name the hash of a task type's start slots; all share one hash tag, so one script
    can book slots for several task types on Redis Cluster too (``rate_slots.lua``)."""
    return f"{prefix}{NAMESPACE}rate-slots:{{rate}}:{task_name}"


def channel_key(prefix: str, channel: str) -> str:
    """Name the pub/sub channel that carries broadcasts on ``channel``."""
    return f"{prefix}{NAMESPACE}broadcast:{channel}"


@dataclass(frozen=True, slots=True)
class Tag:
    """A delivery tag: the stream entry, its queue, and which delivery of it this is.

    ``times`` counts the deliveries of this stream entry (Redis keeps it in the pending
    entries list); ``earlier`` the deliveries before the message was last added to the
    stream (a requeue adds it again). A tag whose ``times`` no longer matches the pending
    entry belongs to an older delivery and acts on nothing.
    """

    queue: str
    priority: int
    entry_id: str
    times: int
    earlier: int

    @property
    def delivery_count(self) -> int:
        """How many times the message was delivered, this delivery included."""
        return self.earlier + self.times

    def __str__(self) -> str:
        return f"{self.priority}:{self.times}:{self.earlier}:{self.entry_id}:{self.queue}"

    @classmethod
    def parse(cls, text: str) -> Tag:
        """Read a tag made by ``str(tag)``; the queue name comes last and may hold colons."""
        try:
            priority, times, earlier, entry_id, queue = text.split(":", 4)
            return cls(queue, int(priority), entry_id, int(times), int(earlier))
        except ValueError as exc:
            raise ValueError(f"not a Redis delivery tag: {text!r}") from exc
