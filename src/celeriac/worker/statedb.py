"""The worker's state file (``--statedb``, ``worker_state_db``): revoked ids and the
logical clock kept across restarts of one node (edge layer).

Celery's persistent worker state, in a JSON file of our own rather than a shelve:
``{"revoked": {task id: expiry}, "clock": N}``. Read before the worker starts, written
when it has stopped (atomically: a new file renamed over the old), so a SIGKILLed worker
keeps what its last clean stop wrote. Revokes are also kept in the broker
(``Transport.record_revokes``); this file covers a broker whose store was lost and keeps
what this node heard of revokes sent to it alone.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celeriac.events.clock import LamportClock
    from celeriac.worker.state import WorkerState

__all__ = ["load_state", "persistent_state", "save_state"]

logger = logging.getLogger("celeriac.worker")


def load_state(path: Path, state: WorkerState, clock: LamportClock) -> None:
    """Merge the file's unexpired revoked ids into ``state`` and its clock into ``clock``.

    A missing file is a first start; an unreadable one is logged and left for the next
    save to replace.
    """
    try:
        stored: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        logger.warning("Ignoring the worker state file %s, which cannot be read: %s", path, exc)
        return
    if not isinstance(stored, dict):
        logger.warning("Ignoring the worker state file %s: not a state object", path)
        return
    revoked = stored.get("revoked")
    if isinstance(revoked, dict):
        state.merge_revokes(
            {str(key): float(at) for key, at in revoked.items() if isinstance(at, int | float)}
        )
    if isinstance(stored.get("clock"), int):
        clock.adjust(stored["clock"])


def save_state(path: Path, state: WorkerState, clock: LamportClock) -> None:
    """Write the unexpired revoked ids and the clock to ``path``, replacing it whole."""
    now = time.time()
    with state.lock:
        revoked = {key: at for key, at in state.revoked.items() if at > now}
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps({"revoked": revoked, "clock": clock.value}), "utf-8")
    os.replace(temporary, path)


@contextmanager
def persistent_state(path: str | None, state: WorkerState, clock: LamportClock) -> Iterator[None]:
    """Load the state file (if ``path``) before the block and save it after it."""
    if path is None:
        yield
        return
    file = Path(path)
    load_state(file, state, clock)
    try:
        yield
    finally:
        try:
            save_state(file, state, clock)
        except OSError as exc:
            logger.error("Could not write the worker state file %s: %s", file, exc)
