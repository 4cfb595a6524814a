"""schedule, crontab and solar: run times computed from the times given, no clock."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import pytest

from celeriac import Celeriac
from celeriac.exceptions import ImproperlyConfigured
from celeriac.schedules import (
    ParseException,
    configured_timezone,
    crontab,
    crontab_parser,
    maybe_schedule,
    schedstate,
    schedule,
    solar,
)

UTC = datetime.UTC
BERLIN = ZoneInfo("Europe/Berlin")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime.datetime:
    return datetime.datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# ---- schedule (an interval) ----------------------------------------------------------


def test_an_interval_runs_one_period_after_the_last_run() -> None:
    every = schedule(datetime.timedelta(seconds=10))

    assert every.next_run_after(utc(2024, 1, 1, 10), UTC) == utc(2024, 1, 1, 10, 0, 10)
    assert every.due_run(utc(2024, 1, 1, 10), utc(2024, 1, 1, 10, 0, 9), UTC) is None
    assert every.due_run(utc(2024, 1, 1, 10), utc(2024, 1, 1, 10, 0, 10), UTC) == utc(
        2024, 1, 1, 10, 0, 10
    )


def test_interval_runs_missed_while_beat_was_down_collapse_into_the_latest() -> None:
    every = schedule(0.2)
    last = utc(2024, 1, 1)

    due = every.due_run(last, last + datetime.timedelta(seconds=1.1), UTC)

    assert due == last + datetime.timedelta(seconds=1.0)


def test_a_relative_interval_runs_on_its_resolution() -> None:
    hourly = schedule(datetime.timedelta(hours=1), relative=True)

    assert hourly.next_run_after(utc(2024, 1, 1, 10, 17, 3), UTC) == utc(2024, 1, 1, 11)
    assert hourly.due_run(utc(2024, 1, 1, 10, 17), utc(2024, 1, 1, 13, 5), UTC) == utc(
        2024, 1, 1, 13
    )


@pytest.mark.parametrize("run_every", [0, -1, None, "10"])
def test_an_interval_must_be_a_positive_duration(run_every: object) -> None:
    with pytest.raises(ValueError, match="run_every"):
        schedule(run_every)  # type: ignore[arg-type]


def test_numbers_and_timedeltas_become_interval_schedules() -> None:
    assert maybe_schedule(30) == schedule(30)
    assert maybe_schedule(datetime.timedelta(minutes=1), relative=True) == schedule(60, True)
    assert repr(schedule(90)) == "<freq: 1.50 minutes>"


# ---- crontab fields --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "max_", "min_", "expected"),
    [
        ("*/15", 60, 0, {0, 15, 30, 45}),
        ("1,13,30-33,50-59/4", 60, 0, {1, 13, 30, 31, 32, 33, 50, 54, 58}),
        ("*/4", 24, 0, {0, 4, 8, 12, 16, 20}),
        ("mon-fri", 7, 0, {1, 2, 3, 4, 5}),
        ("fri-mon", 7, 0, {5, 6, 0, 1}),
        ("sunday,Saturday", 7, 0, {0, 6}),
        ("*/3", 31, 1, {1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31}),
        ("2-12/2", 12, 1, {2, 4, 6, 8, 10, 12}),
        ("jan-mar,dec", 12, 1, {1, 2, 3, 12}),
    ],
)
def test_crontab_fields_expand_to_the_values_they_name(
    spec: str, max_: int, min_: int, expected: set[int]
) -> None:
    assert crontab_parser(max_, min_).parse(spec) == expected


@pytest.mark.parametrize(
    ("spec", "error"),
    [("", ParseException), ("*/", ParseException), ("5/2", ParseException), ("1-", ParseException),
     ("60", ValueError), ("funday", ValueError), ("*/0", ParseException)],
)  # fmt: skip
def test_a_bad_crontab_field_is_refused(spec: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        crontab_parser(60).parse(spec)


def test_a_crontab_that_names_no_existing_day_is_refused() -> None:
    with pytest.raises(ValueError, match="names no day"):
        crontab(day_of_month=31, month_of_year="feb,apr")


def test_a_crontab_reads_a_cron_line() -> None:
    line = crontab.from_string("*/5 9-17 * * mon-fri")

    assert line == crontab(minute="*/5", hour="9-17", day_of_week="mon-fri")
    assert repr(line) == "<crontab: */5 9-17 * * mon-fri (m/h/dM/MY/d)>"


# ---- crontab run times -----------------------------------------------------------------


def test_a_crontab_runs_at_the_next_matching_minute() -> None:
    quarter = crontab(minute="*/15")

    assert quarter.next_run_after(utc(2024, 5, 6, 10, 7, 30), UTC) == utc(2024, 5, 6, 10, 15)
    assert quarter.next_run_after(utc(2024, 5, 6, 10, 15), UTC) == utc(2024, 5, 6, 10, 30)


def test_crontab_runs_missed_while_beat_was_down_collapse_into_the_latest() -> None:
    quarter = crontab(minute="*/15")

    assert quarter.due_run(utc(2024, 5, 6, 10), utc(2024, 5, 6, 10, 14, 59), UTC) is None
    assert quarter.due_run(utc(2024, 5, 6, 10), utc(2024, 5, 6, 12, 50), UTC) == utc(
        2024, 5, 6, 12, 45
    )


def test_a_crontab_day_must_match_both_day_of_week_and_day_of_month() -> None:
    first_monday = crontab(minute=0, hour=8, day_of_week="mon", day_of_month="1-7")

    assert first_monday.next_run_after(utc(2024, 5, 7), UTC) == utc(2024, 6, 3, 8)


def test_a_crontab_on_the_29th_of_february_waits_for_a_leap_year() -> None:
    leap = crontab(minute=0, hour=0, day_of_month=29, month_of_year=2)

    assert leap.next_run_after(utc(2024, 3, 1), UTC) == utc(2028, 2, 29)
    assert leap.due_run(utc(2020, 3, 1), utc(2025, 1, 1), UTC) == utc(2024, 2, 29)


def test_a_crontab_reads_its_hours_on_the_time_zones_wall_clock() -> None:
    nine = crontab(minute=0, hour=9)

    assert nine.next_run_after(utc(2024, 7, 1), BERLIN) == utc(2024, 7, 1, 7)
    assert nine.next_run_after(utc(2024, 12, 1), BERLIN) == utc(2024, 12, 1, 8)


# ---- solar -----------------------------------------------------------------------------

# The first event after the start, by PyEphem 4.2.1 set up as Celery sets it up (horizon,
# use_center, pressure 0); days without the event (polar summer and winter) skipped.
EPHEMERIS = [
    ("dawn_astronomical", -33.8688, 151.2093, "2024-01-15T00:00", "2024-01-15T17:19:48"),
    ("dawn_nautical", 40.7128, -74.006, "2024-03-10T00:00", "2024-03-10T10:15:58"),
    ("dawn_civil", 40.7128, -74.006, "2024-03-10T00:00", "2024-03-10T10:47:38"),
    ("sunrise", 51.5074, -0.1278, "2024-06-21T00:00", "2024-06-21T03:43:14"),
    ("solar_noon", 35.6762, 139.6503, "2024-05-05T00:00", "2024-05-05T02:38:04"),
    ("sunset", -33.8688, 151.2093, "2024-07-01T00:00", "2024-07-01T06:57:10"),
    ("dusk_civil", 64.1466, -21.9426, "2024-12-21T00:00", "2024-12-21T16:48:55"),
    ("dusk_nautical", 40.7128, -74.006, "2024-11-03T12:00", "2024-11-03T22:50:19"),
    ("dusk_astronomical", 52.52, 13.405, "2024-06-21T00:00", "2024-07-25T22:55:12"),
    ("sunrise", 69.6, 18.9, "2024-06-21T00:00", "2024-07-25T23:24:16"),
    ("sunset", 69.6, 18.9, "2024-12-01T00:00", "2025-01-14T11:04:23"),
    ("sunrise", -54.8, -68.3, "2025-02-01T00:00", "2025-02-01T08:57:22"),
]


@pytest.mark.parametrize(("event", "lat", "lon", "start", "expected"), EPHEMERIS)
def test_a_solar_event_is_within_a_minute_of_the_ephemeris(
    event: str, lat: float, lon: float, start: str, expected: str
) -> None:
    begin = datetime.datetime.fromisoformat(start).replace(tzinfo=UTC)

    found = solar(event, lat, lon).next_run_after(begin, UTC)

    error = found - datetime.datetime.fromisoformat(expected).replace(tzinfo=UTC)
    assert abs(error.total_seconds()) < 60


def test_solar_runs_missed_while_beat_was_down_collapse_into_the_latest() -> None:
    sunrise = solar("sunrise", 51.5074, -0.1278)

    due = sunrise.due_run(utc(2024, 6, 19, 12), utc(2024, 6, 21, 12), UTC)

    assert due is not None
    assert due.date() == datetime.date(2024, 6, 21)
    assert sunrise.due_run(utc(2024, 6, 21, 12), utc(2024, 6, 22, 3), UTC) is None


@pytest.mark.parametrize(
    ("event", "lat", "lon"), [("noon", 0, 0), ("sunrise", 91, 0), ("sunset", 0, -181)]
)
def test_a_bad_solar_event_or_place_is_refused(event: str, lat: float, lon: float) -> None:
    with pytest.raises(ValueError, match="invalid"):
        solar(event, lat, lon)


# ---- Celery's is_due and the app's time zone -------------------------------------------


def test_is_due_answers_celerys_question_in_the_apps_time_zone() -> None:
    app = Celeriac("tz", broker="memory://schedules", set_as_current=False)
    app.conf.timezone = "Europe/Berlin"
    now = utc(2024, 7, 1, 7, 0, 30)
    nine = crontab(minute=0, hour=9, nowfun=lambda: now, app=app)

    assert nine.is_due(utc(2024, 6, 30, 7)) == schedstate(True, 86400 - 30)
    assert nine.is_due(now) == schedstate(False, 86400 - 30)
    assert nine.remaining_estimate(now) == datetime.timedelta(seconds=86400 - 30)


def test_the_time_zone_comes_from_timezone_else_utc_else_local_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")

    assert configured_timezone({"timezone": "America/New_York"}) == ZoneInfo("America/New_York")
    assert configured_timezone({"timezone": None, "enable_utc": True}) is UTC
    assert configured_timezone({"timezone": None, "enable_utc": False}) == ZoneInfo("Asia/Kolkata")
    with pytest.raises(ImproperlyConfigured, match="Mars/Olympus"):
        configured_timezone({"timezone": "Mars/Olympus"})
