"""The in-process result backend (edge layer): ``memory://`` and ``cache+memory://``.

Results live in a dict owned by the backend object, so only code holding the same object
(an app and the in-process test worker) sees them. Meta is stored serialized, as a real
store would keep it, so tests see the same codec and ``accept_content`` behaviour. Saved
groups and chord counters live beside them, under the same lock.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Collection, Iterable
from typing import Any

from celeriac import serialization
from celeriac.backends import accepted_content_types
from celeriac.backends.base import (
    CHORD_CLAIM_EXPIRES,
    CHORD_DONE_EXPIRES,
    ChordPart,
    ChordProgress,
    Meta,
    ResultTuple,
)
from celeriac.exceptions import TimeoutError
from celeriac.states import READY_STATES, SUCCESS


@dataclasses.dataclass(frozen=True, slots=True)
class _StoredMeta:
    """One task's serialized meta, with its status kept apart for the SUCCESS and ready checks."""

    status: str
    content_type: str
    content_encoding: str
    body: bytes
    expires_at: float | None

    def is_live(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now


@dataclasses.dataclass(slots=True)
class _Chord:
    """One chord's counter; header results are kept serialized, keyed by (index, task id)."""

    size: int | None = None
    total_diff: int = 0
    parts: dict[tuple[int | None, str], tuple[str, bytes]] = dataclasses.field(default_factory=dict)
    claim: str | None = None
    claim_expires_at: float = 0.0
    finished_until: float = 0.0

    def progress(
        self, claim: str | None = None, parts: tuple[ChordPart, ...] = ()
    ) -> ChordProgress:
        size = None if self.size is None else self.size + self.total_diff
        return ChordProgress(len(self.parts), size, claim, parts)

    def is_complete(self) -> bool:
        return self.size is not None and len(self.parts) == self.size + self.total_diff


class MemoryBackend:
    """Keep results in this process; ``wait`` sleeps on a condition that ``store`` signals.

    Thread-safe: every access to the dict holds the condition's lock; serializing and
    deserializing happen outside it. With no ``accept``, only the backend's own serializer
    is read back. Other options are accepted and ignored, as Celery ignores transport
    options a backend has no use for.
    """

    def __init__(
        self,
        url: str = "memory://",
        *,
        serializer: str = "json",
        accept: Collection[str] | None = None,
        expires: float | None = 86400.0,
        **options: Any,
    ) -> None:
        self.url = url
        self.serializer = serializer
        self.accept = accepted_content_types(serializer, accept)
        self.expires = expires or None
        self._rows: dict[str, _StoredMeta] = {}
        self._groups: dict[str, _StoredMeta] = {}
        self._chords: dict[str, _Chord] = {}
        self._changed = threading.Condition()

    def store(self, task_id: str, meta: Meta) -> None:
        """Store ``meta`` as the task's latest state, unless SUCCESS is already stored."""
        content_type, content_encoding, body = serialization.dumps(meta, serializer=self.serializer)
        now = time.monotonic()
        expires_at = None if self.expires is None else now + self.expires
        row = _StoredMeta(meta["status"], content_type, content_encoding, body, expires_at)
        with self._changed:
            current = self._rows.get(task_id)
            if current is not None and current.status == SUCCESS and current.is_live(now):
                return
            self._rows[task_id] = row
            self._changed.notify_all()

    def get(self, task_id: str) -> Meta | None:
        """Return the stored meta, or None if nothing live is stored (PENDING)."""
        with self._changed:
            row = self._live_row(task_id, time.monotonic())
        return None if row is None else self._decode(row)

    def get_many(self, task_ids: Iterable[str]) -> dict[str, Meta]:
        """Return the stored meta of each id that has a live one."""
        now = time.monotonic()
        with self._changed:
            rows = {task_id: self._live_row(task_id, now) for task_id in task_ids}
        return {task_id: self._decode(row) for task_id, row in rows.items() if row is not None}

    def wait(self, task_id: str, timeout: float | None, interval: float) -> Meta:
        """Block until a ready state is stored; ``interval`` is unused, ``store`` wakes us.

        Raises:
            TimeoutError: no ready state was stored within ``timeout`` seconds.
        """
        return self._decode(self._wait_for_ready_row(task_id, timeout))

    def forget(self, task_id: str) -> None:
        """Delete what is stored for the task."""
        with self._changed:
            self._rows.pop(task_id, None)

    def cleanup(self) -> int:
        """Delete expired results and saved groups; return how many."""
        now = time.monotonic()
        with self._changed:
            expired = [task_id for task_id, row in self._rows.items() if not row.is_live(now)]
            for task_id in expired:
                del self._rows[task_id]
            expired_groups = [key for key, row in self._groups.items() if not row.is_live(now)]
            for group_id in expired_groups:
                del self._groups[group_id]
        return len(expired) + len(expired_groups)

    def save_group(self, group_id: str, result: ResultTuple) -> None:
        """Store a group's result tuple, replacing any stored."""
        content_type, content_encoding, body = serialization.dumps(
            {"result": result}, serializer=self.serializer
        )
        now = time.monotonic()
        expires_at = None if self.expires is None else now + self.expires
        row = _StoredMeta(SUCCESS, content_type, content_encoding, body, expires_at)
        with self._changed:
            self._groups[group_id] = row

    def restore_group(self, group_id: str) -> ResultTuple | None:
        """Return the group's saved result tuple, or None if none is live."""
        with self._changed:
            row = self._groups.get(group_id)
        if row is None or not row.is_live(time.monotonic()):
            return None
        result: ResultTuple = self._decode(row)["result"]
        return result

    def delete_group(self, group_id: str) -> None:
        """Delete the group's saved result tuple."""
        with self._changed:
            self._groups.pop(group_id, None)

    def set_chord_size(
        self, group_id: str, size: int, *, claim_expires: float = CHORD_CLAIM_EXPIRES
    ) -> ChordProgress:
        """Record the header size; claim the chord if every header task already reported."""
        with self._changed:
            chord = self._chords.setdefault(group_id, _Chord())
            chord.size = size
            chord.claim = None
            chord.finished_until = 0.0
            progress = self._claim_if_complete(chord, claim_expires)
        return self._decode_parts(progress)

    def add_to_chord(self, group_id: str, count: int = 1) -> None:
        """Make the chord wait for ``count`` more header results."""
        with self._changed:
            self._chords.setdefault(group_id, _Chord()).total_diff += count

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
        with self._changed:
            chord = self._chords.setdefault(group_id, _Chord())
            if chord.finished_until > time.monotonic():
                return ChordProgress(0, None, is_finished=True)
            chord.parts.setdefault((group_index, task_id), (state, body))
            progress = self._claim_if_complete(chord, claim_expires)
        return self._decode_parts(progress)

    def finish_chord(self, group_id: str, claim: str) -> bool:
        """Drop the chord's parts and counters if ``claim`` still holds it."""
        now = time.monotonic()
        with self._changed:
            chord = self._chords.get(group_id)
            if chord is None or chord.claim != claim or chord.claim_expires_at <= now:
                return False
            self._chords[group_id] = _Chord(finished_until=now + CHORD_DONE_EXPIRES)
        return True

    def close(self) -> None:
        """Release nothing: the results live as long as this object."""

    def _claim_if_complete(self, chord: _Chord, claim_expires: float) -> ChordProgress:
        """Claim a complete, unclaimed chord; its parts' results are still serialized."""
        now = time.monotonic()
        if not chord.is_complete() or (chord.claim is not None and chord.claim_expires_at > now):
            return chord.progress()
        chord.claim = uuid.uuid4().hex
        chord.claim_expires_at = now + claim_expires
        ordered = sorted(chord.parts.items(), key=_part_order)
        parts = tuple(
            ChordPart(task_id, group_index, state, body)
            for (group_index, task_id), (state, body) in ordered
        )
        return chord.progress(chord.claim, parts)

    def _decode_parts(self, progress: ChordProgress) -> ChordProgress:
        codec = serialization.get_codec(self.serializer)
        parts = tuple(
            dataclasses.replace(
                part,
                result=serialization.loads(
                    part.result, codec.content_type, codec.content_encoding, accept=self.accept
                ),
            )
            for part in progress.parts
        )
        return dataclasses.replace(progress, parts=parts)

    def _live_row(self, task_id: str, now: float) -> _StoredMeta | None:
        row = self._rows.get(task_id)
        return row if row is not None and row.is_live(now) else None

    def _wait_for_ready_row(self, task_id: str, timeout: float | None) -> _StoredMeta:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:
                now = time.monotonic()
                row = self._live_row(task_id, now)
                if row is not None and row.status in READY_STATES:
                    return row
                if deadline is not None and now >= deadline:
                    raise TimeoutError("The operation timed out.")
                self._changed.wait(None if deadline is None else deadline - now)

    def _decode(self, row: _StoredMeta) -> Meta:
        meta: Meta = serialization.loads(
            row.body, row.content_type, row.content_encoding, accept=self.accept
        )
        return meta


def _part_order(item: tuple[tuple[int | None, str], tuple[str, bytes]]) -> float:
    """Sort header results by ``group_index``; one without an index goes last, as in Redis."""
    group_index = item[0][0]
    return float("inf") if group_index is None else group_index
