"""Rate-limit start slots on the SQLite broker: one row per task type (edge layer).

Table ``rate_slots`` holds, per task type, the Unix time of its next free start slot and
the spacing it was booked with. Every process that uses the file books in it, inside one
write transaction that reads the clock after taking the write lock, so the slots of all
workers on the machine come from one ordered sequence. ``CREATE_TABLE`` is part of the
broker's schema (``sqlite_database.py``), applied when a process first opens the file.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

from celeriac.transports.base import StartBooking

__all__ = ["book_starts"]

CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS rate_slots"
    " (task TEXT PRIMARY KEY, next_free REAL NOT NULL, interval REAL NOT NULL) WITHOUT ROWID"
)
SELECT_SLOT = "SELECT next_free, interval FROM rate_slots WHERE task = ?"
UPSERT = (
    "INSERT INTO rate_slots (task, next_free, interval) VALUES (?, ?, ?)"
    " ON CONFLICT (task) DO UPDATE SET next_free = excluded.next_free,"
    " interval = excluded.interval"
)


def book_starts(
    transaction: Callable[[], AbstractContextManager[sqlite3.Connection]],
    bookings: Sequence[StartBooking],
    clock: Callable[[], float] = time.time,
) -> list[list[float]]:
    """Book the slots of ``bookings`` in one write ``transaction``; return their delays."""
    if not bookings:
        return []
    booked = []
    with transaction() as connection:
        now = clock()
        for booking in bookings:
            row = connection.execute(SELECT_SLOT, (booking.key,)).fetchone()
            next_free = now if row is None else row[0]
            if row is not None and row[1] != booking.interval:
                # The rate changed: slots booked under the old one do not push the new back.
                next_free = min(next_free, now + booking.interval)
            start = max(now, next_free)
            booked.append([start - now + slot * booking.interval for slot in range(booking.count)])
            next_free = start + booking.count * booking.interval
            connection.execute(UPSERT, (booking.key, next_free, booking.interval))
    return booked
