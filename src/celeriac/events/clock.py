"""The Lamport logical clock that orders events and control messages (services layer).

One clock per process, shared by the event dispatcher, the event receiver and remote
control (wire protocol §5.2): sending forwards it, receiving a value adjusts it.
"""

from __future__ import annotations

import os
import threading
import weakref


class LamportClock:
    """A thread-safe Lamport clock.

    ``forward()`` before sending and send the value it returns; ``adjust(received)`` on
    every value received, which sets the clock to ``max(local, received) + 1``.

    A forked child (a prefork pool's) gets a new lock at the fork: the one it
    inherited may have been held, at the fork, by a thread the child does not have.
    """

    def __init__(self, initial_value: int = 0) -> None:
        self._value = initial_value
        self._lock = threading.Lock()
        _CLOCKS.add(self)

    @property
    def value(self) -> int:
        """The current value, without changing it."""
        return self._value

    def forward(self) -> int:
        """Advance the clock by one for a local event; return the new value."""
        with self._lock:
            self._value += 1
            return self._value

    def adjust(self, other: int) -> int:
        """Merge a received value: the clock becomes ``max(local, other) + 1``."""
        with self._lock:
            self._value = max(self._value, other) + 1
            return self._value

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return str(self._value)

    def __repr__(self) -> str:
        return f"<LamportClock: {self._value}>"


# Every clock of the process, so that a forked child gives each a lock of its own: a check
# of the pid at every tick cost a busy -E worker several percent of its main process.
_CLOCKS: weakref.WeakSet[LamportClock] = weakref.WeakSet()


def _renew_locks_in_child() -> None:
    for clock in list(_CLOCKS):
        clock._after_fork()


os.register_at_fork(after_in_child=_renew_locks_in_child)
