"""The backend in use when no result backend is configured: stores nothing, reads fail."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from celeriac.backends.base import CHORD_CLAIM_EXPIRES, ChordProgress, Meta, ResultTuple
from celeriac.exceptions import ImproperlyConfigured

NO_BACKEND = (
    "No result backend is configured: set result_backend (or leave broker_url unset to "
    "use the embedded SQLite file for both)."
)


class DisabledBackend:
    """Drop stored results; raise a clear error when someone waits for one.

    Groups and chords need a store, so saving a group or counting a chord raises too.
    """

    url = "disabled://"

    def store(self, task_id: str, meta: Meta) -> None:
        """Keep nothing."""

    def get(self, task_id: str) -> Meta | None:
        """Refuse: there is nowhere to read from."""
        raise ImproperlyConfigured(NO_BACKEND)

    def get_many(self, task_ids: Iterable[str]) -> dict[str, Meta]:
        """Refuse: there is nowhere to read from."""
        raise ImproperlyConfigured(NO_BACKEND)

    def wait(self, task_id: str, timeout: float | None, interval: float) -> Meta:
        """Refuse: no result will ever arrive."""
        raise ImproperlyConfigured(NO_BACKEND)

    def forget(self, task_id: str) -> None:
        """Nothing to forget."""

    def cleanup(self) -> int:
        """Nothing to clean."""
        return 0

    def close(self) -> None:
        """Nothing to close."""

    def save_group(self, group_id: str, result: ResultTuple) -> None:
        """Refuse: a saved group could never be restored."""
        raise ImproperlyConfigured(NO_BACKEND)

    def restore_group(self, group_id: str) -> ResultTuple | None:
        """Refuse: there is nowhere to read from."""
        raise ImproperlyConfigured(NO_BACKEND)

    def delete_group(self, group_id: str) -> None:
        """Nothing to delete."""

    def set_chord_size(
        self, group_id: str, size: int, *, claim_expires: float = CHORD_CLAIM_EXPIRES
    ) -> ChordProgress:
        """Refuse: a chord is counted in the result store."""
        raise ImproperlyConfigured(NO_BACKEND)

    def add_to_chord(self, group_id: str, count: int = 1) -> None:
        """Refuse: a chord is counted in the result store."""
        raise ImproperlyConfigured(NO_BACKEND)

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
        """Refuse: a chord is counted in the result store."""
        raise ImproperlyConfigured(NO_BACKEND)

    def finish_chord(self, group_id: str, claim: str) -> bool:
        """Refuse: a chord is counted in the result store."""
        raise ImproperlyConfigured(NO_BACKEND)
