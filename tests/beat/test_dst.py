"""Crontab entries across daylight-saving changes, in New York and Berlin: the scheduler is
asked every minute of three days around each change, as a beat would ask it."""

from __future__ import annotations

import datetime
import itertools
from zoneinfo import ZoneInfo

import pytest

from celeriac.beat.entry import ScheduleEntry
from celeriac.beat.scheduler import Scheduler
from celeriac.beat.store import EntryState
from celeriac.schedules import crontab

MINUTE = datetime.timedelta(minutes=1)


def runs_over_three_days(
    schedule: crontab, zone: str, day: datetime.date
) -> list[datetime.datetime]:
    """The runs a beat sends from the day before ``day`` to the day after, local times."""
    tz = ZoneInfo(zone)
    scheduler = Scheduler([ScheduleEntry("job", "tasks.job", schedule)], tz)
    start = datetime.datetime.combine(day - datetime.timedelta(days=1), datetime.time(), tz)
    end = datetime.datetime.combine(day + datetime.timedelta(days=2), datetime.time(), tz)
    now = start.astimezone(datetime.UTC)
    scheduler.load({"job": EntryState(now, 0)})
    sent = []
    while now < end:
        now += MINUTE
        for run in scheduler.due_runs(now):
            scheduler.record(run)
            sent.append(run.due.astimezone(tz))
    return sent


@pytest.mark.parametrize(
    ("zone", "day", "hour", "expected"),
    [
        # Spring forward at 02:00: 02:30 does not exist; it runs once, when the clock jumps.
        ("America/New_York", datetime.date(2024, 3, 10), 2,
         ["2024-03-09T02:30:00-05:00", "2024-03-10T03:00:00-04:00", "2024-03-11T02:30:00-04:00"]),
        ("Europe/Berlin", datetime.date(2024, 3, 31), 2,
         ["2024-03-30T02:30:00+01:00", "2024-03-31T03:00:00+02:00", "2024-04-01T02:30:00+02:00"]),
        # Fall back: 01:30 (New York) and 02:30 (Berlin) happen twice; they run at the first.
        ("America/New_York", datetime.date(2024, 11, 3), 1,
         ["2024-11-02T01:30:00-04:00", "2024-11-03T01:30:00-04:00", "2024-11-04T01:30:00-05:00"]),
        ("Europe/Berlin", datetime.date(2024, 10, 27), 2,
         ["2024-10-26T02:30:00+02:00", "2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"]),
    ],
)  # fmt: skip
def test_a_daily_run_in_a_skipped_or_repeated_hour_runs_once_that_day(
    zone: str, day: datetime.date, hour: int, expected: list[str]
) -> None:
    sent = runs_over_three_days(crontab(minute=30, hour=hour), zone, day)

    assert [run.isoformat() for run in sent] == expected


@pytest.mark.parametrize(
    ("zone", "day", "runs_that_day"),
    [
        ("America/New_York", datetime.date(2024, 3, 10), 23),
        ("America/New_York", datetime.date(2024, 11, 3), 25),
        ("Europe/Berlin", datetime.date(2024, 3, 31), 23),
        ("Europe/Berlin", datetime.date(2024, 10, 27), 25),
    ],
)
def test_an_hourly_run_follows_real_time_across_a_clock_change(
    zone: str, day: datetime.date, runs_that_day: int
) -> None:
    sent = runs_over_three_days(crontab(minute=30), zone, day)

    instants = [run.astimezone(datetime.UTC) for run in sent]
    gaps = {later - earlier for earlier, later in itertools.pairwise(instants)}
    assert gaps == {datetime.timedelta(hours=1)}
    assert sum(run.date() == day for run in sent) == runs_that_day
