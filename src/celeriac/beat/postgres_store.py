"""Beat's state in the PostgreSQL result store, for brokers that cannot hold it (edge layer).

Two tables in the connection's schema (its ``search_path``)::

    celeriac_beat_lease     one row: owner, expires (timestamptz, the server's clock)
    celeriac_beat_entries   name, last_run_at (timestamptz), total_run_count, fingerprint

The lease is one upsert that takes a free or run-out lease, or renews the caller's.
``claim_run`` is one statement: it reads the lease row ``FOR SHARE`` (so the lease
cannot change hands until the claim commits) and upserts the run only over an earlier
one. The tables are created under a transaction-scoped advisory lock, so beats starting
together do not race to create them.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

import psycopg

from celeriac.backends.postgres import connection_url
from celeriac.beat.store import EntryState
from celeriac.exceptions import OperationalError
from celeriac.transports import redact_url

__all__ = ["PostgresStore"]

Connection = psycopg.Connection[tuple[Any, ...]]

# pg_advisory_xact_lock key held while the tables are created ("beat" in ASCII).
SETUP_LOCK: Final = 0x62656174
SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS celeriac_beat_lease ("
    " id integer PRIMARY KEY CHECK (id = 1),"
    " owner text NOT NULL,"
    " expires timestamptz NOT NULL)",
    "CREATE TABLE IF NOT EXISTS celeriac_beat_entries ("
    " name text PRIMARY KEY,"
    " last_run_at timestamptz NOT NULL,"
    " total_run_count bigint NOT NULL,"
    " fingerprint text NOT NULL)",
)
HOLD_LEASE: Final = (
    "INSERT INTO celeriac_beat_lease AS lease (id, owner, expires)"
    " VALUES (1, %(owner)s, clock_timestamp() + %(seconds)s * interval '1 second')"
    " ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, expires = excluded.expires"
    " WHERE lease.owner = excluded.owner OR lease.expires < clock_timestamp()"
    " RETURNING 1"
)
RELEASE_LEASE: Final = "DELETE FROM celeriac_beat_lease WHERE id = 1 AND owner = %s"
CLAIM_RUN: Final = (
    "WITH lease AS ("
    " SELECT 1 FROM celeriac_beat_lease"
    " WHERE id = 1 AND owner = %(owner)s AND expires >= clock_timestamp() FOR SHARE)"
    " INSERT INTO celeriac_beat_entries AS entry"
    " (name, last_run_at, total_run_count, fingerprint)"
    " SELECT %(name)s, %(due)s, %(count)s, '' FROM lease"
    " ON CONFLICT (name) DO UPDATE SET last_run_at = excluded.last_run_at,"
    " total_run_count = entry.total_run_count + excluded.total_run_count"
    " WHERE entry.last_run_at < excluded.last_run_at"
    " RETURNING 1"
)
DELETE_OTHER_ENTRIES: Final = "DELETE FROM celeriac_beat_entries WHERE NOT (name = ANY(%s))"
ANCHOR_ENTRY: Final = (
    "INSERT INTO celeriac_beat_entries AS entry"
    " (name, last_run_at, total_run_count, fingerprint) VALUES (%s, %s, 0, %s)"
    " ON CONFLICT (name) DO UPDATE SET fingerprint = excluded.fingerprint,"
    " last_run_at = GREATEST(entry.last_run_at, excluded.last_run_at)"
    " WHERE entry.fingerprint <> excluded.fingerprint"
)
SELECT_ENTRIES: Final = "SELECT name, last_run_at, total_run_count FROM celeriac_beat_entries"


class PostgresStore:
    """The ``ScheduleStore`` of a PostgreSQL database at ``url`` (a result backend URL).

    One autocommitted connection, used by one thread at a time, opened on first use and
    again after it breaks.
    """

    def __init__(self, url: str, *, connect_timeout: int = 10) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self._conninfo = connection_url(url)
        self._connection: Connection | None = None

    @property
    def location(self) -> str:
        return redact_url(self.url)

    def hold_lease(self, owner: str, seconds: float) -> bool:
        with self._errors() as connection:
            rows = connection.execute(HOLD_LEASE, {"owner": owner, "seconds": seconds})
            return rows.fetchone() is not None

    def release_lease(self, owner: str) -> None:
        with self._errors() as connection:
            connection.execute(RELEASE_LEASE, (owner,))

    def sync_entries(
        self, fingerprints: Mapping[str, str], now: datetime.datetime
    ) -> dict[str, EntryState]:
        with self._errors() as connection, connection.transaction():
            connection.execute(DELETE_OTHER_ENTRIES, (list(fingerprints),))
            with connection.cursor() as cursor:
                cursor.executemany(
                    ANCHOR_ENTRY,
                    [(name, now, fingerprint) for name, fingerprint in fingerprints.items()],
                )
            rows = connection.execute(SELECT_ENTRIES).fetchall()
        return {
            name: EntryState(last_run_at.astimezone(datetime.UTC), count)
            for name, last_run_at, count in rows
        }

    def claim_run(self, owner: str, name: str, due: datetime.datetime, counted: bool) -> bool:
        parameters = {"owner": owner, "name": name, "due": due, "count": int(counted)}
        with self._errors() as connection:
            return connection.execute(CLAIM_RUN, parameters).fetchone() is not None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connect(self) -> Connection:
        if self._connection is None or self._connection.closed:
            connection: Connection = psycopg.connect(
                self._conninfo, autocommit=True, connect_timeout=self.connect_timeout
            )
            with connection.transaction():
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (SETUP_LOCK,))
                for statement in SCHEMA:
                    connection.execute(statement)
            self._connection = connection
        return self._connection

    @contextmanager
    def _errors(self) -> Iterator[Connection]:
        """Lend the connection; report a lost server as the store being unavailable."""
        try:
            yield self._connect()
        except psycopg.OperationalError as exc:
            self.close()
            raise OperationalError(f"beat state in {redact_url(self.url)}: {exc}") from exc
