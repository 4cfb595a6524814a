"""State: workers and tasks built from events, precedence, liveness by heartbeat expiry."""

from __future__ import annotations

import gc
import logging
from typing import Any

import pytest

from celeriac import Celeriac, states
from celeriac.events.state import (
    HEARTBEAT_EXPIRE_WINDOW,
    State,
    Task,
    Worker,
    heartbeat_expires,
)

T0 = 1_000_000.0


class FakeClock:
    """A settable wall clock, so that expiry is tested without sleeping."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(clock: FakeClock) -> State:
    return State(now=clock)


class Stream:
    """Makes events as a worker's dispatcher and a receiver would: clock and times set."""

    def __init__(self, clock: FakeClock, hostname: str = "w1@e2e", pid: int = 42) -> None:
        self.clock = clock
        self.hostname = hostname
        self.pid = pid
        self.lamport = 0

    def event(self, type_: str, **fields: Any) -> dict[str, Any]:
        self.lamport += 1
        event = {
            "hostname": self.hostname,
            "utcoffset": 0.0,
            "pid": self.pid,
            "clock": self.lamport,
            "timestamp": self.clock.now,
            "local_received": self.clock.now,
            "type": type_,
        }
        event.update(fields)
        return event

    def worker(self, type_: str, freq: float = 2.0, **fields: Any) -> dict[str, Any]:
        return self.event(
            f"worker-{type_}", freq=freq, active=0, processed=0, loadavg=[0.1, 0.2, 0.3], **fields
        )


@pytest.fixture
def stream(clock: FakeClock) -> Stream:
    return Stream(clock)


def test_task_lifecycle_sets_state_fields_and_timestamps(
    state: State, stream: Stream, clock: FakeClock
) -> None:
    state.event(stream.worker("online"))
    state.event(
        stream.event("task-received", uuid="a", name="proj.add", args="(2, 2)", kwargs="{}")
    )
    clock.now += 0.5
    state.event(stream.event("task-started", uuid="a"))
    clock.now += 0.5
    state.event(stream.event("task-succeeded", uuid="a", result="4", runtime=0.49))

    task = state.tasks["a"]
    assert task.state == states.SUCCESS
    assert (task.name, task.args, task.kwargs, task.result) == ("proj.add", "(2, 2)", "{}", "4")
    assert task.runtime == 0.49
    assert (task.received, task.started, task.succeeded) == (T0, T0 + 0.5, T0 + 1.0)
    assert task.timestamp == T0 + 1.0
    assert task.clock == 4
    assert task.ready
    assert task.worker is state.workers["w1@e2e"]
    assert task.origin == "w1@e2e.42"
    assert task.info() == {"args": "(2, 2)", "kwargs": "{}", "result": "4", "runtime": 0.49}
    assert task.info(fields=["name"], extra=["state"]) == {"name": "proj.add", "state": "SUCCESS"}
    assert repr(task) == "<Task: proj.add(a) SUCCESS clock:4>"


def test_failed_task_keeps_exception_and_traceback(state: State, stream: Stream) -> None:
    state.event(stream.event("task-received", uuid="b", name="proj.boom", args="('x',)"))
    state.event(stream.event("task-started", uuid="b"))
    state.event(
        stream.event(
            "task-failed", uuid="b", exception="ValueError('x')", traceback="Traceback ..."
        )
    )

    task = state.tasks["b"]
    assert task.state == states.FAILURE
    assert (task.exception, task.traceback) == ("ValueError('x')", "Traceback ...")
    assert task.failed is not None
    assert task.info()["exception"] == "ValueError('x')"


def test_late_task_received_adds_its_fields_but_does_not_move_the_state_back(
    state: State, stream: Stream
) -> None:
    received = stream.event("task-received", uuid="a", name="proj.add", args="(1, 2)", retries=0)
    started = stream.event("task-started", uuid="a")
    succeeded = stream.event("task-succeeded", uuid="a", result="3", runtime=0.1)

    state.event(started)
    state.event(succeeded)
    state.event(received)

    task = state.tasks["a"]
    assert task.state == states.SUCCESS
    assert task.timestamp == succeeded["timestamp"]
    assert task.clock == succeeded["clock"]
    assert (task.name, task.args, task.retries, task.result) == ("proj.add", "(1, 2)", 0, "3")
    assert task.received == received["timestamp"]
    assert set(state.tasks_by_type["proj.add"]) == {task}


def test_late_started_after_failure_keeps_failure(state: State, stream: Stream) -> None:
    failed = stream.event("task-failed", uuid="a", exception="KeyError()")
    state.event(stream.event("task-started", uuid="a") | {"clock": 1})
    state.event(failed)
    state.event(stream.event("task-started", uuid="a") | {"clock": 1})

    assert state.tasks["a"].state == states.FAILURE


def test_retry_always_moves_the_state_in_and_out(state: State, stream: Stream) -> None:
    state.event(stream.event("task-received", uuid="a", name="proj.flaky"))
    state.event(stream.event("task-started", uuid="a"))
    state.event(stream.event("task-retried", uuid="a", exception="KeyError('again')"))
    in_retry = state.tasks["a"].state
    state.event(stream.event("task-received", uuid="a", name="proj.flaky", retries=1))
    after_retry = state.tasks["a"].state
    state.event(stream.event("task-started", uuid="a"))
    state.event(stream.event("task-succeeded", uuid="a", result="1", runtime=0.1))

    assert (in_retry, after_retry) == (states.RETRY, states.RECEIVED)
    task = state.tasks["a"]
    assert (task.state, task.retries, task.exception) == (states.SUCCESS, 1, "KeyError('again')")
    assert task.retried is not None


def test_rejected_and_revoked_events_set_their_states(state: State, stream: Stream) -> None:
    state.event(stream.event("task-rejected", uuid="r", requeue=False))
    state.event(stream.event("task-revoked", uuid="v", terminated=False, signum=None, expired=True))

    rejected, revoked = state.tasks["r"], state.tasks["v"]
    assert (rejected.state, vars(rejected)["requeue"]) == (states.REJECTED, False)
    assert (revoked.state, vars(revoked)["expired"]) == (states.REVOKED, True)
    assert revoked.ready


def test_rejected_after_received_ranks_lower_so_keeps_received_as_in_celery(
    state: State, stream: Stream
) -> None:
    state.event(stream.event("task-received", uuid="r", name="proj.reject"))

    state.event(stream.event("task-rejected", uuid="r", requeue=False))

    task = state.tasks["r"]
    assert task.state == states.RECEIVED
    assert task.rejected is not None
    assert vars(task)["requeue"] is False


def test_custom_event_is_a_custom_state_with_its_fields(state: State, stream: Stream) -> None:
    state.event(stream.event("task-received", uuid="a", name="proj.long"))
    state.event(stream.event("task-started", uuid="a"))
    state.event(stream.event("task-progress", uuid="a", done=3, total=10))
    in_progress = state.tasks["a"].state
    state.event(stream.event("task-succeeded", uuid="a", result="None", runtime=1.0))
    state.event(stream.event("task-progress", uuid="a", done=10, total=10))

    task = state.tasks["a"]
    assert in_progress == "PROGRESS"
    assert task.state == states.SUCCESS
    assert vars(task)["done"] == 10


def test_task_sent_comes_from_a_client(state: State, clock: FakeClock) -> None:
    client = Stream(clock, hostname="gen7@host", pid=7)

    state.event(client.event("task-sent", uuid="a", name="proj.add", queue="celery"))

    task = state.tasks["a"]
    assert (task.state, task.client, task.worker) == (states.PENDING, "gen7@host", None)
    assert task.origin == "gen7@host"
    assert task.sent == clock.now
    assert not state.workers


def test_worker_is_alive_until_twice_its_freq_after_the_last_heartbeat(
    state: State, stream: Stream, clock: FakeClock
) -> None:
    state.event(stream.worker("online", freq=2.0))
    worker = state.workers["w1@e2e"]
    alive_at_start = worker.alive
    clock.now += 3.9
    alive_before_expiry = worker.alive
    clock.now += 0.1
    alive_at_expiry = worker.alive
    state.event(stream.worker("heartbeat", freq=2.0))
    alive_after_heartbeat = worker.alive

    assert (alive_at_start, alive_before_expiry, alive_at_expiry) == (True, True, False)
    assert alive_after_heartbeat
    assert worker.heartbeat_expires == clock.now + 4.0
    assert HEARTBEAT_EXPIRE_WINDOW == 200
    assert heartbeat_expires(10.0, freq=2.0) == 14.0
    assert list(state.alive_workers()) == [worker]


def test_worker_without_freq_counts_as_sending_every_minute(
    state: State, stream: Stream, clock: FakeClock
) -> None:
    event = stream.worker("online")
    del event["freq"]
    state.event(event)

    clock.now += 119.9
    alive = state.workers["w1@e2e"].alive
    clock.now += 0.1

    assert alive
    assert not state.workers["w1@e2e"].alive


def test_worker_offline_ends_liveness_at_once(state: State, stream: Stream) -> None:
    state.event(stream.worker("online"))

    state.event(stream.worker("offline"))

    worker = state.workers["w1@e2e"]
    assert not worker.alive
    assert worker.status_string == "OFFLINE"
    assert list(state.alive_workers()) == []


def test_worker_takes_the_fields_of_its_last_event(state: State, stream: Stream) -> None:
    state.event(stream.worker("online"))
    state.event(stream.worker("heartbeat", freq=5.0) | {"active": 2, "processed": 7})

    worker = state.workers["w1@e2e"]
    assert (worker.freq, worker.active, worker.processed) == (5.0, 2, 7)
    assert (worker.pid, worker.loadavg, worker.clock) == (42, [0.1, 0.2, 0.3], 2)
    assert worker.id == "w1@e2e.42"
    assert len(worker.heartbeats) == 2
    assert repr(worker) == "<Worker: w1@e2e (ONLINE clock:2)"


def test_worker_keeps_its_last_four_heartbeats(
    state: State, stream: Stream, clock: FakeClock
) -> None:
    for _ in range(6):
        state.event(stream.worker("heartbeat"))
        clock.now += 1

    assert state.workers["w1@e2e"].heartbeats == [T0 + 2, T0 + 3, T0 + 4, T0 + 5]


def test_task_events_count_as_heartbeats(state: State, stream: Stream, clock: FakeClock) -> None:
    state.event(stream.worker("online"))
    clock.now += 3

    state.event(stream.event("task-started", uuid="a"))
    clock.now += 3

    assert state.workers["w1@e2e"].alive


def test_node_callbacks_see_joins_and_leaves(stream: Stream, clock: FakeClock) -> None:
    joined: list[Worker] = []
    left: list[Worker] = []
    state = State(on_node_join=joined.append, on_node_leave=left.append, now=clock)

    state.event(stream.worker("online"))
    state.event(stream.worker("heartbeat"))
    state.event(stream.worker("offline"))

    assert [worker.hostname for worker in joined] == ["w1@e2e"]
    assert [worker.hostname for worker in left] == ["w1@e2e"]
    assert "w1@e2e" not in state.workers


def test_offline_of_an_unknown_worker_does_not_add_it(state: State, stream: Stream) -> None:
    outcome = state.event(stream.worker("offline"))

    assert outcome is not None
    (worker, created), subject = outcome
    assert (worker.hostname, created, subject) == ("w1@e2e", False, "offline")
    assert not state.workers


def test_a_batch_body_is_taken_in_as_its_events_in_order(state: State, stream: Stream) -> None:
    batch = [
        stream.event("task-received", uuid="a", name="proj.add"),
        stream.event("task-started", uuid="a"),
        stream.event("task-succeeded", uuid="a", result="4", runtime=0.1),
    ]

    outcomes = state.event(batch)

    assert [outcome[1] for outcome in outcomes if outcome] == ["received", "started", "succeeded"]
    assert state.tasks["a"].state == states.SUCCESS
    assert state.event_count == 3


def test_counts_and_task_types(state: State, stream: Stream) -> None:
    state.event(stream.worker("online"))
    for uuid, name in (("a", "proj.add"), ("b", "proj.mul"), ("c", "proj.add")):
        state.event(stream.event("task-received", uuid=uuid, name=name))

    assert (state.event_count, state.task_count) == (4, 3)
    assert state.task_types() == ["proj.add", "proj.mul"]
    assert repr(state) == "<State: events=4 tasks=3>"


def test_tasks_by_time_type_and_worker_are_newest_first(state: State, clock: FakeClock) -> None:
    one, two = Stream(clock, "w1@e2e"), Stream(clock, "w2@e2e")
    state.event(one.event("task-received", uuid="a", name="proj.add"))
    state.event(two.event("task-received", uuid="b", name="proj.mul") | {"clock": 5})
    state.event(one.event("task-received", uuid="c", name="proj.add") | {"clock": 9})
    state.event(one.event("task-started", uuid="a") | {"clock": 7})

    assert [uuid for uuid, _ in state.tasks_by_time()] == ["c", "a", "b"]
    assert [uuid for uuid, _ in state.tasks_by_time(reverse=False)] == ["a", "b", "c"]
    assert [uuid for uuid, _ in state.tasks_by_time(limit=2)] == ["c", "a"]
    assert [uuid for uuid, _ in state.tasks_by_type("proj.add")] == ["c", "a"]
    assert [uuid for uuid, _ in state.tasks_by_type("proj.add", limit=1)] == ["c"]
    assert {task.uuid for task in state.tasks_by_type["proj.add"]} == {"a", "c"}
    assert [uuid for uuid, _ in state.tasks_by_worker("w2@e2e")] == ["b"]
    assert {task.uuid for task in state.tasks_by_worker["w1@e2e"]} == {"a", "c"}


def test_itertasks_yields_oldest_first_up_to_limit(state: State, stream: Stream) -> None:
    for uuid in "abcd":
        state.event(stream.event("task-received", uuid=uuid))

    assert [uuid for uuid, _ in state.itertasks()] == ["a", "b", "c", "d"]
    assert [uuid for uuid, _ in state.itertasks(limit=2)] == ["a", "b"]


def test_only_the_newest_tasks_and_workers_are_kept(clock: FakeClock) -> None:
    state = State(max_tasks_in_memory=2, max_workers_in_memory=1, now=clock)
    one, two = Stream(clock, "w1@e2e"), Stream(clock, "w2@e2e")

    for uuid in "abc":
        state.event(one.event("task-received", uuid=uuid))
    state.event(two.worker("online"))
    gc.collect()

    assert list(state.tasks) == ["b", "c"]
    assert list(state.workers) == ["w2@e2e"]
    assert [uuid for uuid, _ in state.tasks_by_time()] == ["c", "b"]


def test_clear_forgets_finished_tasks_workers_and_counts(state: State, stream: Stream) -> None:
    state.event(stream.worker("online"))
    state.event(stream.event("task-received", uuid="done"))
    state.event(stream.event("task-succeeded", uuid="done", result="1", runtime=0.1))
    state.event(stream.event("task-received", uuid="running"))

    state.clear()

    assert list(state.tasks) == ["running"]
    assert [uuid for uuid, _ in state.tasks_by_time()] == ["running"]
    assert not state.workers
    assert (state.event_count, state.task_count) == (0, 0)


def test_clear_without_ready_forgets_every_task(state: State, stream: Stream) -> None:
    state.event(stream.event("task-received", uuid="running"))

    state.clear(ready=False)

    assert not state.tasks
    assert list(state.tasks_by_time()) == []


def test_freeze_while_runs_with_events_held_and_may_clear_after(
    state: State, stream: Stream
) -> None:
    state.event(stream.event("task-received", uuid="a"))
    state.event(stream.event("task-succeeded", uuid="a", result="1", runtime=0.1))

    seen = state.freeze_while(lambda prefix: prefix + str(len(state.tasks)), "tasks=")
    kept = state.freeze_while(lambda: len(state.tasks), clear_after=True)

    assert (seen, kept) == ("tasks=1", 1)
    assert not state.tasks


def test_children_link_to_parents_seen_before_or_after(state: State, stream: Stream) -> None:
    state.event(stream.event("task-received", uuid="child1", parent_id="p", root_id="p"))
    state.event(stream.event("task-received", uuid="p", name="proj.parent"))
    state.event(stream.event("task-received", uuid="child2", parent_id="p", root_id="p"))

    parent = state.tasks["p"]
    child = state.tasks["child1"]
    assert {task.uuid for task in parent.children} == {"child1", "child2"}
    assert (child.parent, child.root) == (parent, parent)
    assert parent.as_dict()["children"] in (["child1", "child2"], ["child2", "child1"])


def test_callback_sees_every_event(stream: Stream, clock: FakeClock) -> None:
    seen: list[str] = []
    state = State(callback=lambda _, event: seen.append(event["type"]), now=clock)

    state.event(stream.worker("online"))
    state.event(stream.event("task-received", uuid="a"))

    assert seen == ["worker-online", "task-received"]


def test_handlers_take_custom_groups(state: State, stream: Stream) -> None:
    state.handlers["beat"] = lambda subject, event: (subject, event["hostname"])

    outcome = state.event(stream.event("beat-tick"))
    unknown = state.event(stream.event("other-thing"))

    assert outcome == (("tick", "w1@e2e"), "tick")
    assert unknown is None


def test_event_without_local_received_counts_as_received_now(
    state: State, stream: Stream, clock: FakeClock
) -> None:
    event = stream.worker("online")
    del event["local_received"]
    clock.now += 5

    state.event(event)

    assert state.workers["w1@e2e"].heartbeats == [clock.now]


def test_substantial_drift_is_logged_once_per_worker(
    state: State, stream: Stream, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="celeriac.events.record")
    for _ in range(2):
        state.event(stream.worker("heartbeat") | {"timestamp": clock.now - 60})

    drift = [record for record in caplog.records if "Substantial drift" in record.message]
    assert len(drift) == 1


def test_event_fields_never_replace_methods_or_properties(state: State, stream: Stream) -> None:
    state.event(stream.event("task-received", uuid="a", info="x", ready="y", _private=1))

    task = state.tasks["a"]
    assert task.info() == {}
    assert task.ready is False
    assert not hasattr(task, "_private")


def test_get_or_create_worker_and_task(state: State) -> None:
    worker, created = state.get_or_create_worker("w9@e2e", freq=5.0)
    again, created_again = state.get_or_create_worker("w9@e2e", active=3)
    task, task_created = state.get_or_create_task("t")

    assert (created, created_again, again is worker) == (True, False, True)
    assert (worker.freq, worker.active) == (5.0, 3)
    assert (task_created, state.get_or_create_task("t")) == (True, (task, False))
    assert isinstance(task, Task)


def test_app_events_state_is_the_cluster_state() -> None:
    app = Celeriac("events-state", broker="memory://events-state")

    state = app.events.State(max_tasks_in_memory=5)

    assert isinstance(state, State)
    assert state.max_tasks_in_memory == 5
    app.close()
