"""SQLite connections to one database file, one per thread, none across ``fork`` (edge layer).

The SQLite broker and result store both keep their connections here. SQLite keeps, per
process and per file, a record of the locks its connections hold and mutexes guarding
it; ``fork`` copies both into the child, without the locks themselves and without the
threads that would let go. A child forked while a parent thread was inside a write
believes the WAL write lock is taken for ever, so each of its writes waits out the busy
timeout and fails with "database is locked" though no process holds the lock; or it
waits for ever on a mutex that was locked at the moment of the fork.

So before any ``fork``, whoever calls it, every connection made here is closed: new
uses wait, the ones under way finish (a write waiting for another process's lock may
take up to its busy timeout), then each connection closes, which leaves SQLite nothing
about the file to copy. Parent and child open fresh connections on their next use:
closing and reopening five costs 0.35 ms while other processes have the file open,
1.1 ms when the parent's last close also checkpoints the WAL.

A connection is lent for a few statements at a time (``lend``), never kept by the caller,
and every statement runs to its end, so no connection sits in a transaction between
uses: that would keep WAL checkpoints from finishing and hold a fork back.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["ThreadConnections", "immediate_transaction"]


@contextmanager
def immediate_transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run a write transaction that takes the write lock at ``BEGIN IMMEDIATE``.

    Taking it at the start, not at the first write, means no two transactions can both
    read a row and then both write it, and a busy file is waited for (busy timeout)
    instead of failing at once on a stale read.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
        connection.execute("COMMIT")
    finally:
        if connection.in_transaction:
            connection.execute("ROLLBACK")


@dataclass(eq=False, slots=True)
class _Held:
    """One thread's connection, the generation it was opened in, and the thread."""

    connection: sqlite3.Connection
    generation: int
    owner: threading.Thread


class ThreadConnections:
    """Lend each thread a connection of its own, opened by ``open_connection`` on first use.

    ``close`` and every ``fork`` close all of them once no thread is using one; the next
    use opens a new one. ``open_connection`` must pass ``check_same_thread=False``, as
    the thread that closes is not always the one that opened. A thread must not fork or
    call ``close`` while it borrows a connection.
    """

    def __init__(self, open_connection: Callable[[], sqlite3.Connection]) -> None:
        self._open_connection = open_connection
        self._generation = 0
        self._start_process()
        with _registry.lock:
            _registry.everyone.add(self)

    @contextmanager
    def lend(self) -> Iterator[sqlite3.Connection]:
        """Lend this thread's connection for the statements of one ``with`` block.

        Blocks while a ``fork`` or ``close`` in another thread is closing connections.
        A thread may borrow again inside the block and gets the same connection.
        """
        self._enter()
        try:
            yield self._thread_connection()
        finally:
            self._leave()

    def close(self) -> None:
        """Close every connection of this process once none is lent; later uses open new ones."""
        try:
            self._drain()
        finally:
            self._resume()

    def _start_process(self) -> None:
        """Start with no connection and no thread: at creation and in a forked child."""
        self._condition = threading.Condition()
        self._local = threading.local()
        self._opened: list[_Held] = []
        self._borrowers = 0  # threads inside ``lend``
        self._closing = 0  # forks and closes under way; ``lend`` waits while any is

    def _enter(self) -> None:
        depth: int = getattr(self._local, "depth", 0)
        if depth == 0:
            with self._condition:
                while self._closing:
                    self._condition.wait()
                self._borrowers += 1
        self._local.depth = depth + 1

    def _leave(self) -> None:
        self._local.depth -= 1
        if self._local.depth == 0:
            with self._condition:
                self._borrowers -= 1
                if self._borrowers == 0:
                    self._condition.notify_all()

    def _thread_connection(self) -> sqlite3.Connection:
        held: _Held | None = getattr(self._local, "held", None)
        if held is None or held.generation != self._generation:
            held = _Held(self._open_connection(), self._generation, threading.current_thread())
            self._local.held = held
            with self._condition:
                orphans = [other for other in self._opened if not other.owner.is_alive()]
                self._opened = [other for other in self._opened if other.owner.is_alive()]
                self._opened.append(held)
            # Closed here, while borrowing, rather than by the garbage collector when their
            # thread ends: a close under way in another thread must never meet a fork.
            _close(orphans)
        return held.connection

    def _drain(self) -> None:
        """Keep new borrowers out, wait until no other thread borrows, close every connection.

        New borrowers wait until ``_resume``.
        """
        with self._condition:
            self._closing += 1
            own = 1 if getattr(self._local, "depth", 0) else 0
            while self._borrowers > own:
                self._condition.wait()
            opened, self._opened = self._opened, []
            self._generation += 1
        _close(opened)

    def _resume(self) -> None:
        with self._condition:
            self._closing -= 1
            if not self._closing:
                self._condition.notify_all()


def _close(connections: list[_Held]) -> None:
    for held in connections:
        with contextlib.suppress(sqlite3.Error):
            held.connection.close()


class _Registry:
    """Every ``ThreadConnections`` of this process, for the fork handlers.

    ``lock`` is held from before a fork until after it, so that no file is added while
    its connections could cross.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.everyone: weakref.WeakSet[ThreadConnections] = weakref.WeakSet()
        self.drained: list[ThreadConnections] = []


_registry = _Registry()


def _close_before_fork() -> None:
    """Close every connection to every file; borrowers wait until the fork is done."""
    _registry.lock.acquire()
    _registry.drained = list(_registry.everyone)
    for connections in _registry.drained:
        connections._drain()


def _resume_in_parent() -> None:
    drained, _registry.drained = _registry.drained, []
    _registry.lock.release()
    for connections in drained:
        connections._resume()


def _start_child() -> None:
    """Forget the parent's threads and locks: in the child only the forking thread lives."""
    _registry.lock = threading.Lock()
    _registry.drained = []
    for connections in list(_registry.everyone):
        connections._start_process()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_close_before_fork,
        after_in_parent=_resume_in_parent,
        after_in_child=_start_child,
    )
