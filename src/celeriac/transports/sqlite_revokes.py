"""The SQLite broker's table of revoked task ids (edge layer, beside ``sqlite.py``).

Table ``revokes`` holds one row per revoked id with the Unix time it expires; revoking an
id again keeps the later expiry. Expired rows are deleted whenever a revoke is recorded
and are never returned. ``CREATE_TABLE`` is part of the broker's schema
(``sqlite_database.py``), which every process applies when it first opens the file, so a
file made before the table existed gains it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

__all__ = ["read_revokes", "record_revokes"]

CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS revokes (task_id TEXT PRIMARY KEY, expires REAL NOT NULL)"
    " WITHOUT ROWID"
)
DELETE_EXPIRED = "DELETE FROM revokes WHERE expires <= ?"
UPSERT = (
    "INSERT INTO revokes (task_id, expires) VALUES (?, ?)"
    " ON CONFLICT (task_id) DO UPDATE SET expires = MAX(expires, excluded.expires)"
)
SELECT_KEPT = "SELECT task_id, expires FROM revokes WHERE expires > ?"


def record_revokes(
    connection: sqlite3.Connection, task_ids: Sequence[str], expires_at: float, now: float
) -> None:
    """Store ``task_ids`` until ``expires_at``; run inside a write transaction."""
    connection.execute(DELETE_EXPIRED, (now,))
    connection.executemany(UPSERT, [(task_id, expires_at) for task_id in task_ids])


def read_revokes(connection: sqlite3.Connection, now: float) -> dict[str, float]:
    """Return the ids that have not expired by ``now``, with their expiry."""
    rows = connection.execute(SELECT_KEPT, (now,)).fetchall()
    return {str(task_id): float(expires) for task_id, expires in rows}
