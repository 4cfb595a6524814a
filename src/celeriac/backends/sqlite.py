"""The SQLite result backend (edge layer): the result store of the embedded default.

``sqlite:///relative.db`` or ``sqlite:////absolute.db`` (``db+sqlite://`` too). The file may
be the one the SQLite transport uses: this backend keeps to its own table, runs in WAL mode
with a busy timeout, and gives each thread its own connection, none of which crosses a
fork (``ThreadConnections``).
Waiters sleep on a cross-process ``Wakeup`` that ``store`` pokes after each ready state,
in a directory beside the database file and distinct from the transport's.

Saved groups go in Celery's ``celery_tasksetmeta`` table layout (wire protocol §7.4), with
``date_done`` as SQLAlchemy writes a SQLite ``DATETIME``. Chord counters live in the tables
of ``chord_table``, changed in ``BEGIN IMMEDIATE`` transactions.
"""

from __future__ import annotations

import datetime
import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from celeriac import serialization
from celeriac.backends import accepted_content_types
from celeriac.backends.base import (
    CHORD_CLAIM_EXPIRES,
    BackendError,
    ChordPart,
    ChordProgress,
    Meta,
    ResultTuple,
    next_wait,
)
from celeriac.backends.chord_table import (
    CHORD_TABLE,
    PART_TABLE,
    ChordTables,
    Execute,
    decode_parts,
)
from celeriac.exceptions import ImproperlyConfigured, TimeoutError
from celeriac.states import READY_STATES
from celeriac.transports.sqlite_connection import ThreadConnections, immediate_transaction
from celeriac.transports.wakeup import Wakeup

TABLE = "celeriac_taskmeta"
GROUP_TABLE = "celery_tasksetmeta"
WAKE_SUFFIX = ".results.wake"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    task_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    meta BLOB NOT NULL,
    content_type TEXT NOT NULL,
    content_encoding TEXT NOT NULL,
    date_done REAL NOT NULL,
    expires_at REAL
)
"""

# A stored SUCCESS is final (wire protocol §7.1), unless it has expired and so reads as
# missing. Checking in the statement itself keeps concurrent writers from racing.
_UPSERT = f"""
INSERT INTO {TABLE} (task_id, status, meta, content_type, content_encoding, date_done, expires_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (task_id) DO UPDATE SET
    status = excluded.status,
    meta = excluded.meta,
    content_type = excluded.content_type,
    content_encoding = excluded.content_encoding,
    date_done = excluded.date_done,
    expires_at = excluded.expires_at
WHERE {TABLE}.status != 'SUCCESS' OR {TABLE}.expires_at <= excluded.date_done
"""

_GROUP_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {GROUP_TABLE} (
    id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    taskset_id VARCHAR(155) UNIQUE,
    result BLOB,
    date_done DATETIME
)
"""
_SAVE_GROUP = f"""
INSERT INTO {GROUP_TABLE} (taskset_id, result, date_done) VALUES (?, ?, ?)
ON CONFLICT (taskset_id) DO UPDATE SET result = excluded.result, date_done = excluded.date_done
"""
# A NULL cut-off (no result_expires) keeps every group.
_RESTORE_GROUP = f"""
SELECT result FROM {GROUP_TABLE} WHERE taskset_id = :group_id
AND (:cutoff IS NULL OR date_done > :cutoff)
"""
_DELETE_GROUP = f"DELETE FROM {GROUP_TABLE} WHERE taskset_id = ?"
_DELETE_EXPIRED_GROUPS = f"DELETE FROM {GROUP_TABLE} WHERE date_done <= ?"

# How SQLAlchemy stores a DateTime in SQLite; the fixed width makes text order time order.
_DATE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

_LIVE = "(expires_at IS NULL OR expires_at > ?)"
_SELECT = f"SELECT task_id, status, meta, content_type, content_encoding FROM {TABLE}"
_SELECT_ONE = f"{_SELECT} WHERE task_id = ? AND {_LIVE}"
_DELETE_ONE = f"DELETE FROM {TABLE} WHERE task_id = ?"
_DELETE_EXPIRED = f"DELETE FROM {TABLE} WHERE expires_at <= ?"

# SQLite builds before 3.32 allow at most 999 parameters in one statement.
_IDS_PER_QUERY = 900


_Row = tuple[str, str, bytes, str, str]


class SQLiteBackend:
    """Store results in a table of a SQLite file shared by every process on the host.

    Thread-safe (a connection per thread) and fork-safe (connections are closed before
    any fork; parent and child open new ones on first use). Each call is one
    autocommitted statement. With no ``accept``, only the backend's own serializer is
    read back. Options other than ``busy_timeout`` (seconds a writer waits for the file
    lock) are accepted and ignored, as Celery ignores transport options a backend has
    no use for.
    """

    def __init__(
        self,
        url: str,
        *,
        serializer: str = "json",
        accept: Collection[str] | None = None,
        expires: float | None = 86400.0,
        busy_timeout: float = 30.0,
        **options: Any,
    ) -> None:
        self.url = url
        self.path = database_path(url)
        self.serializer = serializer
        self.accept = accepted_content_types(serializer, accept)
        self.expires = expires or None
        self.busy_timeout = busy_timeout
        self._wakeup = Wakeup(Path(f"{self.path}{WAKE_SUFFIX}"))
        self._chords = ChordTables(
            CHORD_TABLE, PART_TABLE, placeholder="?", blob="BLOB", dialect="sqlite"
        )
        self._schema_lock = threading.Lock()  # taken only while opening, never across a fork
        self._has_schema = False
        self._connections = ThreadConnections(self._connect)

    def store(self, task_id: str, meta: Meta) -> None:
        """Store ``meta`` as the task's latest state, unless SUCCESS is already stored."""
        content_type, content_encoding, body = serialization.dumps(meta, serializer=self.serializer)
        status = meta["status"]
        now = time.time()
        expires_at = None if self.expires is None else now + self.expires
        parameters = (task_id, status, body, content_type, content_encoding, now, expires_at)
        with self._connection() as connection:
            changed = connection.execute(_UPSERT, parameters).rowcount
        if changed and status in READY_STATES:
            self._wakeup.notify()

    def get(self, task_id: str) -> Meta | None:
        """Return the stored meta, or None if nothing live is stored (PENDING)."""
        row = self._select_one(task_id)
        return None if row is None else self._decode(row)

    def get_many(self, task_ids: Iterable[str]) -> dict[str, Meta]:
        """Return the stored meta of each id that has a live one, in one query per 900 ids."""
        unique_ids = list(dict.fromkeys(task_ids))
        rows: dict[str, _Row] = {}
        for start in range(0, len(unique_ids), _IDS_PER_QUERY):
            for row in self._select_many(unique_ids[start : start + _IDS_PER_QUERY]):
                rows[row[0]] = row
        return {task_id: self._decode(rows[task_id]) for task_id in unique_ids if task_id in rows}

    def wait(self, task_id: str, timeout: float | None, interval: float) -> Meta:
        """Block until a ready state is stored; ``store`` wakes us at once, from any process.

        The row is also read again every ``interval`` seconds in case a writer that does
        not notify (another tool, a removed wake directory) stored it.

        Raises:
            TimeoutError: no ready state was stored within ``timeout`` seconds.
            BackendError: the database or the wake directory cannot be used.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            listener = self._wakeup.listen()
        except OSError as exc:
            raise BackendError(f"SQLite result store {self.path}: cannot wait: {exc}") from exc
        try:
            while True:
                row = self._select_one(task_id)
                if row is not None and row[1] in READY_STATES:
                    return self._decode(row)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("The operation timed out.")
                listener.wait(next_wait(remaining, interval))
        finally:
            listener.close()

    def forget(self, task_id: str) -> None:
        """Delete what is stored for the task."""
        with self._connection() as connection:
            connection.execute(_DELETE_ONE, (task_id,))

    def cleanup(self) -> int:
        """Delete expired results, saved groups and chord counters; return how many results."""
        now = time.time()
        with self._transaction() as execute:
            self._chords.delete_expired(execute, now=now)
        with self._connection() as connection:
            deleted: int = connection.execute(_DELETE_EXPIRED, (now,)).rowcount
            if self.expires is not None:
                cutoff = _format_date(now - self.expires)
                deleted += connection.execute(_DELETE_EXPIRED_GROUPS, (cutoff,)).rowcount
        return deleted

    def save_group(self, group_id: str, result: ResultTuple) -> None:
        """Store the group's result tuple in ``celery_tasksetmeta``, replacing any stored."""
        body = serialization.dumps(result, serializer=self.serializer)[2]
        with self._connection() as connection:
            connection.execute(_SAVE_GROUP, (group_id, body, _format_date(time.time())))

    def restore_group(self, group_id: str) -> ResultTuple | None:
        """Return the group's saved result tuple, or None if none is live."""
        cutoff = None if self.expires is None else _format_date(time.time() - self.expires)
        with self._connection() as connection:
            parameters = {"group_id": group_id, "cutoff": cutoff}
            row = connection.execute(_RESTORE_GROUP, parameters).fetchone()
        if row is None:
            return None
        result: ResultTuple = self._decode_value(row[0])
        return result

    def delete_group(self, group_id: str) -> None:
        """Delete the group's saved result tuple."""
        with self._connection() as connection:
            connection.execute(_DELETE_GROUP, (group_id,))

    def set_chord_size(
        self, group_id: str, size: int, *, claim_expires: float = CHORD_CLAIM_EXPIRES
    ) -> ChordProgress:
        """Set the chord's size; claim the chord if every header task already reported."""
        now = time.time()
        with self._transaction() as execute:
            progress = self._chords.set_size(
                execute,
                group_id,
                size,
                now=now,
                expires_at=self._expires_at(now),
                claim_expires=claim_expires,
            )
        return decode_parts(progress, self._decode_value)

    def add_to_chord(self, group_id: str, count: int = 1) -> None:
        """Make the chord wait for ``count`` more header results."""
        with self._transaction() as execute:
            self._chords.add(execute, group_id, count, expires_at=self._expires_at(time.time()))

    def chord_part_done(
        self,
        group_id: str,
        task_id: str,
        group_index: int | None,
        state: str,
        result: Any,
        *,
        claim_expires: float = CHORD_CLAIM_EXPIRES,
    ) -> ChordProgress:
        """Record a finished header task; claim the chord if this completes it."""
        body = serialization.dumps(result, serializer=self.serializer)[2]
        now = time.time()
        with self._transaction() as execute:
            progress = self._chords.record_part(
                execute,
                group_id,
                ChordPart(task_id, group_index, state, body),
                now=now,
                expires_at=self._expires_at(now),
                claim_expires=claim_expires,
            )
        return decode_parts(progress, self._decode_value)

    def finish_chord(self, group_id: str, claim: str) -> bool:
        """Drop the chord's parts and counters if ``claim`` still holds it."""
        with self._transaction() as execute:
            return self._chords.finish(execute, group_id, claim, now=time.time())

    def close(self) -> None:
        """Close every thread's connection; a later call opens new ones."""
        self._connections.close()

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """Lend this thread's connection; SQLite errors become BackendError."""
        with self._errors_as_backend_error(), self._connections.lend() as connection:
            yield connection

    def _connect(self) -> sqlite3.Connection:
        # Autocommit: every statement is its own transaction, so no lock is held between
        # calls. check_same_thread is off only so that close() and a fork can close all
        # of them from one thread.
        connection = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            self._prepare(connection)
        except sqlite3.Error:
            connection.close()
            raise
        return connection

    def _prepare(self, connection: sqlite3.Connection) -> None:
        connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        with self._schema_lock:
            if not self._has_schema:
                connection.execute(_SCHEMA)
                connection.execute(_GROUP_SCHEMA)
                self._chords.create(
                    lambda query, parameters: connection.execute(query, parameters).fetchall()
                )
                self._has_schema = True

    def _select_one(self, task_id: str) -> _Row | None:
        with self._connection() as connection:
            row: _Row | None = connection.execute(_SELECT_ONE, (task_id, time.time())).fetchone()
        return row

    def _select_many(self, task_ids: Sequence[str]) -> list[_Row]:
        placeholders = ", ".join("?" * len(task_ids))
        query = f"{_SELECT} WHERE task_id IN ({placeholders}) AND {_LIVE}"
        with self._connection() as connection:
            rows: list[_Row] = connection.execute(query, (*task_ids, time.time())).fetchall()
        return rows

    @contextmanager
    def _transaction(self) -> Iterator[Execute]:
        """Run statements in one ``BEGIN IMMEDIATE`` transaction, which takes the write lock.

        Taking the lock at BEGIN, not at the first write, means no two transactions can
        both read a chord and then both write it.
        """
        with self._connection() as connection, immediate_transaction(connection):

            def execute(query: str, parameters: Sequence[Any]) -> list[tuple[Any, ...]]:
                return connection.execute(query, parameters).fetchall()

            yield execute

    def _expires_at(self, now: float) -> float | None:
        return None if self.expires is None else now + self.expires

    def _decode_value(self, body: bytes) -> Any:
        codec = serialization.get_codec(self.serializer)
        return serialization.loads(
            body, codec.content_type, codec.content_encoding, accept=self.accept
        )

    def _decode(self, row: _Row) -> Meta:
        _, _, body, content_type, content_encoding = row
        meta: Meta = serialization.loads(body, content_type, content_encoding, accept=self.accept)
        return meta

    @contextmanager
    def _errors_as_backend_error(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise BackendError(f"SQLite result store {self.path}: {exc}") from exc


def database_path(url: str) -> str:
    """Return the absolute file path a ``sqlite:///relative.db`` or ``sqlite:////abs.db`` names.

    Raises:
        ImproperlyConfigured: the URL names no file (in-memory databases cannot be shared).
    """
    _, separator, rest = url.partition("://")
    path = rest.partition("?")[0]
    if not separator or not path.startswith("/") or path[1:] in ("", ":memory:"):
        raise ImproperlyConfigured(
            f"SQLite result backend URL {url!r} names no file: "
            "use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    return os.path.abspath(path[1:])


def _format_date(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.strftime(_DATE_FORMAT)
