"""The SQLite broker's database file: its schema, and connections that report errors (edge layer).

``Database`` lends each thread its own connection (none survives a ``fork``, see
``sqlite_connection.py``), opens the file in WAL mode, creates the tables on first use and
turns every SQLite error into a ``TransportError`` naming the file, its password masked.
``sqlite.py`` holds the broker's behaviour on top of it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from celeriac.transports import redact_url
from celeriac.transports.base import TransportError
from celeriac.transports.sqlite_connection import ThreadConnections, immediate_transaction
from celeriac.transports.sqlite_rate_slots import CREATE_TABLE as RATE_SLOTS_TABLE
from celeriac.transports.sqlite_revokes import CREATE_TABLE as REVOKES_TABLE

__all__ = ["SCHEMA", "SCHEMA_VERSION", "Database"]

SCHEMA_VERSION = 1
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL,
        priority INTEGER NOT NULL,
        eta REAL NOT NULL,
        envelope TEXT NOT NULL,
        delivery_count INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_expires REAL,
        created REAL NOT NULL
    )""",
    # Serves fetch: per queue, rows in the order they are handed out.
    "CREATE INDEX IF NOT EXISTS messages_fetch ON messages (queue, priority DESC, eta, id)",
    # Serves the wait for the next lease to run out.
    "CREATE INDEX IF NOT EXISTS messages_leased ON messages (queue, lease_expires)"
    " WHERE lease_owner IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS broadcasts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel TEXT NOT NULL,
        envelope TEXT NOT NULL,
        created REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS broadcasts_channel ON broadcasts (channel, id)",
    REVOKES_TABLE,
    RATE_SLOTS_TABLE,
)


class Database:
    """The database file: a connection per thread, none across ``fork`` (``ThreadConnections``)."""

    def __init__(self, url: str, path: Path, busy_timeout: float) -> None:
        self.url = url
        self.path = path
        self._busy_timeout = busy_timeout
        self._connections = ThreadConnections(self._open)
        self._closed = False
        self._schema_ready = False

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """Lend this thread's connection; SQLite errors become TransportError naming the file."""
        with self.errors(), self._connections.lend() as connection:
            yield connection

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Turn SQLite errors into TransportError naming the database."""
        try:
            yield
        except sqlite3.Error as exc:
            hint = ""
            if "locked" in str(exc):
                hint = (
                    f": another connection held its write lock for more than"
                    f" busy_timeout={self._busy_timeout:g} s (a broker_transport_options key)"
                )
            raise TransportError(f"SQLite broker {redact_url(self.url)}: {exc}{hint}") from exc

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run a write transaction, taking the write lock at its start (``BEGIN IMMEDIATE``)."""
        with self.connection() as connection, immediate_transaction(connection):
            yield connection

    def write(self, statement: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """Run ``statement`` for each row, all in one transaction."""
        if len(rows) == 1:
            with self.connection() as connection:
                connection.execute(statement, rows[0])
        elif rows:
            with self.transaction() as connection:
                connection.executemany(statement, rows)

    def query(self, statement: str, parameters: Sequence[Any] | Mapping[str, Any]) -> list[Any]:
        """Run one statement on its own and return its rows."""
        with self.connection() as connection:
            return connection.execute(statement, parameters).fetchall()

    def close(self) -> None:
        """Close every connection this process opened; later use raises TransportError."""
        self._closed = True
        self._connections.close()

    def _open(self) -> sqlite3.Connection:
        if self._closed:
            raise TransportError(f"SQLite broker {redact_url(self.url)} is closed")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            raise TransportError(
                f"cannot open SQLite broker {redact_url(self.url)}: {exc}"
            ) from exc
        try:
            self._enable_wal(connection)
            connection.execute("PRAGMA synchronous=NORMAL")
            if not self._schema_ready:
                self._create_schema(connection)
                self._schema_ready = True
        except sqlite3.Error:
            connection.close()
            raise
        return connection

    def _enable_wal(self, connection: sqlite3.Connection) -> None:
        """Switch the file to WAL mode, waiting out other processes doing the same.

        SQLite reports "database is locked" at once, without its busy handler, when two
        connections switch a new file to WAL together; the mode sticks to the file, so only
        the first opening of a new file can meet this.
        """
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    @staticmethod
    def _create_schema(connection: sqlite3.Connection) -> None:
        """Create the tables if missing; ``user_version`` records the schema they follow."""
        with immediate_transaction(connection):
            for statement in SCHEMA:
                connection.execute(statement)
            (version,) = connection.execute("PRAGMA user_version").fetchone()
            if version < SCHEMA_VERSION:
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
