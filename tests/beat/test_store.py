"""The store contract (beat/store.py), on every store: one lease holder, each run claimed
once, times that only move forward. Two store objects on one place stand for two beats."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pytest

from celeriac import Celeriac
from celeriac.beat.store import EntryState, open_store
from tests.beat.conftest import NewStore

T0 = datetime.datetime(2024, 5, 6, 10, 0, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def test_one_beat_holds_the_lease_until_it_gives_it_up(new_store: NewStore) -> None:
    first, second = new_store(), new_store()

    assert first.hold_lease("first", 5)
    assert not second.hold_lease("second", 5)
    assert first.hold_lease("first", 5)
    first.release_lease("first")

    assert second.hold_lease("second", 5)
    assert not first.hold_lease("first", 5)


def test_a_lease_that_is_not_renewed_runs_out_and_another_beat_takes_it(
    new_store: NewStore,
) -> None:
    first, second = new_store(), new_store()
    assert first.hold_lease("first", 0.3)

    time.sleep(0.4)

    assert second.hold_lease("second", 5)
    assert not first.hold_lease("first", 5)


def test_a_due_run_is_claimed_once(new_store: NewStore) -> None:
    first, second = new_store(), new_store()
    first.sync_entries({"tick": "every 10s"}, T0)
    assert first.hold_lease("first", 5)

    claims = [
        first.claim_run("first", "tick", at(10), True),
        first.claim_run("first", "tick", at(10), True),
        second.claim_run("second", "tick", at(10), True),
    ]

    assert claims == [True, False, False]
    assert second.sync_entries({"tick": "every 10s"}, at(11)) == {"tick": EntryState(at(10), 1)}


def test_only_the_lease_holder_claims_runs(new_store: NewStore) -> None:
    first, second = new_store(), new_store()
    first.sync_entries({"tick": "every 10s"}, T0)
    assert first.hold_lease("first", 0.3)
    time.sleep(0.4)
    assert second.hold_lease("second", 5)

    # The first beat's lease ran out: it may still believe it leads, but cannot claim.
    stale = first.claim_run("first", "tick", at(10), True)
    current = second.claim_run("second", "tick", at(10), True)

    assert (stale, current) == (False, True)


def test_an_earlier_run_than_the_recorded_one_is_refused(new_store: NewStore) -> None:
    store = new_store()
    store.sync_entries({"tick": "every 10s"}, T0)
    assert store.hold_lease("beat", 5)
    assert store.claim_run("beat", "tick", at(20), True)

    assert not store.claim_run("beat", "tick", at(10), True)
    assert store.claim_run("beat", "tick", at(30), True)


def test_sync_anchors_new_and_changed_entries_and_forgets_removed_ones(
    new_store: NewStore,
) -> None:
    store = new_store()
    store.sync_entries({"kept": "every 10s", "removed": "every 10s"}, T0)
    assert store.hold_lease("beat", 5)
    assert store.claim_run("beat", "kept", at(10), True)

    states = store.sync_entries({"kept": "every 10s", "new": "every 5s"}, at(100))
    changed = store.sync_entries({"kept": "every 60s", "new": "every 5s"}, at(200))

    assert states == {"kept": EntryState(at(10), 1), "new": EntryState(at(100), 0)}
    assert changed == {"kept": EntryState(at(200), 1), "new": EntryState(at(100), 0)}


def test_a_changed_schedule_never_moves_a_recorded_run_back(new_store: NewStore) -> None:
    store = new_store()
    store.sync_entries({"tick": "every 10s"}, T0)
    assert store.hold_lease("beat", 5)
    assert store.claim_run("beat", "tick", at(50), True)

    states = store.sync_entries({"tick": "every 60s"}, at(10))

    assert states == {"tick": EntryState(at(50), 1)}


def test_run_times_keep_their_microseconds_and_skipped_runs_are_not_counted(
    new_store: NewStore,
) -> None:
    store = new_store()
    store.sync_entries({"tick": "every 0.2s"}, T0)
    assert store.hold_lease("beat", 5)
    assert store.claim_run("beat", "tick", at(0.200001), True)
    assert store.claim_run("beat", "tick", at(0.400001), False)

    states = store.sync_entries({"tick": "every 0.2s"}, at(1))

    assert states == {"tick": EntryState(at(0.400001), 1)}


@pytest.mark.parametrize(
    ("broker", "backend", "options", "expected"),
    [
        ("sqlite:///{tmp}/broker.db", None, {}, "{tmp}/broker.db"),
        ("redis://127.0.0.1:6379/3", None, {"global_keyprefix": "p:"}, "p:celeriac:{{beat}}"),
        ("amqp://guest@localhost//", "redis://127.0.0.1/1?global_keyprefix=r:", {},
         "r:celeriac:{{beat}}"),
        ("amqp://guest@localhost//", "db+postgresql://u:secret@db/test", {},
         "postgresql://u:****@db/test"),
        ("amqp://guest@localhost//", "sqlite:///{tmp}/results.db", {}, "{tmp}/results.db"),
        ("amqp://guest@localhost//", None, {}, "{tmp}/beat-state"),
    ],
)  # fmt: skip
def test_the_state_goes_to_the_broker_else_the_result_store_else_a_local_file(
    tmp_path: Path, broker: str, backend: str | None, options: dict[str, str], expected: str
) -> None:
    app = Celeriac(
        "stores",
        broker=broker.format(tmp=tmp_path),
        backend=backend and backend.format(tmp=tmp_path),
        set_as_current=False,
    )
    app.conf.broker_transport_options = options

    store = open_store(app, str(tmp_path / "beat-state"))

    assert expected.format(tmp=tmp_path) in store.location
    store.close()
