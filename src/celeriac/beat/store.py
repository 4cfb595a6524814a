"""Where beat keeps its lease and the last run of each entry, and how the store is chosen
(edge layer).

The contract every store keeps, so that beats sharing one store send each due run once:

- **One leader.** ``hold_lease`` takes the lease if it is free or run out, or renews
  it for its holder, in one atomic step; nobody else gets it until it runs out or is
  released.
- **A run is claimed once.** ``claim_run`` records ``(entry, due time)`` in one atomic
  step that succeeds only while the caller holds the lease and only if the entry's
  recorded last run is earlier than the due time. Two beats that both believe they
  lead (a lease that ran out mid-tick) cannot both claim the same run, so the message
  is sent after a successful claim and never otherwise. A crash between the claim and
  the send loses that one run: at most once, as Celery's beat records a run before
  sending it.
- **Times only move forward.** A recorded last run never goes back, not even when a
  changed schedule is anchored anew.

The store is chosen from the app's URLs, in this order: the broker when it can hold the
state (the embedded SQLite file: tables beside the queues; Redis: keys beside the
streams); else the result backend when it can (Redis, PostgreSQL, SQLite); else a local
SQLite file, ``-s/--schedule`` or ``beat_schedule_filename``. Beats meant to share a
schedule must therefore share a broker or result store; beats with only local files
each keep their own.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    from celeriac.app import Celeriac

__all__ = ["EntryState", "ScheduleStore", "from_microseconds", "open_store", "to_microseconds"]

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
MICROSECOND = datetime.timedelta(microseconds=1)

REDIS_SCHEMES = frozenset({"redis", "rediss", "redis+socket", "sentinel"})
POSTGRES_SCHEMES = frozenset(
    {"postgresql", "postgres", "db+postgresql", "db+postgresql+psycopg", "db+postgresql+psycopg2"}
)
SQLITE_SCHEMES = frozenset({"sqlite", "db+sqlite"})


@dataclass(frozen=True, slots=True)
class EntryState:
    """An entry's recorded past: its last run time (aware, UTC) and how many were sent."""

    last_run_at: datetime.datetime
    total_run_count: int


class ScheduleStore(Protocol):
    """Beat's lease and run records; see the module docstring for what it guarantees.

    Methods raise ``celeriac.exceptions.OperationalError`` when the store cannot be
    reached; beat then stops leading and tries again.
    """

    @property
    def location(self) -> str:
        """Where the state lives, for people (passwords masked)."""
        ...

    def hold_lease(self, owner: str, seconds: float) -> bool:
        """Take or renew the lease for ``seconds``; True if ``owner`` holds it now."""
        ...

    def release_lease(self, owner: str) -> None:
        """Give the lease up if ``owner`` holds it, so another beat takes over at once."""
        ...

    def sync_entries(
        self, fingerprints: Mapping[str, str], now: datetime.datetime
    ) -> dict[str, EntryState]:
        """Make the records match the configured entries and return them.

        An entry without a record, or whose record has another fingerprint (its
        schedule changed), is anchored at ``now``: its first run is the schedule's first
        after now. Records of entries no longer configured are deleted.
        """
        ...

    def claim_run(self, owner: str, name: str, due: datetime.datetime, counted: bool) -> bool:
        """Record ``due`` as entry ``name``'s last run if ``owner`` holds the lease and the
        recorded last run is earlier; ``counted`` adds one to its run count (a run past
        its starting deadline is recorded but not sent, nor counted)."""
        ...

    def close(self) -> None:
        """Close the store's connections."""
        ...


def to_microseconds(moment: datetime.datetime) -> int:
    """``moment`` as whole microseconds since the epoch: exact, and ordered like the times."""
    return (moment - EPOCH) // MICROSECOND


def from_microseconds(microseconds: int) -> datetime.datetime:
    """The aware UTC datetime ``to_microseconds`` was given."""
    return EPOCH + microseconds * MICROSECOND


def open_store(app: Celeriac, schedule_filename: str | None = None) -> ScheduleStore:
    """Open the store the app's URLs call for (see the module docstring)."""
    broker = app.broker_url
    broker_scheme = _scheme(broker)
    if broker_scheme in SQLITE_SCHEMES:
        return _sqlite_store(_database_path(broker))
    if broker_scheme in REDIS_SCHEMES:
        options = dict(app.conf.broker_transport_options)
        return _redis_store(broker, options, str(options.get("global_keyprefix") or ""))
    backend = app.result_backend_url
    backend_scheme = _scheme(backend) if backend else ""
    if backend and backend_scheme in SQLITE_SCHEMES:
        return _sqlite_store(_database_path(backend))
    if backend and backend_scheme in REDIS_SCHEMES:
        options = dict(app.conf.result_backend_transport_options)
        url, url_prefix = _split_keyprefix(backend)
        prefix = options.get("global_keyprefix") or url_prefix
        return _redis_store(url, options, str(prefix))
    if backend and backend_scheme in POSTGRES_SCHEMES:
        from celeriac.beat.postgres_store import PostgresStore

        return PostgresStore(backend)
    return _sqlite_store(Path(schedule_filename or app.conf.beat_schedule_filename).absolute())


def _scheme(url: str) -> str:
    return url.partition("://")[0].strip().lower()


def _split_keyprefix(url: str) -> tuple[str, str]:
    """A Redis result backend URL without its ``global_keyprefix`` query, and that prefix."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((value for name, value in query if name == "global_keyprefix"), None)
    if prefix is None:
        return url, ""
    kept = [(name, value) for name, value in query if name != "global_keyprefix"]
    return urlunsplit(parts._replace(query=urlencode(kept))), prefix


def _database_path(url: str) -> Path:
    """The file of ``sqlite:///relative.db`` or ``sqlite:////absolute.db``."""
    from celeriac.transports.sqlite import database_path

    return database_path(url)


def _sqlite_store(path: Path) -> ScheduleStore:
    from celeriac.beat.sqlite_store import SQLiteStore

    return SQLiteStore(path)


def _redis_store(url: str, options: dict[str, Any], prefix: str) -> ScheduleStore:
    from celeriac.beat.redis_store import RedisStore

    return RedisStore(url, options, prefix=prefix)
