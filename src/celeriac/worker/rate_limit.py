"""Rate limits on one worker: when each task type may start next (edge layer).

A task's ``rate_limit`` (or ``task_default_rate_limit``) spaces its starts ``1 / rate``
apart, as Celery's worker does. A message that arrives before its task's next free slot
books that slot and goes back to the broker until then, carrying the slot in a header,
so it waits in the broker rather than in worker memory and never holds up other tasks;
when it comes back it starts at once. ``control.rate_limit`` changes ``task.rate_limit``,
which the next message of that task reads. The limit holds per worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from celeriac.exceptions import ImproperlyConfigured
from celeriac.rate_limits import StartSpacing, parse_rate

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.worker.request import Request

logger = logging.getLogger("celeriac.worker")

RATE_SLOT_HEADER = "x-celeriac-rate-slot"
# A message put back until its slot may come back a little early (broker clocks, rounding).
SLOT_TOLERANCE = 0.05


class RateLimits:
    """The start slots of every rate-limited task type on this worker; thread-safe."""

    def __init__(self, app: Celeriac, now: Callable[[], float] = time.time) -> None:
        self.app = app
        self.now = now
        self._spacings: dict[str, StartSpacing] = {}
        self._lock = threading.Lock()

    def delay(self, request: Request) -> float:
        """Seconds ``request`` must wait for its start slot, booking it; 0 to start now."""
        if self.app.conf.worker_disable_rate_limits:
            return 0.0
        now = self.now()
        slot = request.message.headers.get(RATE_SLOT_HEADER)
        if isinstance(slot, int | float) and slot <= now + SLOT_TOLERANCE:
            return 0.0
        task = self.app.tasks.get(request.name)
        if task is None:
            return 0.0
        try:
            rate = parse_rate(task.option("rate_limit"))
        except ImproperlyConfigured as exc:
            logger.error("Ignoring the rate limit of %s: %s", request.name, exc)
            return 0.0
        if not rate:
            return 0.0
        with self._lock:
            spacing = self._spacings.get(request.name)
            if spacing is None or spacing.rate != rate:
                spacing = self._spacings[request.name] = StartSpacing(rate)
            return spacing.reserve(now)
