"""The connection pool of the PostgreSQL result backend (edge layer).

A few autocommitted psycopg connections shared by threads: each call borrows one and gives
it back. Fork-safe: a child process never touches its parent's connections. Every new
process prepares its first connection (the backend's table setup) before using any.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from celeriac.backends.base import BackendError, BackendUnavailable
from celeriac.backends.chord_table import Execute
from celeriac.transports import redact_url

Row = tuple[Any, ...]
Connection = psycopg.Connection[Row]
_T = TypeVar("_T")


class ConnectionPool:
    """Lend autocommitted connections to ``conninfo``; keep up to ``max_idle_connections``.

    ``url`` is the backend's URL, named (without its password) in errors. ``prepare``
    runs on the first connection of each process, before it is lent.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        url: str,
        prepare: Callable[[Connection], None],
        connect_timeout: float,
        max_idle_connections: int,
    ) -> None:
        self.conninfo = conninfo
        self.url = url
        self.prepare = prepare
        self.connect_timeout = connect_timeout
        self.max_idle_connections = max_idle_connections
        self._idle: list[Connection] = []
        self._inherited: list[Connection] = []
        self._start_process()

    def execute(
        self, query: sql.Composed, parameters: Callable[[], Sequence[Any] | Mapping[str, Any]]
    ) -> tuple[list[Row], int]:
        """Run one statement; return its rows and row count.

        A pooled connection the server has dropped (a restart, an idle timeout) is
        replaced once. ``parameters`` is called once a connection is prepared, so that
        it may use what ``prepare`` found.
        """
        for attempt in (1, 2):
            with self.connection() as connection:
                try:
                    cursor = connection.execute(query, parameters())
                except psycopg.OperationalError:
                    if attempt == 2:
                        raise
                    connection.close()
                    continue
                return (cursor.fetchall() if cursor.description else []), cursor.rowcount
        raise AssertionError("unreachable: the second attempt returns or raises")

    def in_transaction(self, work: Callable[[Execute], _T]) -> _T:
        """Run ``work`` in one transaction; return what it returns.

        A pooled connection found dropped at BEGIN is replaced once, as in ``execute``;
        past BEGIN nothing is retried, since a commit may have happened.
        """
        for attempt in (1, 2):
            with self.connection() as connection:
                try:
                    connection.execute("BEGIN")
                except psycopg.OperationalError:
                    if attempt == 2:
                        raise
                    connection.close()
                    continue

                def execute(query: str, parameters: Sequence[Any]) -> list[Row]:
                    cursor = connection.execute(query, parameters)
                    return cursor.fetchall() if cursor.description else []

                try:
                    outcome = work(execute)
                    connection.execute("COMMIT")
                finally:
                    if _is_in_transaction(connection):
                        connection.execute("ROLLBACK")
                return outcome
        raise AssertionError("unreachable: the second attempt returns or raises")

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """Borrow a connection; it goes back to the pool unless it broke.

        Raises:
            BackendError: a database error, raised while the connection was lent.
        """
        if self._pid != os.getpid():
            self._start_process()
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        with self._errors_as_backend_error():
            if connection is None:
                connection = self._connect()
            try:
                yield connection
            finally:
                self._give_back(connection)

    def close(self) -> None:
        """Close the idle connections; a later call opens new ones."""
        if self._pid != os.getpid():
            self._start_process()
            return
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _start_process(self) -> None:
        """Set aside connections inherited from a parent process, never to use or close them.

        Closing would end the parent's sessions, which share the sockets.
        """
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._inherited.extend(self._idle)
        self._idle = []
        self._is_prepared = False

    def _give_back(self, connection: Connection) -> None:
        """Keep an idle, healthy connection for the next call; close any other."""
        is_idle = connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with self._lock:
            if is_idle and len(self._idle) < self.max_idle_connections:
                self._idle.append(connection)
                return
        connection.close()

    def _connect(self) -> Connection:
        connection: Connection = psycopg.connect(
            self.conninfo, autocommit=True, connect_timeout=max(1, round(self.connect_timeout))
        )
        try:
            with self._lock:
                needs_preparing = not self._is_prepared
            if needs_preparing:
                self.prepare(connection)
                with self._lock:
                    self._is_prepared = True
        except BaseException:
            connection.close()
            raise
        return connection

    @contextmanager
    def _errors_as_backend_error(self) -> Iterator[None]:
        try:
            yield
        except psycopg.OperationalError as exc:
            message = f"PostgreSQL result store {redact_url(self.url)}: {exc}"
            raise BackendUnavailable(message) from exc
        except psycopg.Error as exc:
            raise BackendError(f"PostgreSQL result store {redact_url(self.url)}: {exc}") from exc


def _is_in_transaction(connection: Connection) -> bool:
    status = connection.info.transaction_status
    in_transaction = (psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.INERROR)
    return not connection.closed and status in in_transaction
