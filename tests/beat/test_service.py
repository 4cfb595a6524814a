"""The beat Service in this process, on a real SQLite broker, with a clock the test moves:
what is sent and when, restarts, leaders and standbys, Celery's entry options."""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac, signals
from celeriac.beat import EmbeddedService, Service
from celeriac.beat.entry import ScheduleEntry
from celeriac.exceptions import ImproperlyConfigured
from celeriac.protocol.message import TaskMessage, parse_task_message
from celeriac.schedules import crontab, schedstate
from tests.beat.conftest import Clock


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Celeriac]:
    app = Celeriac("beattest", broker=f"sqlite:///{tmp_path}/broker.db", set_as_current=False)
    yield app
    app.close()


def sent(app: Celeriac, queue: str = "celery") -> list[TaskMessage]:
    """Take every message off ``queue``."""
    messages = []
    while deliveries := app.transport.fetch([queue], 100, 0.01):
        app.transport.ack([delivery.tag for delivery in deliveries])
        messages += [parse_task_message(delivery.envelope) for delivery in deliveries]
    return messages


def beat(app: Celeriac, clock: Clock, **options: Any) -> Service:
    return Service(app, now=clock.now, **options)


def test_an_interval_task_is_sent_on_time(app: Celeriac, clock: Clock) -> None:
    app.conf.beat_schedule = {"tick": {"task": "tasks.tick", "schedule": 10.0}}
    service = beat(app, clock)
    service.tick()

    clock.advance(9.999)
    service.tick()
    early = sent(app)
    clock.advance(0.001)
    service.tick()
    on_time = sent(app)

    assert early == []
    assert [message.name for message in on_time] == ["tasks.tick"]
    assert service.scheduler.seconds_until_next(clock.now()) == 10.0


def test_a_crontab_task_is_sent_on_time_in_the_apps_time_zone(app: Celeriac, clock: Clock) -> None:
    app.conf.timezone = "America/New_York"
    app.conf.beat_schedule = {"nine": {"task": "tasks.report", "schedule": crontab(0, 9)}}
    clock.set(datetime.datetime(2024, 5, 6, 12, 59, 59, tzinfo=datetime.UTC))
    service = beat(app, clock)
    service.tick()

    clock.advance(0.5)
    service.tick()
    early = sent(app)
    clock.advance(0.5)
    service.tick()
    on_time = sent(app)

    assert early == []
    assert [message.name for message in on_time] == ["tasks.report"]


def test_a_restart_neither_repeats_nor_skips_a_run(app: Celeriac, clock: Clock) -> None:
    app.conf.beat_schedule = {"tick": {"task": "tasks.tick", "schedule": 10.0}}
    start = clock.now()
    first = beat(app, clock)
    first.tick()
    clock.advance(10)
    first.tick()
    first.sync()

    second = beat(app, clock)
    second.tick()
    after_restart = sent(app)
    clock.advance(25)  # the runs due at +20 and +30 came while no beat ran
    second.tick()
    after_downtime = sent(app)
    clock.advance(5)
    second.tick()

    assert len(after_restart) == 1  # the +10 run, sent by the first beat only
    assert len(after_downtime) == 1  # +20 and +30 collapse into one run, as in Celery
    assert len(sent(app)) == 1  # +40
    assert second.scheduler.states["tick"].last_run_at == start + datetime.timedelta(seconds=40)
    assert second.scheduler.states["tick"].total_run_count == 3


def test_a_changed_schedule_takes_effect_on_restart(app: Celeriac, clock: Clock) -> None:
    app.conf.beat_schedule = {"tick": {"task": "tasks.tick", "schedule": 10.0}}
    first = beat(app, clock)
    first.tick()
    clock.advance(10)
    first.tick()
    first.sync()
    app.conf.beat_schedule = {"tick": {"task": "tasks.tick", "schedule": 60.0}}

    clock.advance(5)
    second = beat(app, clock)
    second.tick()
    clock.advance(55)
    second.tick()
    before = sent(app)
    clock.advance(5)
    second.tick()

    assert len(before) == 1  # only the first beat's run: the new schedule starts at restart
    assert len(sent(app)) == 1


def test_entry_options_arguments_and_routing_reach_the_message(app: Celeriac, clock: Clock) -> None:
    app.conf.beat_schedule = {
        "report": {
            "task": "tasks.report",
            "schedule": 5,
            "args": [1, 2],
            "kwargs": {"scale": 3},
            "options": {"queue": "periodic", "priority": 7, "expires": 30},
        },
        "routed": {"task": "tasks.routed", "schedule": 5, "options": {"routing_key": "reports"}},
    }
    service = beat(app, clock)
    service.tick()

    clock.advance(5)
    service.tick()
    sent_at = time.time()

    [message] = sent(app, "periodic")
    args, kwargs, _ = message.decode_body()
    assert (args, kwargs) == ([1, 2], {"scale": 3})
    assert message.properties["priority"] == 7
    assert message.expires is not None
    assert 25 < message.expires.timestamp() - sent_at <= 30
    [routed] = sent(app, "reports")
    assert routed.properties["delivery_info"]["routing_key"] == "reports"


def test_a_relative_entry_rounds_its_interval() -> None:
    entry = ScheduleEntry.from_setting("hourly", {"task": "t", "schedule": 3600, "relative": True})

    assert entry.schedule.relative


def test_periodic_tasks_added_by_on_after_configure_and_on_after_finalize_are_sent(
    app: Celeriac, clock: Clock
) -> None:
    @app.task
    def add(x: int, y: int = 0) -> int:
        return x + y

    calls = []

    @app.on_after_configure.connect
    def setup(sender: Celeriac, **kwargs: Any) -> None:
        calls.append("configure")
        sender.add_periodic_task(10.0, add.s(2, 3), name="add every 10", queue="sums")

    @app.on_after_finalize.connect
    def more(sender: Celeriac, **kwargs: Any) -> None:
        calls.append("finalize")
        sender.add_periodic_task(crontab(minute=5), add.s(), args=(1,), kwargs={"y": 2})

    service = beat(app, clock)
    service.tick()
    app.finalize()
    clock.advance(10)
    service.tick()

    assert calls == ["configure", "finalize"]
    assert sorted(service.scheduler.entries) == [
        "add every 10",
        "tests.beat.test_service.add(1, y=2)",
    ]
    [message] = sent(app, "sums")
    assert message.decode_body()[:2] == ([2, 3], {})


def test_a_standby_beat_sends_nothing_until_the_leader_gives_up(
    app: Celeriac, clock: Clock
) -> None:
    app.conf.beat_schedule = {"tick": {"task": "tasks.tick", "schedule": 10.0}}
    leader, standby = beat(app, clock), beat(app, clock)
    leader.tick()
    standby.tick()

    clock.advance(10)
    standby.tick()
    leader.tick()
    while_led = sent(app)
    leader.sync()
    clock.advance(10)
    standby.tick()

    assert (leader.is_leader, standby.is_leader) == (False, True)
    assert len(while_led) == 1
    assert len(sent(app)) == 1


def test_a_crontab_run_past_its_starting_deadline_is_skipped(app: Celeriac, clock: Clock) -> None:
    app.conf.beat_cron_starting_deadline = 60
    app.conf.beat_schedule = {"hourly": {"task": "tasks.hourly", "schedule": crontab(minute=0)}}
    service = beat(app, clock)
    service.tick()

    clock.advance(3600 + 300)  # the 11:00 run is five minutes late
    service.tick()
    late = sent(app)
    clock.advance(3600 - 300 + 30)  # the 12:00 run is 30 seconds late
    service.tick()

    assert late == []
    assert len(sent(app)) == 1
    assert service.scheduler.states["hourly"].total_run_count == 1


def test_a_custom_schedule_with_celerys_is_due_is_followed(app: Celeriac, clock: Clock) -> None:
    class EveryHalfMinute:
        def is_due(self, last_run_at: datetime.datetime) -> schedstate:
            elapsed = (clock.now() - last_run_at).total_seconds()
            return schedstate(elapsed >= 30, 30 - elapsed if elapsed < 30 else 30)

    app.conf.beat_schedule = {"custom": {"task": "tasks.custom", "schedule": EveryHalfMinute()}}
    service = beat(app, clock)
    service.tick()
    counts = []

    for seconds in (29, 1, 15, 15):
        clock.advance(seconds)
        service.tick()
        counts.append(len(sent(app)))

    assert counts == [0, 1, 0, 1]


@pytest.mark.parametrize(
    ("setting", "value", "error"),
    [
        ("beat_schedule", {"x": {"task": "tasks.x"}}, "must be seconds"),
        ("beat_schedule", {"x": {"task": "tasks.x", "schedule": 5, "when": 1}}, "unknown key"),
        ("beat_schedule", {"x": {"schedule": 5}}, "names no task"),
        ("beat_scheduler", "django_celery_beat.schedulers:DatabaseScheduler", "not supported"),
        ("timezone", "Nowhere/Special", "not a known time zone"),
    ],
)
def test_a_wrong_beat_configuration_is_refused_by_name(
    app: Celeriac, clock: Clock, setting: str, value: object, error: str
) -> None:
    app.conf[setting] = value

    with pytest.raises(ImproperlyConfigured, match=error):
        beat(app, clock).start()


def test_an_embedded_beat_sends_beat_init_and_beat_embedded_init_from_its_thread(
    app: Celeriac, clock: Clock
) -> None:
    app.conf.beat_schedule = {"tick": {"task": "tasks.tick", "schedule": 10.0}}
    heard: list[tuple[str, object, str]] = []
    started = threading.Event()

    def record(signal: Any, sender: object, **kwargs: Any) -> None:
        heard.append((signal.name, sender, threading.current_thread().name))
        started.set()

    signals.beat_init.connect(record)
    signals.beat_embedded_init.connect(record)
    embedded = EmbeddedService(app, now=clock.now)
    try:
        embedded.start()
        assert started.wait(10)
        embedded.stop()
    finally:
        signals.beat_init.disconnect(record)
        signals.beat_embedded_init.disconnect(record)

    assert not embedded.is_alive()
    assert heard == [
        ("beat_init", embedded.service, "Beat"),
        ("beat_embedded_init", embedded.service, "Beat"),
    ]
