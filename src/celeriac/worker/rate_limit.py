"""Rate limits: when each task type may start next (edge layer).

A task's rate (``rate_limit``, which a ``task_annotations`` entry or ``control.rate_limit``
at run time may set, else ``task_default_rate_limit``) spaces its starts
``1 / rate`` apart, as Celery's worker does. The start slots of a fetched batch are booked
together: in the broker when it keeps slots for the fleet (Redis and SQLite implement
``SharedStartSlots``), so the limit holds across every worker at one round trip per batch;
otherwise (RabbitMQ, in-memory) in this worker, so the limit holds per worker. A batch
without a rate-limited task books nothing.

A message whose slot is ahead goes back to the broker until then, carrying its slot in a
header, so it waits there rather than in worker memory and never holds up other tasks;
when it comes back at its slot it starts at once. One that comes back under another rate
(a ``control.rate_limit`` since), or long after its slot (nobody fetched it in time),
books a new slot, so neither a rate change nor a backlog lets a burst through. The slot
names the delivery's ``retries``, so a retry, which copies the task's custom headers,
books a slot of its own.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import ImproperlyConfigured
from celeriac.rate_limits import StartSpacing, parse_rate
from celeriac.transports.base import SharedStartSlots, StartBooking, Transport, TransportError

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.worker.request import Request

logger = logging.getLogger("celeriac.worker")

# {"at": Unix time of the slot, "rate": starts per second, "retries": of the message}
RATE_SLOT_HEADER = "x-celeriac-rate-slot"
# A message put back until its slot may come back a little early (broker clocks, rounding).
SLOT_TOLERANCE = 0.05
# A message that comes back later than this after its slot (or one interval, if longer)
# books again: started at once, a backlog of overdue slots would start as a burst.
LATE_GRACE = 1.0


@dataclass(frozen=True, slots=True)
class Deferral:
    """Put a message back in the broker until the Unix time ``until``, adding ``headers``."""

    until: float
    headers: dict[str, Any]


class RateLimits:
    """Start slots of the rate-limited task types this worker runs; thread-safe."""

    def __init__(
        self, app: Celeriac, transport: Transport, now: Callable[[], float] = time.time
    ) -> None:
        self.app = app
        self.now = now
        self.shared = transport if isinstance(transport, SharedStartSlots) else None
        self._spacings: dict[str, StartSpacing] = {}
        self._lock = threading.Lock()

    def deferrals(self, requests: Sequence[Request]) -> list[Deferral | None]:
        """Decide for each request whether it waits for a start slot; None starts it now.

        Every request that needs a slot gets one from a single booking: one broker round
        trip for the batch when the broker keeps the slots, none if no task is limited.
        """
        if self.app.conf.worker_disable_rate_limits:
            return [None] * len(requests)
        now = self.now()
        decisions = [self._decide(request, now) for request in requests]
        wanted: dict[str, tuple[float, int]] = {}
        for request, decision in zip(requests, decisions, strict=True):
            if isinstance(decision, float):
                _, count = wanted.get(request.name, (decision, 0))
                wanted[request.name] = (decision, count + 1)
        booked = {name: iter(delays) for name, delays in self._book(wanted, now).items()}
        results: list[Deferral | None] = []
        for request, decision in zip(requests, decisions, strict=True):
            if isinstance(decision, float):
                delay = next(booked[request.name])
                results.append(_deferral(request, now + delay, decision) if delay > 0 else None)
            else:
                results.append(decision)
        return results

    def _decide(self, request: Request, now: float) -> Deferral | float | None:
        """None to start now, a Deferral to wait again for a slot held, or the rate to book."""
        rate = self._rate(request.name)
        if not rate:
            return None
        slot = _slot_held(request, rate)
        if slot is not None:
            if slot > now + SLOT_TOLERANCE:
                return _deferral(request, slot, rate)
            if slot >= now - max(LATE_GRACE, 1.0 / rate):
                return None
        return rate

    def _rate(self, task_name: str) -> float:
        """The task's starts per second now; 0 for no limit."""
        task = self.app.tasks.get(task_name)
        if task is None:
            return 0.0
        try:
            return parse_rate(task.option("rate_limit"))
        except ImproperlyConfigured as exc:
            logger.error("Ignoring the rate limit of %s: %s", task_name, exc)
            return 0.0

    def _book(self, wanted: dict[str, tuple[float, int]], now: float) -> dict[str, list[float]]:
        """Book ``count`` slots per task name at its rate; return the delays from now."""
        if not wanted:
            return {}
        if self.shared is not None:
            bookings = [
                StartBooking(name, 1.0 / rate, count) for name, (rate, count) in wanted.items()
            ]
            try:
                return dict(zip(wanted, self.shared.book_starts(bookings), strict=True))
            except TransportError as exc:
                logger.warning(
                    "Could not book rate-limit slots in the broker (%s): spacing these"
                    " starts on this worker only",
                    exc,
                )
        with self._lock:
            delays = {}
            for name, (rate, count) in wanted.items():
                spacing = self._spacings.get(name)
                if spacing is None:
                    spacing = self._spacings[name] = StartSpacing(rate)
                elif spacing.rate != rate:
                    # As in the broker: slots of the old rate do not push the new ones back.
                    next_free = min(spacing.next_free, now + 1.0 / rate)
                    spacing = self._spacings[name] = StartSpacing(rate, next_free)
                delays[name] = spacing.book(now, count)
            return delays


def _deferral(request: Request, until: float, rate: float) -> Deferral:
    """Wait until the slot at ``until``, which the message will carry."""
    slot = {"at": until, "rate": rate, "retries": request.message.retries}
    return Deferral(until, {RATE_SLOT_HEADER: slot})


def _slot_held(request: Request, rate: float) -> float | None:
    """The slot this delivery booked at ``rate``, if it carries one (Unix time)."""
    slot = request.message.headers.get(RATE_SLOT_HEADER)
    if not isinstance(slot, dict):
        return None
    at, booked_rate = slot.get("at"), slot.get("rate")
    if (
        isinstance(at, int | float)
        and isinstance(booked_rate, int | float)
        and math.isclose(booked_rate, rate)
        and slot.get("retries") == request.message.retries
    ):
        return float(at)
    return None
