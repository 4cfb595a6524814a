"""Beat's state in an SQLite file: the embedded broker's, or a local one (edge layer).

Two tables, beside the broker's ``messages`` and ``broadcasts`` when the file is the
broker's::

    beat_lease     one row: owner, expires (Unix seconds on this machine's clock)
    beat_entries   name, last_run_at (microseconds since the epoch, UTC),
                   total_run_count, fingerprint

SQLite lets one writer at a time into a file, across processes: ``hold_lease`` and
``claim_run`` are single upserts, ``sync_entries`` one ``BEGIN IMMEDIATE`` transaction,
so each is atomic against every other beat on the file. Every process that shares a file
runs on one machine, so they share the clock the lease expiry is read from.
"""

from __future__ import annotations

import datetime
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from celeriac.beat.store import EntryState, from_microseconds, to_microseconds
from celeriac.exceptions import ImproperlyConfigured, OperationalError

__all__ = ["SQLiteStore"]

SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS beat_lease (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        owner TEXT NOT NULL,
        expires REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS beat_entries (
        name TEXT PRIMARY KEY,
        last_run_at INTEGER NOT NULL,
        total_run_count INTEGER NOT NULL,
        fingerprint TEXT NOT NULL
    )""",
)
HOLD_LEASE: Final = (
    "INSERT INTO beat_lease (id, owner, expires) VALUES (1, :owner, :expires)"
    " ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, expires = excluded.expires"
    " WHERE beat_lease.owner = excluded.owner OR beat_lease.expires < :now"
)
RELEASE_LEASE: Final = "DELETE FROM beat_lease WHERE id = 1 AND owner = ?"
# The SELECT reads the lease in the statement that writes the run, so both hold at once.
CLAIM_RUN: Final = (
    "INSERT INTO beat_entries (name, last_run_at, total_run_count, fingerprint)"
    " SELECT :name, :due, :count, '' FROM beat_lease"
    " WHERE id = 1 AND owner = :owner AND expires >= :now"
    " ON CONFLICT (name) DO UPDATE SET last_run_at = excluded.last_run_at,"
    " total_run_count = beat_entries.total_run_count + excluded.total_run_count"
    " WHERE beat_entries.last_run_at < excluded.last_run_at"
)
ANCHOR_ENTRY: Final = (
    "INSERT INTO beat_entries (name, last_run_at, total_run_count, fingerprint)"
    " VALUES (?, ?, 0, ?)"
    " ON CONFLICT (name) DO UPDATE SET fingerprint = excluded.fingerprint,"
    " last_run_at = max(beat_entries.last_run_at, excluded.last_run_at)"
    " WHERE beat_entries.fingerprint != excluded.fingerprint"
)
SELECT_ENTRIES: Final = "SELECT name, last_run_at, total_run_count FROM beat_entries"
DELETE_ENTRY: Final = "DELETE FROM beat_entries WHERE name = ?"


class SQLiteStore:
    """The ``ScheduleStore`` of an SQLite database file, created if missing.

    Used by one thread at a time (the beat loop's). ``clock`` gives the time leases are
    measured in; ``timeout`` is how long to wait for another writer.
    """

    def __init__(
        self, path: Path, *, clock: Callable[[], float] = time.time, timeout: float = 10.0
    ) -> None:
        self.path = path
        self.clock = clock
        self.timeout = timeout
        self._connection: sqlite3.Connection | None = None

    @property
    def location(self) -> str:
        return str(self.path)

    def hold_lease(self, owner: str, seconds: float) -> bool:
        now = self.clock()
        with self._errors():
            cursor = self._connect().execute(
                HOLD_LEASE, {"owner": owner, "expires": now + seconds, "now": now}
            )
        return cursor.rowcount == 1

    def release_lease(self, owner: str) -> None:
        with self._errors():
            self._connect().execute(RELEASE_LEASE, (owner,))

    def sync_entries(
        self, fingerprints: Mapping[str, str], now: datetime.datetime
    ) -> dict[str, EntryState]:
        anchor = to_microseconds(now)
        with self._errors(), self._transaction() as connection:
            stored = [name for (name,) in connection.execute("SELECT name FROM beat_entries")]
            connection.executemany(
                DELETE_ENTRY, [(name,) for name in stored if name not in fingerprints]
            )
            connection.executemany(
                ANCHOR_ENTRY,
                [(name, anchor, fingerprint) for name, fingerprint in fingerprints.items()],
            )
            rows = connection.execute(SELECT_ENTRIES).fetchall()
        return {
            name: EntryState(from_microseconds(last_run_at), count)
            for name, last_run_at, count in rows
        }

    def claim_run(self, owner: str, name: str, due: datetime.datetime, counted: bool) -> bool:
        parameters = {
            "name": name,
            "due": to_microseconds(due),
            "count": int(counted),
            "owner": owner,
            "now": self.clock(),
        }
        with self._errors():
            cursor = self._connect().execute(CLAIM_RUN, parameters)
        return cursor.rowcount == 1

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                for statement in SCHEMA:
                    connection.execute(statement)
            except sqlite3.DatabaseError as exc:
                connection.close()
                if isinstance(exc, sqlite3.OperationalError):
                    raise
                raise ImproperlyConfigured(
                    f"{self.path} is not an SQLite database (a Celery beat schedule file?):"
                    " remove it, or give beat another file with -s"
                ) from exc
            self._connection = connection
        return self._connection

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        connection = self._connect()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Report a locked or unreadable file as the store being unavailable."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            self.close()
            raise OperationalError(f"beat state in {self.path}: {exc}") from exc
