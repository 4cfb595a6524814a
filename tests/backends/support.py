"""Scenarios the backend-specific tests share: a wait whose connection is cut, and a chord
table made by a celeriac that kept no count of parts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from celeriac.backends.base import ChordProgress, Meta, ResultBackend
from celeriac.protocol.result_meta import build_meta

OLD_CHORD_TABLE = (
    "CREATE TABLE {table} (group_id varchar(155) PRIMARY KEY, size integer,"
    " total_diff integer NOT NULL DEFAULT 0, claim varchar(64),"
    " claim_expires_at double precision, finished_until double precision,"
    " expires_at double precision)"
)
"""The chord table as celeriac created it before the ``ready`` column."""


def success_meta(task_id: str, result: object = 5) -> Meta:
    return build_meta(task_id, "SUCCESS", result, date_done="2026-11-21T19:01:45.865316+00:00")


def wait_while_cut(
    waiter: ResultBackend, writer: ResultBackend, cut: Callable[[], bool]
) -> tuple[Meta, float]:
    """Wait for "task-1" while another thread cuts the waiter's listening connection (``cut``
    returns True once it did), then stores the result; return the meta and the seconds waited.
    """

    def cut_then_store() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not cut():
            time.sleep(0.01)
        time.sleep(0.2)
        writer.store("task-1", success_meta("task-1"))

    thread = threading.Thread(target=cut_then_store)
    thread.start()
    try:
        started = time.monotonic()
        meta = waiter.wait("task-1", timeout=10.0, interval=30.0)
        return meta, time.monotonic() - started
    finally:
        thread.join(timeout=10)
        waiter.close()
        writer.close()


def two_part_chord(backend: ResultBackend) -> ChordProgress:
    """Run a chord of two header results; return the progress of the part that completes it."""
    backend.set_chord_size("g-1", 2)
    first = backend.chord_part_done("g-1", "t-0", 0, "SUCCESS", 5)
    assert not first.must_fire
    return backend.chord_part_done("g-1", "t-1", 1, "SUCCESS", 6)
