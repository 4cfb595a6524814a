"""Rate limits: Celery's ``"10/m"`` strings and the spacing of task starts they ask for.

Pure: no clocks of their own (callers pass ``now``), no I/O. Celery's worker keeps a
token bucket of capacity one per task type, so starts are spaced ``1 / rate`` apart;
:class:`StartSpacing` gives each start its time slot up front, so a task that must wait
can be put back in the broker until its slot instead of being held in worker memory.
A broker that keeps slots for the whole fleet books them the same way (``rate_slots.lua``,
``sqlite_rate_slots.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

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
