"""ScheduleEntry: one periodic task of ``beat_schedule``, read and checked (edge layer).

An entry is configuration only: which task, when, with which arguments and message
options. Its last run lives in the store (``store.py``), keyed by the entry's name, with
the entry's ``fingerprint`` so that a changed schedule is noticed on restart.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from celeriac.exceptions import ImproperlyConfigured
from celeriac.schedules import crontab, maybe_schedule, schedule, solar

__all__ = ["ScheduleEntry", "entries_from_settings"]

FIELDS: Final = frozenset({"task", "schedule", "args", "kwargs", "options", "relative"})


@dataclass(frozen=True, eq=False, slots=True)
class ScheduleEntry:
    """A periodic task: ``name`` in ``beat_schedule``, the ``task`` to send and when.

    ``schedule`` is one of ``celeriac.schedules``' or any object with Celery's
    ``is_due(last_run_at)``. ``options`` go to ``apply_async`` (``queue``,
    ``routing_key``, ``priority``, ``expires``, ``headers``...).
    """

    name: str
    task: str
    schedule: Any
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_setting(cls, name: str, value: Mapping[str, Any]) -> ScheduleEntry:
        """Read one ``beat_schedule`` item, as Celery accepts it.

        Raises:
            ImproperlyConfigured: a missing task or schedule, an unknown key, or a value
                of the wrong kind, named with the entry.
        """
        if not isinstance(value, Mapping):
            raise ImproperlyConfigured(f"beat_schedule[{name!r}] must be a dict, not {value!r}")
        unknown = sorted(set(value) - FIELDS)
        if unknown:
            raise ImproperlyConfigured(
                f"beat_schedule[{name!r}]: unknown key(s) {', '.join(unknown)};"
                f" known: {', '.join(sorted(FIELDS))}"
            )
        task = value.get("task")
        if not isinstance(task, str) or not task:
            raise ImproperlyConfigured(f"beat_schedule[{name!r}] names no task")
        when = value.get("schedule")
        try:
            when = maybe_schedule(when, bool(value.get("relative", False)))
        except ValueError as exc:
            raise ImproperlyConfigured(f"beat_schedule[{name!r}]: {exc}") from exc
        if not callable(getattr(when, "is_due", None)):
            raise ImproperlyConfigured(
                f"beat_schedule[{name!r}]: the schedule must be seconds, a timedelta or a"
                f" schedule (celeriac.schedules), not {value.get('schedule')!r}"
            )
        args = value.get("args") or ()
        kwargs = value.get("kwargs") or {}
        options = value.get("options") or {}
        if not isinstance(args, list | tuple):
            raise ImproperlyConfigured(f"beat_schedule[{name!r}]: args must be a list or tuple")
        if not isinstance(kwargs, Mapping) or not isinstance(options, Mapping):
            raise ImproperlyConfigured(f"beat_schedule[{name!r}]: kwargs and options must be dicts")
        return cls(name, task, when, tuple(args), dict(kwargs), dict(options))

    def fingerprint(self, tz: datetime.tzinfo) -> str:
        """What identifies this entry's timing; a stored run of another fingerprint is of
        an older schedule. Custom schedules are known by their class only."""
        when = self.schedule
        if isinstance(when, schedule):
            relative = " relative" if when.relative else ""
            return f"every {when.run_every.total_seconds()!r}s{relative}"
        if isinstance(when, crontab):
            fields = (
                when.minute,
                when.hour,
                when.day_of_month,
                when.month_of_year,
                when.day_of_week,
            )
            spec = " ".join(",".join(map(str, sorted(values))) for values in fields)
            return f"crontab {spec} in {tz}"
        if isinstance(when, solar):
            return f"solar {when.event} at {when.lat!r} {when.lon!r}"
        kind = type(when)
        return f"{kind.__module__}.{kind.__qualname__}"


def entries_from_settings(beat_schedule: Mapping[str, Any]) -> list[ScheduleEntry]:
    """Every entry of ``beat_schedule``, checked, in the setting's order."""
    return [ScheduleEntry.from_setting(name, value) for name, value in beat_schedule.items()]
