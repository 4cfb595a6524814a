"""The PostgreSQL result backend (edge layer): ``postgresql://`` and ``db+postgresql://``.

Results live in Celery's database-backend table (wire protocol §7.4), so Celery's
SQLAlchemy backend and this one can share it: ``celery_taskmeta`` with ``id`` from the
sequence ``task_id_sequence``, ``task_id varchar(155) UNIQUE``, ``status varchar(50)``,
``result bytea``, ``date_done timestamp`` (naive UTC), ``traceback text``, ``children
bytea`` and the extended columns ``name``, ``args``, ``kwargs``, ``worker``, ``retries``,
``queue`` (and ``stamps``, which this backend leaves null).

How values are encoded. Up to Celery 5.6 ``result`` was a SQLAlchemy ``PickleType``: a
pickle of the result value, whatever ``result_serializer`` said. Celery 5.7 stores the
result serializer's bytes of the value instead and reads old pickled rows as a fallback.
This backend writes as 5.7 does (serializer bytes of ``result``, and of ``args``,
``kwargs`` and ``children``, which both versions encode so). It reads both: a row that the
serializer cannot decode and that is a pickle is unpickled, but only when ``pickle`` is in
``accept``, so a Celery 5.6 table is read with ``accept_content=["json", "pickle"]``.
Celery 5.6 readers cannot read rows this backend writes.

Saved groups go in Celery's ``celery_tasksetmeta`` (``id`` from ``taskset_id_sequence``,
``taskset_id``, ``result`` as the serializer's bytes of the result tuple, ``date_done``);
they expire, like Celery's rows, ``result_expires`` after ``date_done``. Chord counters
live in the tables of ``chord_table``, in the group table's schema; each report is one
transaction that locks the chord's row.

Past the 400-line soft limit (about 730): the column mapping, the pool and LISTEN/NOTIFY
are one unit, and splitting the pool out would leave a module with a single user; the
chord statements are already apart, in ``chord_table``.

Two columns of our own, which Celery's ORM ignores: ``celeriac_meta`` holds what the
Celery columns cannot (``group_id``, ``parent_id``, stamps, the field list) with the status
it was written with, so a row a Celery worker updated later is read from its columns only;
``celeriac_expires_at`` is when the result expires. They are added to an existing Celery
table at setup when missing.

``store`` is one statement: an upsert that leaves a live SUCCESS alone, followed by a
NOTIFY carrying the task id on a channel named after the table when a ready state was
stored. ``wait`` LISTENs before it reads the row, and reads it again every ``interval``
for writers that do not notify, such as Celery's own backend.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import pickle
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from celeriac import serialization
from celeriac.backends import accepted_content_types
from celeriac.backends.base import (
    CHORD_CLAIM_EXPIRES,
    BackendError,
    ChordPart,
    ChordProgress,
    Meta,
    ResultTuple,
)
from celeriac.backends.chord_table import CHORD_TABLE, PART_TABLE, ChordTables, Execute
from celeriac.exceptions import ContentDisallowed, DecodeError, ImproperlyConfigured, TimeoutError
from celeriac.protocol.result_meta import EXTENDED_FIELDS
from celeriac.states import READY_STATES
from celeriac.transports import redact_url

TASK_TABLE = "celery_taskmeta"
TASK_SEQUENCE = "task_id_sequence"
GROUP_TABLE = "celery_tasksetmeta"
GROUP_SEQUENCE = "taskset_id_sequence"

# SQLAlchemy-style schemes name a driver; psycopg 3 serves them all, psycopg2 URLs too.
_SCHEMES = (
    "postgresql",
    "postgres",
    "db+postgresql",
    "db+postgresql+psycopg",
    "db+postgresql+psycopg2",
)

# The columns besides id, task_id and status that this backend writes, with their types.
_COLUMNS = {
    "result": "bytea",
    "date_done": "timestamp",
    "traceback": "text",
    "children": "bytea",
    "name": "varchar(155)",
    "args": "bytea",
    "kwargs": "bytea",
    "worker": "varchar(155)",
    "retries": "integer",
    "queue": "varchar(155)",
    "stamps": "bytea",
    "celeriac_meta": "bytea",
    "celeriac_expires_at": "timestamptz",
}
_WRITTEN = [name for name in _COLUMNS if name != "stamps"]
_READ = ["task_id", "status", *_WRITTEN[:-1]]

# Meta fields that have a column of their own, apart from date_done (kept as text when it
# does not survive the trip through a timestamp) and the text columns (kept aside when the
# value is not text).
_FIELD_COLUMNS = frozenset({"status", "result", "children", "args", "kwargs", "task_id"})
_TEXT_COLUMNS = ("traceback", "name", "worker", "queue")

_LIVE = sql.SQL("(celeriac_expires_at IS NULL OR celeriac_expires_at > clock_timestamp())")

# A waiter with neither a timeout nor an interval still reads its row again this often.
_LONGEST_WAIT = 60.0

# Ids per SELECT of get_many.
_IDS_PER_QUERY = 5000

# Stands for a meta field that has no column, where None would be a value.
_MISSING = object()

# A group saved at or before this is expired; a NULL result_expires keeps every group.
_GROUP_EXPIRED = sql.SQL(
    "(%(expires)s::float8 IS NOT NULL"
    " AND date_done <= (now() AT TIME ZONE 'UTC') - %(expires)s * interval '1 second')"
)

_Row = tuple[Any, ...]
_T = TypeVar("_T")
Connection = psycopg.Connection[_Row]


class PostgresBackend:
    """Store results in Celery's ``celery_taskmeta`` table of a PostgreSQL database.

    Thread-safe through a small pool: each call borrows an autocommitted connection and
    gives it back, and ``wait`` keeps one for as long as it listens. Fork-safe: a child
    process never touches its parent's connections. Options: ``database_table_names``
    and ``database_table_schemas`` (``{"task": ..., "group": ...}``, as Celery's settings
    of those names), ``database_create_tables_at_setup``, ``connect_timeout`` and
    ``max_idle_connections``; others are ignored, as Celery ignores transport options a
    backend has no use for.
    """

    def __init__(
        self,
        url: str,
        *,
        serializer: str = "json",
        accept: Collection[str] | None = None,
        expires: float | None = 86400.0,
        database_table_names: Mapping[str, str] | None = None,
        database_table_schemas: Mapping[str, str] | None = None,
        database_create_tables_at_setup: bool = True,
        connect_timeout: float = 10.0,
        max_idle_connections: int = 4,
        **options: Any,
    ) -> None:
        self.url = url
        self.serializer = serializer
        self.accept = accepted_content_types(serializer, accept)
        self.expires = expires or None
        self._codec = serialization.get_codec(serializer)
        self._conninfo = connection_url(url)
        self.table_name = (database_table_names or {}).get("task") or TASK_TABLE
        self.schema = (database_table_schemas or {}).get("task")
        self.create_tables = database_create_tables_at_setup
        self.connect_timeout = connect_timeout
        self.max_idle_connections = max_idle_connections
        self._table = sql.Identifier(*filter(None, (self.schema, self.table_name)))
        self._sequence = sql.Identifier(*filter(None, (self.schema, TASK_SEQUENCE)))
        group_schema = (database_table_schemas or {}).get("group")
        group_table = (database_table_names or {}).get("group") or GROUP_TABLE
        self._group_table = sql.Identifier(*filter(None, (group_schema, group_table)))
        self._group_sequence = sql.Identifier(*filter(None, (group_schema, GROUP_SEQUENCE)))
        self._chords = ChordTables(
            sql.Identifier(*filter(None, (group_schema, CHORD_TABLE))).as_string(),
            sql.Identifier(*filter(None, (group_schema, PART_TABLE))).as_string(),
            placeholder="%s",
            blob="bytea",
        )
        self._channel = ""
        self._idle: list[Connection] = []
        self._inherited: list[Connection] = []
        self._start_process()

    def store(self, task_id: str, meta: Meta) -> None:
        """Store ``meta`` as the task's latest state, unless a live SUCCESS is stored."""
        values = self._row_values(meta)
        query = sql.SQL(
            "WITH stored AS ("
            " INSERT INTO {table} AS t (id, task_id, status, {columns})"
            " VALUES (nextval({sequence}), %s, %s, {placeholders},"
            " clock_timestamp() + %s::float8 * interval '1 second')"
            " ON CONFLICT (task_id) DO UPDATE SET status = excluded.status, {updates}"
            " WHERE t.status IS DISTINCT FROM 'SUCCESS'"
            " OR t.celeriac_expires_at <= clock_timestamp()"
            " RETURNING t.task_id)"
            " SELECT pg_notify(%s, task_id) FROM stored WHERE %s"
        ).format(
            table=self._table,
            sequence=sql.Literal(self._sequence.as_string()),
            columns=sql.SQL(", ").join(map(sql.Identifier, _WRITTEN)),
            placeholders=sql.SQL(", ").join(sql.Placeholder() * (len(_WRITTEN) - 1)),
            updates=sql.SQL(", ").join(
                sql.SQL("{0} = excluded.{0}").format(sql.Identifier(name)) for name in _WRITTEN
            ),
        )
        is_ready = meta["status"] in READY_STATES
        self._execute(
            query,
            lambda: (task_id, meta["status"], *values, self.expires, self._channel, is_ready),
        )

    def get(self, task_id: str) -> Meta | None:
        """Return the stored meta, or None if nothing live is stored (PENDING)."""
        rows, _ = self._execute(self._select_one_query(), lambda: (task_id,))
        return self._decode_row(rows[0]) if rows else None

    def get_many(self, task_ids: Iterable[str]) -> dict[str, Meta]:
        """Return the stored meta of each id that has a live one."""
        unique_ids = list(dict.fromkeys(task_ids))
        query = sql.SQL("SELECT {columns} FROM {table} WHERE task_id = ANY(%s) AND {live}").format(
            columns=sql.SQL(", ").join(map(sql.Identifier, _READ)), table=self._table, live=_LIVE
        )
        rows: dict[str, _Row] = {}
        for start in range(0, len(unique_ids), _IDS_PER_QUERY):
            chunk = unique_ids[start : start + _IDS_PER_QUERY]
            found, _ = self._execute(query, lambda chunk=chunk: (chunk,))  # type: ignore[misc]
            rows.update((row[0], row) for row in found)
        return {
            task_id: self._decode_row(rows[task_id]) for task_id in unique_ids if task_id in rows
        }

    def wait(self, task_id: str, timeout: float | None, interval: float) -> Meta:
        """Block until a ready state is stored; the writer's NOTIFY wakes us.

        Raises:
            TimeoutError: no ready state was stored within ``timeout`` seconds.
            BackendError: the database cannot be reached.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        meta = self.get(task_id)
        if meta is not None and meta["status"] in READY_STATES:
            return meta
        while True:
            try:
                return self._wait_listening(task_id, deadline, interval)
            except _ListenerLost:
                # Listen again on a new connection and re-read the row; a database that
                # is really gone fails that connect with BackendError.
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError("The operation timed out.") from None

    def forget(self, task_id: str) -> None:
        """Delete what is stored for the task."""
        query = sql.SQL("DELETE FROM {table} WHERE task_id = %s").format(table=self._table)
        self._execute(query, lambda: (task_id,))

    def cleanup(self) -> int:
        """Delete expired results, saved groups and chord counters; return how many results.

        Rows a Celery worker wrote (no ``celeriac_meta``) expire as Celery's cleanup
        expires them: ``date_done`` older than ``result_expires``.
        """
        query = sql.SQL(
            "DELETE FROM {table} WHERE celeriac_expires_at <= clock_timestamp()"
            " OR (celeriac_meta IS NULL AND %s::float8 IS NOT NULL"
            " AND date_done < (now() AT TIME ZONE 'UTC') - %s * interval '1 second')"
        ).format(table=self._table)
        _, deleted = self._execute(query, lambda: (self.expires, self.expires))
        groups = sql.SQL("DELETE FROM {table} WHERE {expired}").format(
            table=self._group_table, expired=_GROUP_EXPIRED
        )
        _, deleted_groups = self._execute(groups, lambda: {"expires": self.expires})
        now = time.time()
        self._in_transaction(lambda execute: self._chords.delete_expired(execute, now=now))
        return deleted + deleted_groups

    def save_group(self, group_id: str, result: ResultTuple) -> None:
        """Store the group's result tuple in ``celery_tasksetmeta``, replacing any stored."""
        query = sql.SQL(
            "INSERT INTO {table} (id, taskset_id, result, date_done)"
            " VALUES (nextval({sequence}), %s, %s, now() AT TIME ZONE 'UTC')"
            " ON CONFLICT (taskset_id) DO UPDATE"
            " SET result = excluded.result, date_done = excluded.date_done"
        ).format(table=self._group_table, sequence=sql.Literal(self._group_sequence.as_string()))
        self._execute(query, lambda: (group_id, self._encode(result)))

    def restore_group(self, group_id: str) -> ResultTuple | None:
        """Return the group's saved result tuple, or None if none is live."""
        query = sql.SQL(
            "SELECT result FROM {table} WHERE taskset_id = %(group_id)s AND NOT {expired}"
        ).format(table=self._group_table, expired=_GROUP_EXPIRED)
        rows, _ = self._execute(query, lambda: {"group_id": group_id, "expires": self.expires})
        if not rows:
            return None
        result: ResultTuple = self._decode_column(rows[0][0])
        return result

    def delete_group(self, group_id: str) -> None:
        """Delete the group's saved result tuple."""
        query = sql.SQL("DELETE FROM {table} WHERE taskset_id = %s").format(table=self._group_table)
        self._execute(query, lambda: (group_id,))

    def set_chord_size(
        self, group_id: str, size: int, *, claim_expires: float = CHORD_CLAIM_EXPIRES
    ) -> ChordProgress:
        """Set the chord's size; claim the chord if every header task already reported."""
        now = time.time()
        progress = self._in_transaction(
            lambda execute: self._chords.set_size(
                execute,
                group_id,
                size,
                now=now,
                expires_at=self._expires_at(now),
                claim_expires=claim_expires,
            )
        )
        return self._decode_parts(progress)

    def add_to_chord(self, group_id: str, count: int = 1) -> None:
        """Make the chord wait for ``count`` more header results."""
        expires_at = self._expires_at(time.time())
        self._in_transaction(
            lambda execute: self._chords.add(execute, group_id, count, expires_at=expires_at)
        )

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
        part = ChordPart(task_id, group_index, state, self._encode(result))
        now = time.time()
        progress = self._in_transaction(
            lambda execute: self._chords.record_part(
                execute,
                group_id,
                part,
                now=now,
                expires_at=self._expires_at(now),
                claim_expires=claim_expires,
            )
        )
        return self._decode_parts(progress)

    def finish_chord(self, group_id: str, claim: str) -> bool:
        """Drop the chord's parts and counters if ``claim`` still holds it."""
        now = time.time()
        return self._in_transaction(
            lambda execute: self._chords.finish(execute, group_id, claim, now=now)
        )

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
        self._has_table = False

    def _execute(
        self, query: sql.Composed, parameters: Callable[[], Sequence[Any] | Mapping[str, Any]]
    ) -> tuple[list[_Row], int]:
        """Run one statement; return its rows and row count.

        A pooled connection the server has dropped (a restart, an idle timeout) is
        replaced once. ``parameters`` is called once a connection is set up, since the
        NOTIFY channel is known only then.
        """
        for attempt in (1, 2):
            with self._connection() as connection:
                try:
                    cursor = connection.execute(query, parameters())
                except psycopg.OperationalError:
                    if attempt == 2:
                        raise
                    connection.close()
                    continue
                return (cursor.fetchall() if cursor.description else []), cursor.rowcount
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _in_transaction(self, work: Callable[[Execute], _T]) -> _T:
        """Run ``work`` in one transaction; return what it returns.

        A pooled connection found dropped at BEGIN is replaced once, as in ``_execute``;
        past BEGIN nothing is retried, since a commit may have happened.
        """
        for attempt in (1, 2):
            with self._connection() as connection:
                try:
                    connection.execute("BEGIN")
                except psycopg.OperationalError:
                    if attempt == 2:
                        raise
                    connection.close()
                    continue

                def execute(query: str, parameters: Sequence[Any]) -> list[_Row]:
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

    def _expires_at(self, now: float) -> float | None:
        return None if self.expires is None else now + self.expires

    def _decode_parts(self, progress: ChordProgress) -> ChordProgress:
        parts = tuple(
            dataclasses.replace(part, result=self._decode_column(part.result))
            for part in progress.parts
        )
        return dataclasses.replace(progress, parts=parts)

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """Borrow a connection; it goes back to the pool unless it broke."""
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
            self._conninfo, autocommit=True, connect_timeout=max(1, round(self.connect_timeout))
        )
        try:
            with self._lock:
                needs_setup = not self._has_table
            if needs_setup:
                self._set_up(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    def _set_up(self, connection: Connection) -> None:
        """Create the table (or add our columns to Celery's) and find the NOTIFY channel."""
        qualified = self._table.as_string()
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (qualified,))
            if self.create_tables:
                self._create_table(connection)
                self._create_group_tables(connection)
            found = connection.execute("SELECT to_regclass(%s)::oid", (qualified,)).fetchone()
            if found is None or found[0] is None:
                raise ImproperlyConfigured(
                    f"result table {qualified} does not exist and "
                    "database_create_tables_at_setup is off"
                )
        with self._lock:
            self._channel = f"celeriac_results_{found[0]}"
            self._has_table = True

    def _create_group_tables(self, connection: Connection) -> None:
        """Create Celery's group table and the chord counter's tables."""
        connection.execute(
            sql.SQL("CREATE SEQUENCE IF NOT EXISTS {0}").format(self._group_sequence)
        )
        connection.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {table} ("
                " id integer NOT NULL DEFAULT nextval({sequence}) PRIMARY KEY,"
                " taskset_id varchar(155) UNIQUE, result bytea, date_done timestamp)"
            ).format(
                table=self._group_table,
                sequence=sql.Literal(self._group_sequence.as_string()),
            )
        )

        def execute(query: str, parameters: Sequence[Any]) -> list[_Row]:
            connection.execute(query, parameters)
            return []

        self._chords.create(execute)

    def _create_table(self, connection: Connection) -> None:
        connection.execute(sql.SQL("CREATE SEQUENCE IF NOT EXISTS {0}").format(self._sequence))
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind))
            for name, kind in _COLUMNS.items()
        )
        connection.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {table} ("
                " id integer NOT NULL DEFAULT nextval({sequence}) PRIMARY KEY,"
                " task_id varchar(155) UNIQUE, status varchar(50), {columns})"
            ).format(
                table=self._table,
                sequence=sql.Literal(self._sequence.as_string()),
                columns=columns,
            )
        )
        present = {
            name
            for (name,) in connection.execute(
                "SELECT attname FROM pg_attribute"
                " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
                (self._table.as_string(),),
            )
        }
        missing = [name for name in _COLUMNS if name not in present]
        if missing:
            connection.execute(
                sql.SQL("ALTER TABLE {table} {additions}").format(
                    table=self._table,
                    additions=sql.SQL(", ").join(
                        sql.SQL("ADD COLUMN IF NOT EXISTS {} {}").format(
                            sql.Identifier(name), sql.SQL(_COLUMNS[name])
                        )
                        for name in missing
                    ),
                )
            )

    def _wait_listening(self, task_id: str, deadline: float | None, interval: float) -> Meta:
        with self._connection() as connection:
            try:
                connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                return self._read_until_ready(connection, task_id, deadline, interval)
            except psycopg.OperationalError as exc:
                connection.close()
                raise _ListenerLost from exc
            finally:
                if not connection.closed:
                    connection.execute("UNLISTEN *")

    def _read_until_ready(
        self, connection: Connection, task_id: str, deadline: float | None, interval: float
    ) -> Meta:
        while True:
            row = connection.execute(self._select_one_query(), (task_id,)).fetchone()
            meta = None if row is None else self._decode_row(row)
            if meta is not None and meta["status"] in READY_STATES:
                return meta
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError("The operation timed out.")
            for notify in connection.notifies(timeout=_next_wait(remaining, interval)):
                if notify.payload == task_id:
                    break

    def _select_one_query(self) -> sql.Composed:
        return sql.SQL("SELECT {columns} FROM {table} WHERE task_id = %s AND {live}").format(
            columns=sql.SQL(", ").join(map(sql.Identifier, _READ)), table=self._table, live=_LIVE
        )

    def _row_values(self, meta: Meta) -> tuple[Any, ...]:
        """Return the values of the ``_WRITTEN`` columns but the last, for ``meta``."""
        date_done = _parse_date(meta.get("date_done"))
        retries = meta.get("retries")
        column_values: dict[str, Any] = {
            "date_done": date_done,
            "retries": retries if isinstance(retries, int) else None,
        }
        for name in _TEXT_COLUMNS:
            value = meta.get(name)
            column_values[name] = value if isinstance(value, str) else None
        rest: dict[str, Any] = {
            key: value
            for key, value in meta.items()
            if key not in _FIELD_COLUMNS and value != column_values.get(key, _MISSING)
        }
        if date_done is not None and _format_date(date_done) == meta["date_done"]:
            rest.pop("date_done")
        rest["celeriac_fields"] = list(meta)
        rest["celeriac_status"] = meta["status"]
        return (
            self._encode(meta.get("result")),
            date_done,
            column_values["traceback"],
            self._encode(meta.get("children")),
            column_values["name"],
            self._encode(meta.get("args")),
            self._encode(meta.get("kwargs")),
            column_values["worker"],
            column_values["retries"],
            column_values["queue"],
            serialization.dumps(rest, serializer=self.serializer)[2],
        )

    def _decode_row(self, row: _Row) -> Meta:
        (task_id, status, result, date_done, traceback, children, name, args, kwargs) = row[:9]
        worker, retries, queue, extra = row[9:]
        columns: Meta = {
            "status": status,
            "result": self._decode_column(result),
            "traceback": traceback,
            "children": self._decode_column(children) if children is not None else [],
            "date_done": None if date_done is None else _format_date(date_done),
            "name": name,
            "args": self._decode_column(args),
            "kwargs": self._decode_column(kwargs),
            "worker": worker,
            "retries": retries,
            "queue": queue,
            "task_id": task_id,
        }
        rest: Meta = {} if extra is None else self._decode_column(extra)
        if rest.get("celeriac_status") != status:
            # Written by Celery, or updated by a Celery worker after us.
            extended = any(columns[field] is not None for field in EXTENDED_FIELDS)
            return {
                key: value
                for key, value in columns.items()
                if extended or key not in EXTENDED_FIELDS
            }
        fields: list[str] = rest.pop("celeriac_fields")
        rest.pop("celeriac_status")
        merged = columns | rest
        return {field: merged[field] for field in fields}

    def _encode(self, value: Any) -> bytes | None:
        return None if value is None else serialization.dumps(value, serializer=self.serializer)[2]

    def _decode_column(self, data: bytes | None) -> Any:
        if data is None:
            return None
        data = bytes(data)
        codec = self._codec
        try:
            return serialization.loads(
                data, codec.content_type, codec.content_encoding, accept=self.accept
            )
        except ContentDisallowed:
            raise
        except DecodeError:
            if not data.startswith(b"\x80"):
                raise
        # A pickle that Celery 5.6's PickleType column wrote (see the module docstring).
        if not self.accept & {"pickle", "application/x-python-serialize"}:
            raise ContentDisallowed(
                "refusing to unpickle a result written by Celery 5.6 or older: "
                "add 'pickle' to accept_content to read such rows"
            )
        return pickle.loads(data)

    @contextmanager
    def _errors_as_backend_error(self) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as exc:
            raise BackendError(f"PostgreSQL result store {redact_url(self.url)}: {exc}") from exc


def connection_url(url: str) -> str:
    """Return the libpq URL for a ``postgresql://`` or ``db+postgresql[+driver]://`` URL.

    Raises:
        ImproperlyConfigured: the scheme is not one of PostgreSQL's.
    """
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower() not in _SCHEMES:
        raise ImproperlyConfigured(f"not a PostgreSQL URL: {redact_url(url)!r}")
    return f"postgresql://{rest}"


class _ListenerLost(Exception):
    """The connection ``wait`` listened on broke; listening starts again on a new one."""


def _is_in_transaction(connection: Connection) -> bool:
    status = connection.info.transaction_status
    in_transaction = (psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.INERROR)
    return not connection.closed and status in in_transaction


def _parse_date(value: Any) -> datetime.datetime | None:
    """Return ``value`` as a naive UTC datetime, as Celery's ``date_done`` column holds it."""
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime.datetime):
        return None
    if value.tzinfo is None:
        return value
    return value.astimezone(datetime.UTC).replace(tzinfo=None)


def _format_date(value: datetime.datetime) -> str:
    return value.replace(tzinfo=datetime.UTC).isoformat()


def _next_wait(remaining: float | None, interval: float) -> float:
    if interval <= 0:
        return remaining if remaining is not None else _LONGEST_WAIT
    return interval if remaining is None else min(remaining, interval)
