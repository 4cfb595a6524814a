"""The in-process result backend (edge layer): ``memory://`` and ``cache+memory://``.

Results live in a dict owned by the backend object, so only code holding the same object
(an app and the in-process test worker) sees them. Meta is stored serialized, as a real
store would keep it, so tests see the same codec and ``accept_content`` behaviour.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from celeriac import serialization
from celeriac.backends import accepted_content_types
from celeriac.backends.base import Meta
from celeriac.exceptions import TimeoutError
from celeriac.states import READY_STATES, SUCCESS


@dataclass(frozen=True, slots=True)
class _StoredMeta:
    """One task's serialized meta, with its status kept apart for the SUCCESS and ready checks."""

    status: str
    content_type: str
    content_encoding: str
    body: bytes
    expires_at: float | None

    def is_live(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now


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
        """Delete expired results; return how many."""
        now = time.monotonic()
        with self._changed:
            expired = [task_id for task_id, row in self._rows.items() if not row.is_live(now)]
            for task_id in expired:
                del self._rows[task_id]
        return len(expired)

    def close(self) -> None:
        """Release nothing: the results live as long as this object."""

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
