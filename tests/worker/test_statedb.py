"""The worker's state file (``--statedb``): revoked ids and the clock across restarts."""

from __future__ import annotations

import json
import time
from pathlib import Path

from celeriac.events.clock import LamportClock
from celeriac.worker.state import WorkerState
from celeriac.worker.statedb import load_state, persistent_state


def test_state_saved_after_the_block_is_loaded_by_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "node.state"
    state, clock = WorkerState(), LamportClock()
    with persistent_state(str(path), state, clock):
        state.merge_revokes({"kept": time.time() + 60, "expiring": time.time() + 0.2})
        clock.adjust(41)
    time.sleep(0.3)

    restarted, later_clock = WorkerState(), LamportClock()
    load_state(path, restarted, later_clock)

    assert restarted.revoked_ids() == ["kept"]
    assert later_clock.value > 42


def test_unreadable_state_file_is_ignored_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "node.state"
    path.write_text("{not json")
    state = WorkerState()

    with persistent_state(str(path), state, LamportClock()):
        loaded = state.revoked_ids()
        state.merge_revokes({"new": time.time() + 60})

    assert loaded == []
    assert list(json.loads(path.read_text())["revoked"]) == ["new"]


def test_no_path_reads_and_writes_nothing(tmp_path: Path) -> None:
    state = WorkerState()

    with persistent_state(None, state, LamportClock()):
        state.merge_revokes({"x": time.time() + 60})

    assert list(tmp_path.iterdir()) == []
