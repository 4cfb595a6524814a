"""The ResultBackend interface every result store implements.

A backend stores result-meta dicts (built by ``celeriac.protocol.result_meta``) under a
task id and gives them back. It must never overwrite a stored SUCCESS (wire protocol
§7.1), and ``wait`` returns as soon as a ready state is stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from celeriac.exceptions import OperationalError

Meta = dict[str, Any]


class BackendError(OperationalError):
    """The result store could not be reached or refused an operation."""


@runtime_checkable
class ResultBackend(Protocol):
    """A place where workers store task outcomes and clients read them."""

    url: str

    def store(self, task_id: str, meta: Meta) -> None:
        """Store ``meta`` as the task's latest state, unless SUCCESS is already stored."""
        ...

    def get(self, task_id: str) -> Meta | None:
        """Return the stored meta, or None if nothing is stored (PENDING)."""
        ...

    def get_many(self, task_ids: Iterable[str]) -> dict[str, Meta]:
        """Return the stored meta of each id that has one."""
        ...

    def wait(self, task_id: str, timeout: float | None, interval: float) -> Meta:
        """Block until a ready state is stored; raise ``TimeoutError`` after ``timeout``."""
        ...

    def forget(self, task_id: str) -> None:
        """Delete what is stored for the task."""
        ...

    def cleanup(self) -> int:
        """Delete results older than ``result_expires``; return how many."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...
