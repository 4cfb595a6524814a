"""Schedules of periodic tasks: ``schedule`` (an interval), ``crontab`` and ``solar`` (core).

Pure maths on aware datetimes, with Celery's classes and names. Beyond Celery's
``is_due``/``remaining_estimate``, which read a clock, the three schedules answer two
questions from the times they are given, so that every beat process computes the same
answer from the same stored state and each run is claimed once:

- ``next_run_after(moment, tz)``: the first run time after ``moment``;
- ``due_run(last_run_at, now, tz)``: the latest run time in ``(last_run_at, now]``, or
  None. Runs missed while no beat was running collapse into that one, as in Celery.

``crontab`` reads its fields as wall-clock time in ``tz`` (the app's ``timezone``), and
is explicit about daylight-saving changes, as cron is: a time the clock skips (02:30 on
the night it springs forward) runs once, when the clock jumps (03:00); a time the clock
shows twice (01:30 on the night it falls back) runs once, at its first occurrence. An
entry that runs every hour of the day follows real time instead: it skips the hour that
does not exist and runs in both copies of the repeated one.
"""

from __future__ import annotations

import abc
import bisect
import calendar
import datetime
import os
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celeriac import sun
from celeriac.cronspec import Cronspec, ParseException, crontab_parser, expand_cronspec
from celeriac.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from celeriac.app import Celeriac

__all__ = [
    "BaseSchedule",
    "ExactSchedule",
    "ParseException",
    "configured_timezone",
    "crontab",
    "crontab_parser",
    "maybe_schedule",
    "schedstate",
    "schedule",
    "solar",
]

UTC: Final = datetime.UTC
DAY: Final = datetime.timedelta(days=1)
HOUR: Final = datetime.timedelta(hours=1)
MINUTE: Final = datetime.timedelta(minutes=1)
# The Gregorian calendar repeats every 400 years: a crontab that matches no day in that
# span matches none ever (the constructor refuses those).
CRONTAB_SEARCH_DAYS: Final = 146097
# Every solar event happens at least once a year below latitude 89.
SOLAR_SEARCH_DAYS: Final = 370
# A relative interval that fell this many periods behind jumps ahead instead of stepping.
RELATIVE_CATCH_UP: Final = 100

schedstate = namedtuple("schedstate", ("is_due", "next"))
"""What ``is_due`` returns: whether to run now, and seconds until the next check."""


def configured_timezone(conf: Mapping[str, Any]) -> datetime.tzinfo:
    """The time zone of an app's settings: ``timezone``, else UTC (or local time when
    ``enable_utc`` is off).

    Raises:
        ImproperlyConfigured: ``timezone`` names no zone known to ``zoneinfo``.
    """
    name = conf.get("timezone")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ImproperlyConfigured(f"timezone {name!r} is not a known time zone") from exc
    if conf.get("enable_utc", True):
        return UTC
    return _local_zone()


def _local_zone() -> datetime.tzinfo:
    """This machine's zone, with its daylight-saving rules when the system has them.

    Read from the system's zone file, as ``zoneinfo`` reads every named zone.
    """
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as file:
            return ZoneInfo.from_file(file)
    except (OSError, ValueError):
        fixed = datetime.datetime.now().astimezone().tzinfo
        return fixed or UTC


def _aware(moment: datetime.datetime) -> datetime.datetime:
    """``moment`` in UTC; a naive one is taken to be UTC already, as Celery does."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class BaseSchedule(abc.ABC):
    """Celery's base class: a custom schedule defines ``is_due`` and ``remaining_estimate``.

    ``nowfun`` replaces the clock (a function returning an aware datetime); ``app``
    gives the time zone, the current app's when None.
    """

    def __init__(
        self, nowfun: Callable[[], datetime.datetime] | None = None, app: Celeriac | None = None
    ) -> None:
        self.nowfun = nowfun
        self._app = app

    @property
    def app(self) -> Celeriac:
        """The app whose ``timezone`` this schedule follows."""
        if self._app is not None:
            return self._app
        from celeriac.current import get_current_app

        return get_current_app()

    @app.setter
    def app(self, app: Celeriac | None) -> None:
        self._app = app

    @property
    def tz(self) -> datetime.tzinfo:
        """The app's time zone."""
        return configured_timezone(self.app.conf)

    @property
    def utc_enabled(self) -> bool:
        """The app's ``enable_utc``."""
        return bool(self.app.conf.enable_utc)

    def now(self) -> datetime.datetime:
        """The current time: ``nowfun``'s, else the clock's, in the app's time zone."""
        if self.nowfun is not None:
            return self.nowfun()
        return datetime.datetime.now(self.tz)

    def maybe_make_aware(self, dt: datetime.datetime) -> datetime.datetime:
        """``dt`` in the app's time zone; a naive one is taken to be UTC."""
        return _aware(dt).astimezone(self.tz)

    def to_local(self, dt: datetime.datetime) -> datetime.datetime:
        """``dt`` in the app's time zone."""
        return self.maybe_make_aware(dt)

    @abc.abstractmethod
    def remaining_estimate(self, last_run_at: datetime.datetime) -> datetime.timedelta:
        """How long after now the run following ``last_run_at`` is due."""

    @abc.abstractmethod
    def is_due(self, last_run_at: datetime.datetime) -> schedstate:
        """``(is_due, seconds until the next check)`` given the last run."""

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BaseSchedule):
            return other.nowfun == self.nowfun
        return NotImplemented


class ExactSchedule(BaseSchedule):
    """A schedule whose run times follow from the times given, not from a clock.

    Beat uses ``next_run_after`` and ``due_run``; ``is_due`` and ``remaining_estimate``
    answer Celery's questions with them. A subclass that overrides ``is_due`` is run the
    way Celery runs custom schedules, by asking ``is_due``.
    """

    @abc.abstractmethod
    def next_run_after(self, moment: datetime.datetime, tz: datetime.tzinfo) -> datetime.datetime:
        """The first run time after ``moment`` (aware, UTC)."""

    @abc.abstractmethod
    def due_run(
        self, last_run_at: datetime.datetime, now: datetime.datetime, tz: datetime.tzinfo
    ) -> datetime.datetime | None:
        """The latest run time in ``(last_run_at, now]`` (aware, UTC), or None."""

    def remaining_estimate(self, last_run_at: datetime.datetime) -> datetime.timedelta:
        return self.next_run_after(_aware(last_run_at), self.tz) - _aware(self.now())

    def is_due(self, last_run_at: datetime.datetime) -> schedstate:
        tz = self.tz
        now = _aware(self.now())
        due = self.due_run(_aware(last_run_at), now, tz) is not None
        after = now if due else _aware(last_run_at)
        wait = (self.next_run_after(after, tz) - now).total_seconds()
        return schedstate(is_due=due, next=max(wait, 0.0))


class schedule(ExactSchedule):
    """Run every ``run_every`` (seconds or a timedelta), counted from the last run.

    With ``relative`` each run time is rounded down to the interval's resolution (the
    day, hour, minute or second, in the app's time zone), as Celery's ``relative`` does.
    """

    def __init__(
        self,
        run_every: float | datetime.timedelta | None = None,
        relative: bool = False,
        nowfun: Callable[[], datetime.datetime] | None = None,
        app: Celeriac | None = None,
    ) -> None:
        if isinstance(run_every, int | float):
            run_every = datetime.timedelta(seconds=run_every)
        if not isinstance(run_every, datetime.timedelta) or run_every <= datetime.timedelta():
            raise ValueError(f"run_every must be a positive interval, not {run_every!r}")
        self.run_every = run_every
        self.relative = relative
        super().__init__(nowfun=nowfun, app=app)

    @property
    def seconds(self) -> float:
        """The interval in seconds."""
        return self.run_every.total_seconds()

    @property
    def human_seconds(self) -> str:
        """The interval for people: ``10.00 seconds``, ``1.50 minutes``..."""
        for unit, size in (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0)):
            if self.seconds >= size:
                count = self.seconds / size
                return f"{count:.2f} {unit}{'' if count == 1 else 's'}"
        return f"{self.seconds:.2f} second{'' if self.seconds == 1 else 's'}"

    def next_run_after(self, moment: datetime.datetime, tz: datetime.tzinfo) -> datetime.datetime:
        end = moment + self.run_every
        if not self.relative:
            return end
        rounded = _round_down(end, self.run_every, tz)
        # Below a second the rounding can fall before the last run; then it is not used.
        return rounded if rounded > moment else end

    def due_run(
        self, last_run_at: datetime.datetime, now: datetime.datetime, tz: datetime.tzinfo
    ) -> datetime.datetime | None:
        if not self.relative:
            periods = (now - last_run_at) // self.run_every
            return last_run_at + periods * self.run_every if periods >= 1 else None
        run = self.next_run_after(last_run_at, tz)
        if run > now:
            return None
        if now - run > RELATIVE_CATCH_UP * self.run_every:
            run = self.next_run_after(now - self.run_every, tz)
        while (following := self.next_run_after(run, tz)) <= now:
            run = following
        return run

    def __repr__(self) -> str:
        return f"<freq: {self.human_seconds}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, schedule):
            return self.run_every == other.run_every and self.relative == other.relative
        return self.run_every == other


def _round_down(
    moment: datetime.datetime, interval: datetime.timedelta, tz: datetime.tzinfo
) -> datetime.datetime:
    """``moment`` rounded down to ``interval``'s resolution on the wall clock of ``tz``."""
    local = moment.astimezone(tz).replace(microsecond=0)
    if interval >= DAY:
        local = local.replace(hour=0, minute=0, second=0)
    elif interval >= HOUR:
        local = local.replace(minute=0, second=0)
    elif interval >= MINUTE:
        local = local.replace(second=0)
    return local.astimezone(UTC)


class crontab(ExactSchedule):
    """Run at the minutes, hours, days of the week and of the month and months given,
    cron-style; Sunday is day 0. A day must match both ``day_of_week`` and
    ``day_of_month`` (Celery's rule, where cron takes either).
    """

    def __init__(
        self,
        minute: Cronspec = "*",
        hour: Cronspec = "*",
        day_of_week: Cronspec = "*",
        day_of_month: Cronspec = "*",
        month_of_year: Cronspec = "*",
        **kwargs: Any,
    ) -> None:
        self._orig_minute = minute
        self._orig_hour = hour
        self._orig_day_of_week = day_of_week
        self._orig_day_of_month = day_of_month
        self._orig_month_of_year = month_of_year
        self.minute = expand_cronspec(minute, 60)
        self.hour = expand_cronspec(hour, 24)
        self.day_of_week = expand_cronspec(day_of_week, 7)
        self.day_of_month = expand_cronspec(day_of_month, 31, 1)
        self.month_of_year = expand_cronspec(month_of_year, 12, 1)
        if not any(
            day <= calendar.monthrange(2000, month)[1]
            for month in self.month_of_year
            for day in self.day_of_month
        ):
            raise ValueError(f"{self!r} names no day that exists")
        self._minutes_of_day = sorted(
            hour * 60 + minute for hour in self.hour for minute in self.minute
        )
        super().__init__(**kwargs)

    @classmethod
    def from_string(cls, text: str) -> crontab:
        """Read a cron line's five fields: minute hour day-of-month month day-of-week."""
        minute, hour, day_of_month, month_of_year, day_of_week = text.split()
        return cls(minute, hour, day_of_week, day_of_month, month_of_year)

    def next_run_after(self, moment: datetime.datetime, tz: datetime.tzinfo) -> datetime.datetime:
        first_day = moment.astimezone(tz).date()
        for day in self._days(first_day, 1):
            runs = self._runs_on(day, tz)
            index = bisect.bisect_right(runs, moment)
            if index < len(runs):
                return runs[index]
        raise ValueError(f"{self!r} never runs after {moment}")

    def due_run(
        self, last_run_at: datetime.datetime, now: datetime.datetime, tz: datetime.tzinfo
    ) -> datetime.datetime | None:
        if self.next_run_after(last_run_at, tz) > now:
            return None
        for day in self._days(now.astimezone(tz).date(), -1):
            runs = self._runs_on(day, tz)
            index = bisect.bisect_right(runs, now)
            if index:
                return runs[index - 1]
        raise AssertionError("unreachable: a run was found before now")

    def _matches(self, day: datetime.date) -> bool:
        return (
            day.month in self.month_of_year
            and day.day in self.day_of_month
            and day.isoweekday() % 7 in self.day_of_week
        )

    def _days(self, start: datetime.date, step: int) -> Iterator[datetime.date]:
        """The matching days from ``start`` on, forwards (step 1) or backwards (-1)."""
        day = start
        for _ in range(CRONTAB_SEARCH_DAYS):
            if self._matches(day):
                yield day
            if day.month not in self.month_of_year:
                # Skip the rest of a month that never matches.
                if step > 0:
                    day = (day.replace(day=1) + 32 * DAY).replace(day=1)
                else:
                    day = day.replace(day=1) - DAY
            else:
                day += step * DAY

    def _runs_on(self, day: datetime.date, tz: datetime.tzinfo) -> list[datetime.datetime]:
        """The run instants (UTC, ascending) of a matching local day."""
        start = datetime.datetime.combine(day, datetime.time(), tz)
        end = datetime.datetime.combine(day + DAY, datetime.time(), tz)
        offset = start.utcoffset() or datetime.timedelta()
        if offset == end.utcoffset() and end.astimezone(UTC) - start.astimezone(UTC) == DAY:
            # No clock change today: wall time minus one offset, in order.
            midnight = datetime.datetime.combine(day, datetime.time(), UTC) - offset
            return [midnight + minute * MINUTE for minute in self._minutes_of_day]
        every_hour = len(self.hour) == 24
        runs: set[datetime.datetime] = set()
        for minute_of_day in self._minutes_of_day:
            wall = datetime.datetime.combine(day, datetime.time(*divmod(minute_of_day, 60)))
            runs.update(_instants(wall, tz, every_hour=every_hour))
        return sorted(runs)

    def __repr__(self) -> str:
        return (
            f"<crontab: {self._orig_minute} {self._orig_hour} {self._orig_day_of_month} "
            f"{self._orig_month_of_year} {self._orig_day_of_week} (m/h/dM/MY/d)>"
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, crontab):
            return (
                other.minute == self.minute
                and other.hour == self.hour
                and other.day_of_week == self.day_of_week
                and other.day_of_month == self.day_of_month
                and other.month_of_year == self.month_of_year
                and super().__eq__(other)
            )
        return NotImplemented


def _instants(
    wall: datetime.datetime, tz: datetime.tzinfo, *, every_hour: bool
) -> list[datetime.datetime]:
    """The instants at which the naive local time ``wall`` runs, by the module's DST rules."""
    earlier = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    later = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if earlier == later:
        return [earlier]
    if earlier < later:
        # Shown twice (the clock fell back): once, unless the entry runs every hour.
        return [earlier, later] if every_hour else [earlier]
    # Skipped (the clock sprang forward): fold=1 reads it with the new offset, before the
    # jump; fold=0 with the old one, after it.
    return [] if every_hour else [_transition(later, earlier, tz)]


def _transition(
    before: datetime.datetime, after: datetime.datetime, tz: datetime.tzinfo
) -> datetime.datetime:
    """The first second at which ``tz``'s offset is ``after``'s, between the two instants."""
    offset = after.astimezone(tz).utcoffset()
    low, high = int(before.timestamp()), int(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.datetime.fromtimestamp(middle, tz).utcoffset() == offset:
            high = middle
        else:
            low = middle
    return datetime.datetime.fromtimestamp(high, UTC)


class solar(ExactSchedule):
    """Run at a solar event seen from ``lat``, ``lon`` (degrees, east and north positive):
    ``dawn_astronomical``, ``dawn_nautical``, ``dawn_civil``, ``sunrise``, ``solar_noon``,
    ``sunset``, ``dusk_civil``, ``dusk_nautical`` or ``dusk_astronomical``.

    The times come from NOAA's equations (``celeriac.sun``), within about a minute of
    an ephemeris; no third-party library is needed. On days the sun does not reach the
    event's depth (polar summer or winter) there is no run.
    """

    def __init__(self, event: str, lat: float, lon: float, **kwargs: Any) -> None:
        if event not in sun.EVENTS:
            raise ValueError(
                f'Argument event "{event}" is invalid, must be one of '
                f"{', '.join(sorted(sun.EVENTS))}."
            )
        if not -90 <= lat <= 90:
            raise ValueError(f"Argument latitude {lat} is invalid, must be between -90 and 90.")
        if not -180 <= lon <= 180:
            raise ValueError(f"Argument longitude {lon} is invalid, must be between -180 and 180.")
        self.event = event
        self.lat = lat
        self.lon = lon
        super().__init__(**kwargs)

    def next_run_after(self, moment: datetime.datetime, tz: datetime.tzinfo) -> datetime.datetime:
        # Consecutive days' events are in order, so the first one after moment is the next.
        start = moment.astimezone(UTC).date() - DAY
        for days in range(SOLAR_SEARCH_DAYS):
            run = sun.event_time(self.event, start + days * DAY, self.lat, self.lon)
            if run is not None and run > moment:
                return run
        raise ValueError(f"{self!r}: the sun does not reach this event within a year")

    def due_run(
        self, last_run_at: datetime.datetime, now: datetime.datetime, tz: datetime.tzinfo
    ) -> datetime.datetime | None:
        if self.next_run_after(last_run_at, tz) > now:
            return None
        start = now.astimezone(UTC).date() + DAY
        for days in range(SOLAR_SEARCH_DAYS):
            run = sun.event_time(self.event, start - days * DAY, self.lat, self.lon)
            if run is not None and run <= now:
                return run
        raise AssertionError("unreachable: an event was found before now")

    def __repr__(self) -> str:
        return f"<solar: {self.event} at latitude {self.lat}, longitude: {self.lon}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, solar):
            return (other.event, other.lat, other.lon) == (self.event, self.lat, self.lon)
        return NotImplemented


def maybe_schedule(
    s: float | datetime.timedelta | BaseSchedule | None,
    relative: bool = False,
    app: Celeriac | None = None,
) -> BaseSchedule | None:
    """A schedule from a number of seconds, a timedelta, or a schedule (given ``app``)."""
    if s is None:
        return None
    if isinstance(s, int | float | datetime.timedelta):
        return schedule(s, relative, app=app)
    if app is not None:
        s.app = app
    return s
