"""Which entries are due, given their last runs and the time (pure, edge layer's brain).

The scheduler holds the entries and the state the store last returned, and answers two
questions for a given ``now``: which runs are due (``due_runs``), and how long nothing
will be (``seconds_until_next``). It does no I/O: the service claims each run in the
store, sends it, and tells the scheduler with ``record``.

A due run carries its due time, computed from the stored last run alone for celeriac's
own schedules, so two beats reading the same state name the same run and the store lets
only one claim it. A custom schedule (Celery's ``is_due`` protocol) is due when
``is_due`` says so, at ``now``.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from celeriac.beat.entry import ScheduleEntry
from celeriac.beat.store import EntryState
from celeriac.schedules import ExactSchedule, crontab

__all__ = ["DueRun", "Scheduler", "is_exact"]

# How long to sleep when no entry will be due (an empty schedule).
IDLE_SECONDS: Final = 300.0


@dataclass(frozen=True, slots=True)
class DueRun:
    """One run to claim: its entry, its due time, and whether to send it (a crontab run
    past ``beat_cron_starting_deadline`` is recorded but not sent)."""

    entry: ScheduleEntry
    due: datetime.datetime
    send: bool = True


def is_exact(schedule: object) -> bool:
    """Whether beat computes this schedule's run times itself, rather than asking is_due."""
    return isinstance(schedule, ExactSchedule) and type(schedule).is_due is ExactSchedule.is_due


class Scheduler:
    """The entries of one beat and their last runs; ``tz`` is the app's time zone.

    ``cron_starting_deadline`` (seconds, Celery's ``beat_cron_starting_deadline``):
    a crontab run older than this when found due is skipped rather than sent late.
    """

    def __init__(
        self,
        entries: Sequence[ScheduleEntry],
        tz: datetime.tzinfo,
        *,
        cron_starting_deadline: float | None = None,
    ) -> None:
        self.entries = {entry.name: entry for entry in entries}
        self.tz = tz
        self.cron_starting_deadline = cron_starting_deadline
        self.states: dict[str, EntryState] = {}

    def fingerprints(self) -> dict[str, str]:
        """Each entry's fingerprint, for ``ScheduleStore.sync_entries``."""
        return {name: entry.fingerprint(self.tz) for name, entry in self.entries.items()}

    def load(self, states: Mapping[str, EntryState]) -> None:
        """Take the states the store returned (entries without one are not yet anchored)."""
        self.states = {name: state for name, state in states.items() if name in self.entries}

    def due_runs(self, now: datetime.datetime) -> list[DueRun]:
        """The runs due at ``now``, oldest due time first."""
        runs = []
        for name, entry in self.entries.items():
            state = self.states.get(name)
            if state is None:
                continue
            due = self._due_time(entry, state.last_run_at, now)
            if due is not None:
                runs.append(DueRun(entry, due, send=not self._is_past_deadline(entry, due, now)))
        return sorted(runs, key=lambda run: run.due)

    def record(self, run: DueRun) -> None:
        """Note that ``run`` was claimed (and sent, if it was to be)."""
        state = self.states[run.entry.name]
        self.states[run.entry.name] = EntryState(
            run.due, state.total_run_count + (1 if run.send else 0)
        )

    def seconds_until_next(self, now: datetime.datetime) -> float:
        """How long until the next run is due (0 if one is due now)."""
        waits = [IDLE_SECONDS]
        for name, entry in self.entries.items():
            state = self.states.get(name)
            if state is None:
                continue
            schedule = entry.schedule
            if is_exact(schedule):
                following = schedule.next_run_after(state.last_run_at, self.tz)
                waits.append((following - now).total_seconds())
            else:
                is_due, wait = schedule.is_due(state.last_run_at)
                waits.append(0.0 if is_due else float(wait))
        return max(0.0, min(waits))

    def _due_time(
        self, entry: ScheduleEntry, last_run_at: datetime.datetime, now: datetime.datetime
    ) -> datetime.datetime | None:
        schedule = entry.schedule
        if is_exact(schedule):
            due: datetime.datetime | None = schedule.due_run(last_run_at, now, self.tz)
            return due
        is_due, _ = schedule.is_due(last_run_at)
        return now if is_due else None

    def _is_past_deadline(
        self, entry: ScheduleEntry, due: datetime.datetime, now: datetime.datetime
    ) -> bool:
        deadline = self.cron_starting_deadline
        if deadline is None or not isinstance(entry.schedule, crontab):
            return False
        return (now - due).total_seconds() > deadline
