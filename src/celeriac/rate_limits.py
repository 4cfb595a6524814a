"""Rate limits: Celery's ``"10/m"`` strings and the spacing of task starts they ask for.

Pure: no clocks of their own (callers pass ``now``), no I/O. Celery's worker keeps a
token bucket of capacity one per task type, so starts are spaced ``1 / rate`` apart;
:class:`StartSpacing` gives each start its time slot up front, so a task that must wait
can be put back in the broker until its slot instead of being held in worker memory.
A broker that keeps slots for the whole fleet books them the same way (``rate_slots.lua``,
``sqlite_rate_slots.py``). ``annotated_rate_limit`` reads ``task_annotations``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from celeriac._imports import import_from_string
from celeriac.exceptions import ImproperlyConfigured

SECONDS_PER_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(rate: str | int | float | None) -> float:
    """Tasks per second that ``rate`` allows: ``"10/m"`` -> 1/6; None, 0 or "" -> 0 (no limit).

    A bare number is per second, as in Celery.

    Raises:
        ImproperlyConfigured: ``rate`` is not a number optionally followed by /s, /m or /h.
    """
    if rate is None or rate == "":
        return 0.0
    if isinstance(rate, int | float):
        return max(float(rate), 0.0)
    amount, _, unit = rate.strip().partition("/")
    try:
        count = float(amount)
        seconds = SECONDS_PER_UNIT[unit.strip()[:1] or "s"]
    except (ValueError, KeyError) as exc:
        raise ImproperlyConfigured(
            f"rate limit {rate!r} is not a number of tasks per s, m or h, such as '10/m'"
        ) from exc
    return max(count, 0.0) / seconds


@dataclass(slots=True)
class StartSpacing:
    """Start times ``1 / rate`` seconds apart for one task type.

    ``reserve(now)`` books the next free slot and returns how long until it; 0 means
    "start now". Not thread-safe: one owner books slots.
    """

    rate: float
    next_free: float = 0.0

    def reserve(self, now: float) -> float:
        """Book the next start slot; return the seconds from ``now`` until it."""
        start = max(now, self.next_free)
        self.next_free = start + 1.0 / self.rate
        return start - now

    def book(self, now: float, count: int) -> list[float]:
        """Book ``count`` consecutive start slots; return the seconds from ``now`` until each."""
        return [self.reserve(now) for _ in range(count)]


def annotated_rate_limit(annotations: Any, task: Any) -> tuple[bool, Any]:
    """The ``rate_limit`` that ``task_annotations`` give ``task``: (found, value).

    Celery's shapes: a dict of task name (or ``"*"`` for every task) to attributes, where
    the task's own entry replaces ``"*"``; an object whose ``annotate(task)`` returns such
    attributes or None; an import path of such an object or its class; or a list of these,
    later ones winning.
    """
    if annotations is None:
        return False, None
    if isinstance(annotations, list | tuple):
        found, value = False, None
        for annotation in annotations:
            is_set, annotated = annotated_rate_limit(annotation, task)
            if is_set:
                found, value = True, annotated
        return found, value
    if isinstance(annotations, str):
        annotations = import_from_string(annotations)
        if isinstance(annotations, type):
            annotations = annotations()
    if isinstance(annotations, Mapping):
        attributes = annotations.get(task.name, annotations.get("*"))
    else:
        annotate = getattr(annotations, "annotate", None)
        attributes = annotate(task) if callable(annotate) else None
    if isinstance(attributes, Mapping) and "rate_limit" in attributes:
        return True, attributes["rate_limit"]
    return False, None
