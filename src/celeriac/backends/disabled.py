"""The backend in use when no result backend is configured: stores nothing, reads fail."""

from __future__ import annotations

from collections.abc import Iterable

from celeriac.backends.base import Meta, RefusesChords, ResultTuple
from celeriac.exceptions import ImproperlyConfigured

NO_BACKEND = (
    "No result backend is configured: set result_backend (or leave broker_url unset to "
    "use the embedded SQLite file for both)."
)


class DisabledBackend(RefusesChords):
    """Drop stored results; raise a clear error when someone waits for one.

    Groups and chords need a store, so saving a group or counting a chord raises too.
    """

    url = "disabled://"
    chords_refusal = NO_BACKEND

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
