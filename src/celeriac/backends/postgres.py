"""The PostgreSQL result backend (edge layer): ``postgresql://`` and ``db+postgresql://``.

Results live in Celery's database-backend table (wire protocol §7.4), so Celery's
SQLAlchemy backend and this one can share it: ``postgres_schema`` creates the tables and
``postgres_rows`` maps metas onto Celery's columns, in Celery 5.7's encoding (Celery 5.6's
pickled rows are read too). ``postgres_pool`` lends the connections. This module holds the
statements of the ``ResultBackend`` methods and the LISTEN/NOTIFY wait.

Saved groups go in Celery's ``celery_tasksetmeta`` (``taskset_id``, ``result`` as the
serializer's bytes of the result tuple, ``date_done``); they expire, like Celery's rows,
``result_expires`` after ``date_done``. Chord counters live in the tables of
``chord_table``, in the group table's schema; each report is one transaction that locks
the chord's row.

``store`` is one statement: an upsert that leaves a live SUCCESS alone, followed by a
NOTIFY carrying the task id on a channel named after the table when a ready state was
stored. ``wait`` LISTENs before it reads the row, and reads it again every ``interval``
for writers that do not notify, such as Celery's own backend.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import psycopg
from psycopg import sql

from celeriac.backends import accepted_content_types
from celeriac.backends.base import (
    CHORD_CLAIM_EXPIRES,
    ChordPart,
    ChordProgress,
    Meta,
    ResultTuple,
    next_wait,
)
from celeriac.backends.chord_table import decode_parts
from celeriac.backends.postgres_pool import Connection, ConnectionPool, Row
from celeriac.backends.postgres_rows import READ, WRITTEN, RowCodec
from celeriac.backends.postgres_schema import TASK_TABLE, Tables, set_up
from celeriac.exceptions import ImproperlyConfigured, TimeoutError
from celeriac.states import READY_STATES
from celeriac.transports import redact_url

# SQLAlchemy-style schemes name a driver; psycopg 3 serves them all, psycopg2 URLs too.
_SCHEMES = (
    "postgresql",
    "postgres",
    "db+postgresql",
    "db+postgresql+psycopg",
    "db+postgresql+psycopg2",
)

_LIVE = sql.SQL("(celeriac_expires_at IS NULL OR celeriac_expires_at > clock_timestamp())")


# Ids per SELECT of get_many.
_IDS_PER_QUERY = 5000

# A group saved at or before this is expired; a NULL result_expires keeps every group.
_GROUP_EXPIRED = sql.SQL(
    "(%(expires)s::float8 IS NOT NULL"
    " AND date_done <= (now() AT TIME ZONE 'UTC') - %(expires)s * interval '1 second')"
)


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
        self._rows = RowCodec(serializer, self.accept)
        conninfo = connection_url(url)
        self.table_name = (database_table_names or {}).get("task") or TASK_TABLE
        self.schema = (database_table_schemas or {}).get("task")
        self.create_tables = database_create_tables_at_setup
        self._tables = Tables.from_settings(database_table_names, database_table_schemas)
        self._channel = ""
        self._pool = ConnectionPool(
            conninfo,
            url=url,
            prepare=self._set_up,
            connect_timeout=connect_timeout,
            max_idle_connections=max_idle_connections,
        )

    def store(self, task_id: str, meta: Meta) -> None:
        """Store ``meta`` as the task's latest state, unless a live SUCCESS is stored."""
        values = self._rows.values(meta)
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
            table=self._tables.task,
            sequence=sql.Literal(self._tables.task_sequence.as_string()),
            columns=sql.SQL(", ").join(map(sql.Identifier, WRITTEN)),
            placeholders=sql.SQL(", ").join(sql.Placeholder() * (len(WRITTEN) - 1)),
            updates=sql.SQL(", ").join(
                sql.SQL("{0} = excluded.{0}").format(sql.Identifier(name)) for name in WRITTEN
            ),
        )
        is_ready = meta["status"] in READY_STATES
        self._pool.execute(
            query,
            lambda: (task_id, meta["status"], *values, self.expires, self._channel, is_ready),
        )

    def get(self, task_id: str) -> Meta | None:
        """Return the stored meta, or None if nothing live is stored (PENDING)."""
        rows, _ = self._pool.execute(self._select_one_query(), lambda: (task_id,))
        return self._rows.decode_row(rows[0]) if rows else None

    def get_many(self, task_ids: Iterable[str]) -> dict[str, Meta]:
        """Return the stored meta of each id that has a live one."""
        unique_ids = list(dict.fromkeys(task_ids))
        query = sql.SQL("SELECT {columns} FROM {table} WHERE task_id = ANY(%s) AND {live}").format(
            columns=sql.SQL(", ").join(map(sql.Identifier, READ)),
            table=self._tables.task,
            live=_LIVE,
        )
        rows: dict[str, Row] = {}
        for start in range(0, len(unique_ids), _IDS_PER_QUERY):
            chunk = unique_ids[start : start + _IDS_PER_QUERY]
            found, _ = self._pool.execute(query, lambda chunk=chunk: (chunk,))  # type: ignore[misc]
            rows.update((row[0], row) for row in found)
        return {
            task_id: self._rows.decode_row(rows[task_id])
            for task_id in unique_ids
            if task_id in rows
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
        query = sql.SQL("DELETE FROM {table} WHERE task_id = %s").format(table=self._tables.task)
        self._pool.execute(query, lambda: (task_id,))

    def cleanup(self) -> int:
        """Delete expired results, saved groups and chord counters; return how many results.

        Rows a Celery worker wrote (no ``celeriac_meta``) expire as Celery's cleanup
        expires them: ``date_done`` older than ``result_expires``.
        """
        query = sql.SQL(
            "DELETE FROM {table} WHERE celeriac_expires_at <= clock_timestamp()"
            " OR (celeriac_meta IS NULL AND %s::float8 IS NOT NULL"
            " AND date_done < (now() AT TIME ZONE 'UTC') - %s * interval '1 second')"
        ).format(table=self._tables.task)
        _, deleted = self._pool.execute(query, lambda: (self.expires, self.expires))
        groups = sql.SQL("DELETE FROM {table} WHERE {expired}").format(
            table=self._tables.group, expired=_GROUP_EXPIRED
        )
        _, deleted_groups = self._pool.execute(groups, lambda: {"expires": self.expires})
        now = time.time()
        self._pool.in_transaction(
            lambda execute: self._tables.chords.delete_expired(execute, now=now)
        )
        return deleted + deleted_groups

    def save_group(self, group_id: str, result: ResultTuple) -> None:
        """Store the group's result tuple in ``celery_tasksetmeta``, replacing any stored."""
        query = sql.SQL(
            "INSERT INTO {table} (id, taskset_id, result, date_done)"
            " VALUES (nextval({sequence}), %s, %s, now() AT TIME ZONE 'UTC')"
            " ON CONFLICT (taskset_id) DO UPDATE"
            " SET result = excluded.result, date_done = excluded.date_done"
        ).format(
            table=self._tables.group, sequence=sql.Literal(self._tables.group_sequence.as_string())
        )
        self._pool.execute(query, lambda: (group_id, self._rows.encode(result)))

    def restore_group(self, group_id: str) -> ResultTuple | None:
        """Return the group's saved result tuple, or None if none is live."""
        query = sql.SQL(
            "SELECT result FROM {table} WHERE taskset_id = %(group_id)s AND NOT {expired}"
        ).format(table=self._tables.group, expired=_GROUP_EXPIRED)
        rows, _ = self._pool.execute(query, lambda: {"group_id": group_id, "expires": self.expires})
        if not rows:
            return None
        result: ResultTuple = self._rows.decode(rows[0][0])
        return result

    def delete_group(self, group_id: str) -> None:
        """Delete the group's saved result tuple."""
        query = sql.SQL("DELETE FROM {table} WHERE taskset_id = %s").format(
            table=self._tables.group
        )
        self._pool.execute(query, lambda: (group_id,))

    def set_chord_size(
        self, group_id: str, size: int, *, claim_expires: float = CHORD_CLAIM_EXPIRES
    ) -> ChordProgress:
        """Set the chord's size; claim the chord if every header task already reported."""
        now = time.time()
        progress = self._pool.in_transaction(
            lambda execute: self._tables.chords.set_size(
                execute,
                group_id,
                size,
                now=now,
                expires_at=self._expires_at(now),
                claim_expires=claim_expires,
            )
        )
        return decode_parts(progress, self._rows.decode)

    def add_to_chord(self, group_id: str, count: int = 1) -> None:
        """Make the chord wait for ``count`` more header results."""
        expires_at = self._expires_at(time.time())
        self._pool.in_transaction(
            lambda execute: self._tables.chords.add(execute, group_id, count, expires_at=expires_at)
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
        part = ChordPart(task_id, group_index, state, self._rows.encode(result))
        now = time.time()
        progress = self._pool.in_transaction(
            lambda execute: self._tables.chords.record_part(
                execute,
                group_id,
                part,
                now=now,
                expires_at=self._expires_at(now),
                claim_expires=claim_expires,
            )
        )
        return decode_parts(progress, self._rows.decode)

    def finish_chord(self, group_id: str, claim: str) -> bool:
        """Drop the chord's parts and counters if ``claim`` still holds it."""
        now = time.time()
        return self._pool.in_transaction(
            lambda execute: self._tables.chords.finish(execute, group_id, claim, now=now)
        )

    def close(self) -> None:
        """Close the idle connections; a later call opens new ones."""
        self._pool.close()

    def _set_up(self, connection: Connection) -> None:
        """Create the tables (or add our columns to Celery's) and find the NOTIFY channel."""
        oid = set_up(connection, self._tables, create_tables=self.create_tables)
        self._channel = f"celeriac_results_{oid}"

    def _expires_at(self, now: float) -> float | None:
        return None if self.expires is None else now + self.expires

    def _wait_listening(self, task_id: str, deadline: float | None, interval: float) -> Meta:
        with self._pool.connection() as connection:
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
            meta = None if row is None else self._rows.decode_row(row)
            if meta is not None and meta["status"] in READY_STATES:
                return meta
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError("The operation timed out.")
            for notify in connection.notifies(timeout=next_wait(remaining, interval)):
                if notify.payload == task_id:
                    break

    def _select_one_query(self) -> sql.Composed:
        return sql.SQL("SELECT {columns} FROM {table} WHERE task_id = %s AND {live}").format(
            columns=sql.SQL(", ").join(map(sql.Identifier, READ)),
            table=self._tables.task,
            live=_LIVE,
        )


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
