"""The chord counter in SQL tables, shared by the SQLite and PostgreSQL backends (edge layer).

Celery's database backend has no chord counter (it polls with ``celery.chord_unlock``,
wire protocol §7.3), so these tables are celeriac's own: ``celeriac_chord`` holds one
row per chord (size, total diff, how many parts are in, claim, finished marker) and
``celeriac_chord_part`` one row per finished header task, keyed by
``(group_id, task_id, group_index)`` so that a redelivered task is counted once. They
keep Redis's semantics (Celery 5.7's script). The count of parts is kept in the chord's
row, not counted, so each report costs the same however big the chord.

Every operation runs inside one transaction that the backend opens, and starts with an
upsert of the chord's row: in PostgreSQL that locks the row until commit, in SQLite the
transaction is ``BEGIN IMMEDIATE`` and holds the database's write lock. Either way the
reports of one chord run one after another, so one of them sees the chord complete.
Times are Unix seconds computed by the caller, so both databases store the same values.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from celeriac.backends.base import CHORD_DONE_EXPIRES, ChordPart, ChordProgress

CHORD_TABLE = "celeriac_chord"
READY_COLUMN = "ready integer NOT NULL DEFAULT 0"
PART_TABLE = "celeriac_chord_part"

# Stored as the group_index of a header task sent without one; it sorts after every real
# index, as Redis's score "+inf" does.
UNINDEXED = 2**62

Execute = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
"""Run one statement inside the caller's transaction; return its rows."""


@dataclass(frozen=True, slots=True)
class _ChordRow:
    size: int | None
    total_diff: int
    ready: int
    claim: str | None
    claim_expires_at: float | None
    finished_until: float | None


class ChordTables:
    """The statements of the chord counter, for one database's placeholder and blob type.

    ``chord_table`` and ``part_table`` are quoted (and if need be schema-qualified) names;
    ``dialect`` is "sqlite" or "postgresql".
    """

    def __init__(
        self, chord_table: str, part_table: str, *, placeholder: str, blob: str, dialect: str
    ) -> None:
        self.chord_table = chord_table
        self.part_table = part_table
        self.placeholder = placeholder
        self.blob = blob
        self.dialect = dialect

    def create(self, execute: Execute) -> None:
        """Create both tables unless they exist; add ``ready`` to a chord table made without it."""
        execute(
            f"CREATE TABLE IF NOT EXISTS {self.chord_table} ("
            " group_id varchar(155) PRIMARY KEY, size integer,"
            " total_diff integer NOT NULL DEFAULT 0, claim varchar(64),"
            " claim_expires_at double precision, finished_until double precision,"
            f" expires_at double precision, {READY_COLUMN})",
            (),
        )
        if self.dialect == "postgresql":
            execute(f"ALTER TABLE {self.chord_table} ADD COLUMN IF NOT EXISTS {READY_COLUMN}", ())
        elif "ready" not in {
            row[1] for row in execute(f"PRAGMA table_info({self.chord_table})", ())
        }:
            execute(f"ALTER TABLE {self.chord_table} ADD COLUMN {READY_COLUMN}", ())
        execute(
            f"CREATE TABLE IF NOT EXISTS {self.part_table} ("
            " group_id varchar(155) NOT NULL, task_id varchar(155) NOT NULL,"
            " group_index bigint NOT NULL, state varchar(50) NOT NULL,"
            f" result {self.blob}, PRIMARY KEY (group_id, group_index, task_id))",
            (),
        )

    def set_size(
        self,
        execute: Execute,
        group_id: str,
        size: int,
        *,
        now: float,
        expires_at: float | None,
        claim_expires: float,
    ) -> ChordProgress:
        """Set the size and start a new run (no claim, not finished); claim if complete."""
        row = self._upsert(
            execute,
            "size = excluded.size, claim = NULL, claim_expires_at = NULL,"
            " finished_until = NULL, expires_at = excluded.expires_at",
            (group_id, size, 0, expires_at),
        )
        return self._claim_if_complete(execute, group_id, row, now, claim_expires)

    def add(self, execute: Execute, group_id: str, count: int, *, expires_at: float | None) -> None:
        """Add ``count`` to the chord's total diff."""
        self._upsert(
            execute,
            "total_diff = chord.total_diff + excluded.total_diff",
            (group_id, None, count, expires_at),
        )

    def record_part(
        self,
        execute: Execute,
        group_id: str,
        part: ChordPart,
        *,
        now: float,
        expires_at: float | None,
        claim_expires: float,
    ) -> ChordProgress:
        """Record a header result (``part.result`` serialized) unless already counted."""
        row = self._upsert(
            execute,
            f"expires_at = CASE WHEN chord.finished_until > {self.placeholder}"
            " THEN chord.expires_at ELSE excluded.expires_at END",
            (group_id, None, 0, expires_at, now),
        )
        if row.finished_until is not None and row.finished_until > now:
            return ChordProgress(0, None, is_finished=True)
        group_index = UNINDEXED if part.group_index is None else part.group_index
        inserted = execute(
            f"INSERT INTO {self.part_table} (group_id, task_id, group_index, state, result)"
            f" VALUES ({self._placeholders(5)}) ON CONFLICT DO NOTHING RETURNING group_id",
            (group_id, part.task_id, group_index, part.state, part.result),
        )
        if inserted:
            ((ready,),) = execute(
                f"UPDATE {self.chord_table} SET ready = ready + 1"
                f" WHERE group_id = {self.placeholder} RETURNING ready",
                (group_id,),
            )
            row = dataclasses.replace(row, ready=ready)
        return self._claim_if_complete(execute, group_id, row, now, claim_expires)

    def finish(self, execute: Execute, group_id: str, claim: str, *, now: float) -> bool:
        """Drop the parts and counters and mark the chord finished, if ``claim`` holds it."""
        mark = self.placeholder
        finished = execute(
            f"UPDATE {self.chord_table} SET size = NULL, total_diff = 0, ready = 0, claim = NULL,"
            f" claim_expires_at = NULL, finished_until = {mark}, expires_at = {mark}"
            f" WHERE group_id = {mark} AND claim = {mark} AND claim_expires_at > {mark}"
            " RETURNING group_id",
            (now + CHORD_DONE_EXPIRES, now + CHORD_DONE_EXPIRES, group_id, claim, now),
        )
        if finished:
            execute(f"DELETE FROM {self.part_table} WHERE group_id = {mark}", (group_id,))
        return bool(finished)

    def delete_expired(self, execute: Execute, *, now: float) -> None:
        """Delete chords (and their parts) whose counters expired."""
        mark = self.placeholder
        execute(
            f"DELETE FROM {self.part_table} WHERE group_id IN"
            f" (SELECT group_id FROM {self.chord_table} WHERE expires_at <= {mark})",
            (now,),
        )
        execute(f"DELETE FROM {self.chord_table} WHERE expires_at <= {mark}", (now,))

    def _upsert(self, execute: Execute, updates: str, parameters: Sequence[Any]) -> _ChordRow:
        """Insert or update the chord's row, which locks it; return the row as updated."""
        (row,) = execute(
            f"INSERT INTO {self.chord_table} AS chord (group_id, size, total_diff, expires_at)"
            f" VALUES ({self._placeholders(4)}) ON CONFLICT (group_id) DO UPDATE SET {updates}"
            " RETURNING size, total_diff, ready, claim, claim_expires_at, finished_until",
            parameters,
        )
        return _ChordRow(*row)

    def _claim_if_complete(
        self, execute: Execute, group_id: str, row: _ChordRow, now: float, claim_expires: float
    ) -> ChordProgress:
        mark = self.placeholder
        ready = row.ready
        expected = None if row.size is None else row.size + row.total_diff
        is_claimed = row.claim is not None and (row.claim_expires_at or 0) > now
        if expected is None or ready != expected or is_claimed:
            return ChordProgress(ready, expected)
        claim = uuid.uuid4().hex
        execute(
            f"UPDATE {self.chord_table} SET claim = {mark}, claim_expires_at = {mark}"
            f" WHERE group_id = {mark}",
            (claim, now + claim_expires, group_id),
        )
        rows = execute(
            f"SELECT task_id, group_index, state, result FROM {self.part_table}"
            f" WHERE group_id = {mark} ORDER BY group_index, task_id",
            (group_id,),
        )
        parts = tuple(
            ChordPart(task_id, None if group_index == UNINDEXED else group_index, state, result)
            for task_id, group_index, state, result in rows
        )
        return ChordProgress(ready, expected, claim, parts)

    def _placeholders(self, count: int) -> str:
        return ", ".join([self.placeholder] * count)


def decode_parts(progress: ChordProgress, decode: Callable[[Any], Any]) -> ChordProgress:
    """Return ``progress`` with each part's stored result decoded by ``decode``."""
    parts = tuple(dataclasses.replace(part, result=decode(part.result)) for part in progress.parts)
    return dataclasses.replace(progress, parts=parts)
