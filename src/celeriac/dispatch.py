"""The Signal class: Celery's observer pattern (core layer).

Receivers connect to a signal, for every sender or for one, and ``send`` calls
each with ``signal=`` and ``sender=`` plus the signal's keyword arguments. The
rules are Celery's, which follow ``django.dispatch``: receivers are held by
weak reference unless asked otherwise, ``dispatch_uid`` deduplicates,
``str``/``bytes`` senders match by value and every other sender by identity,
receivers must accept ``**kwargs``, and a receiver that raises is logged and
never stops the others.

Thread and fork safety: the receivers live in an immutable tuple that
connect/disconnect replace under a lock, so ``send`` reads a snapshot, never
waits for the lock and calls receivers without holding it; a forked child gets
fresh locks, so a fork taken while another thread was connecting cannot
deadlock the child.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeVar, overload

__all__ = ["Signal"]

logger = logging.getLogger("celeriac.dispatch")

Receiver = Callable[..., Any]
ReceiverT = TypeVar("ReceiverT", bound=Callable[..., Any])

# Pauses between the attempts of a ``retry=True`` receiver: four attempts over
# about 0.7 s, so a flaky receiver cannot hold up the sender for long.
RETRY_DELAYS: Final = (0.1, 0.2, 0.4)

# Past this many distinct senders the per-signal receiver cache starts over,
# so a stream of short-lived senders cannot grow it without bound.
CACHE_LIMIT: Final = 1024


class _AnySender:
    """The sender key of receivers connected without a sender."""

    def __repr__(self) -> str:
        return "<any sender>"


_ANY_SENDER: Final = _AnySender()


def _sender_key(sender: object) -> Hashable:
    """Return the key a sender is matched by: its value for str/bytes, else its identity."""
    if sender is None:
        return _ANY_SENDER
    if isinstance(sender, str | bytes):
        return sender
    return id(sender)


def _receiver_key(receiver: object) -> Hashable:
    """Return the identity of a receiver; a bound method is its instance plus its function."""
    instance = getattr(receiver, "__self__", None)
    function = getattr(receiver, "__func__", None)
    if instance is not None and function is not None:
        return (id(instance), id(function))
    return id(receiver)


def _lookup_key(
    receiver: object, sender: object, dispatch_uid: Hashable | None
) -> tuple[Hashable, Hashable]:
    """Return what identifies a connection: its dispatch_uid, else its receiver; and its sender."""
    if dispatch_uid is not None:
        return (("dispatch_uid", dispatch_uid), _sender_key(sender))
    return (("receiver", _receiver_key(receiver)), _sender_key(sender))


def _accepts_keyword_arguments(receiver: Receiver) -> bool:
    """Tell whether a receiver takes ``**kwargs``; one without a readable signature passes."""
    try:
        parameters = inspect.signature(receiver).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters)


@dataclass(frozen=True, slots=True)
class _StrongReference:
    """Hold a receiver strongly, with the same call shape as a weak reference."""

    receiver: Receiver

    def __call__(self) -> Receiver:
        return self.receiver


@dataclass(frozen=True, slots=True)
class _Connection:
    """One connected receiver: its lookup key, its sender key and how to reach it."""

    lookup: tuple[Hashable, Hashable]
    sender_key: Hashable
    reference: Callable[[], Receiver | None]
    retry: bool


_Snapshot = tuple[tuple[_Connection, ...], dict[Hashable, tuple[_Connection, ...]]]


class Signal:
    """A named event that receivers connect to and senders send.

    A receiver connected with a sender hears only that sender: a ``str`` or
    ``bytes`` sender matches by value (a task name built at run time matches),
    any other sender by identity.

    Args:
        name: the signal's name, shown in its repr.
        providing_args: names of the keyword arguments ``send`` passes; kept for
            documentation and the repr (Celery deprecated it, code still passes it).
        use_caching: remember which receivers match each sender until the
            receivers change, which speeds up signals with many receivers.
    """

    def __init__(
        self,
        name: str | None = None,
        providing_args: Iterable[str] | None = None,
        use_caching: bool = False,
    ) -> None:
        self.name = name
        self.providing_args: set[str] = set(providing_args or ())
        self.use_caching = use_caching
        self._lock = threading.Lock()
        self._snapshot: _Snapshot = ((), {})
        self._has_dead_receivers = False
        _all_signals.add(self)

    def __repr__(self) -> str:
        arguments = ", ".join(repr(argument) for argument in sorted(self.providing_args))
        shown = f"{{{arguments}}}" if arguments else "set()"
        return f"<{type(self).__name__}: {self.name} providing_args={shown}>"

    @overload
    def connect(
        self,
        receiver: ReceiverT,
        sender: object = None,
        weak: bool = True,
        dispatch_uid: Hashable | None = None,
        retry: bool = False,
    ) -> ReceiverT: ...

    @overload
    def connect(
        self,
        receiver: None = None,
        sender: object = None,
        weak: bool = True,
        dispatch_uid: Hashable | None = None,
        retry: bool = False,
    ) -> Callable[[ReceiverT], ReceiverT]: ...

    def connect(
        self,
        receiver: ReceiverT | None = None,
        sender: object = None,
        weak: bool = True,
        dispatch_uid: Hashable | None = None,
        retry: bool = False,
    ) -> ReceiverT | Callable[[ReceiverT], ReceiverT]:
        """Connect a receiver, or return a decorator that does when none is given.

        ``sig.connect(fn)``, ``@sig.connect`` and ``@sig.connect(sender=...)`` all
        work and give the receiver back unchanged. Connecting the same receiver
        (or the same ``dispatch_uid``) twice for the same sender is a no-op.

        Args:
            receiver: a callable accepting ``**kwargs``.
            sender: only sends from this sender reach the receiver; None means all.
            weak: hold the receiver by weak reference, so connecting does not keep
                it alive; a lambda or local function needs ``weak=False``.
            dispatch_uid: identifies the connection instead of the receiver itself.
            retry: on an exception, call the receiver again after each of
                ``RETRY_DELAYS``; the receiver is then held strongly, as in Celery.

        Raises:
            TypeError: the receiver is not callable, or cannot be weakly referenced.
            ValueError: the receiver does not accept keyword arguments.
        """
        if receiver is None:

            def connect_decorated(function: ReceiverT) -> ReceiverT:
                return self.connect(function, sender, weak, dispatch_uid, retry)

            return connect_decorated
        self._add(receiver, sender, weak and not retry, dispatch_uid, retry)
        return receiver

    def disconnect(
        self,
        receiver: Receiver | None = None,
        sender: object = None,
        dispatch_uid: Hashable | None = None,
    ) -> bool:
        """Disconnect a receiver (or a ``dispatch_uid``) from a sender; tell whether one was."""
        if dispatch_uid is None and receiver is None:
            return False
        lookup = _lookup_key(receiver, sender, dispatch_uid)
        with self._lock:
            connections, _ = self._snapshot
            kept = tuple(connection for connection in connections if connection.lookup != lookup)
            self._snapshot = (kept, {})
        return len(kept) != len(connections)

    def has_listeners(self, sender: object = None) -> bool:
        """Tell whether ``send(sender)`` would reach at least one live receiver."""
        if not self._snapshot[0]:
            return False
        return any(connection.reference() is not None for connection in self._matching(sender))

    def send(self, sender: object, **named: Any) -> list[tuple[Receiver, Any]]:
        """Call every live receiver for ``sender``; return ``(receiver, response)`` pairs.

        Each receiver gets ``signal=self, sender=sender, **named``. A receiver that
        raises has the exception logged with its traceback and returned as its
        response; the other receivers still run and ``send`` never raises.
        """
        if not self._snapshot[0]:
            return []
        responses: list[tuple[Receiver, Any]] = []
        for connection in self._matching(sender):
            receiver = connection.reference()
            if receiver is not None:
                responses.append((receiver, self._deliver(connection, receiver, sender, named)))
        return responses

    send_robust = send

    def _add(
        self,
        receiver: Receiver,
        sender: object,
        weak: bool,
        dispatch_uid: Hashable | None,
        retry: bool,
    ) -> None:
        """Store a new connection unless its lookup key is already connected."""
        if not callable(receiver):
            raise TypeError(f"Signal receiver {receiver!r} is not callable")
        if not _accepts_keyword_arguments(receiver):
            raise ValueError(f"Signal receiver {receiver!r} must accept keyword arguments")
        connection = _Connection(
            lookup=_lookup_key(receiver, sender, dispatch_uid),
            sender_key=_sender_key(sender),
            reference=self._reference(receiver) if weak else _StrongReference(receiver),
            retry=retry,
        )
        with self._lock:
            # Dropping dead receivers first also keeps a new receiver that reuses
            # a dead one's id() from being taken for a duplicate.
            self._has_dead_receivers = False
            live = tuple(
                existing for existing in self._snapshot[0] if existing.reference() is not None
            )
            if any(existing.lookup == connection.lookup for existing in live):
                self._snapshot = (live, {})
            else:
                self._snapshot = ((*live, connection), {})

    def _reference(self, receiver: Receiver) -> Callable[[], Receiver | None]:
        """Return a weak reference to a receiver; bound methods need a WeakMethod."""
        try:
            if hasattr(receiver, "__self__") and hasattr(receiver, "__func__"):
                return weakref.WeakMethod(receiver, self._note_dead_receiver)
            return weakref.ref(receiver, self._note_dead_receiver)
        except TypeError as error:
            raise TypeError(
                f"Signal receiver {receiver!r} cannot be weakly referenced; "
                "connect it with weak=False"
            ) from error

    def _note_dead_receiver(self, _reference: object) -> None:
        # Called by the garbage collector, possibly while this thread holds the
        # lock: only raise a flag, the next send or connect does the cleanup.
        self._has_dead_receivers = True

    def _matching(self, sender: object) -> tuple[_Connection, ...]:
        """Return the connections that ``sender`` reaches, from the cache when enabled."""
        if self._has_dead_receivers:
            self._drop_dead_receivers()
        connections, cache = self._snapshot
        key = _sender_key(sender)
        if self.use_caching:
            cached = cache.get(key)
            if cached is not None:
                return cached
        matching = tuple(
            connection
            for connection in connections
            if connection.sender_key is _ANY_SENDER or connection.sender_key == key
        )
        if self.use_caching:
            if len(cache) >= CACHE_LIMIT:
                cache.clear()
            cache[key] = matching
        return matching

    def _drop_dead_receivers(self) -> None:
        """Forget receivers that were garbage collected, unless the lock is busy.

        Never waits: ``send`` must not block on a connect in another thread (or on
        a ``__del__`` that sends while this thread holds the lock), and dead
        receivers are skipped anyway until a later call removes them.
        """
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._has_dead_receivers = False
            connections, _ = self._snapshot
            live = tuple(
                connection for connection in connections if connection.reference() is not None
            )
            self._snapshot = (live, {})
        finally:
            self._lock.release()

    def _deliver(
        self, connection: _Connection, receiver: Receiver, sender: object, named: dict[str, Any]
    ) -> Any:
        """Call one receiver, retrying if asked; return its response or the exception raised."""
        delays = iter(RETRY_DELAYS if connection.retry else ())
        while True:
            try:
                return receiver(signal=self, sender=sender, **named)
            # A receiver's failure is its own: Celery logs it and goes on with
            # the next receiver, so the sender (often a task) is never broken.
            except Exception as error:
                delay = next(delays, None)
                if delay is None:
                    logger.exception("Signal handler %r raised: %r", receiver, error)
                    return error
                logger.warning(
                    "Signal handler %r raised: %r; retrying in %.1f s", receiver, error, delay
                )
                time.sleep(delay)

    def _reset_lock(self) -> None:
        self._lock = threading.Lock()


_all_signals: weakref.WeakSet[Signal] = weakref.WeakSet()


def _reset_locks_in_child() -> None:
    """Give every signal a fresh lock in a forked child, where no other thread survives."""
    for signal in list(_all_signals):
        signal._reset_lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_locks_in_child)
