"""Autoscaler: grow the pool toward the work the worker holds, shrink it when idle (edge layer).

``--autoscale MAX,MIN``, Celery's flag. The pool starts with MIN slots and the worker
fetches for MAX of them, so work to grow for arrives while the pool is small. Once a
second the autoscaler counts the tasks the worker holds (running and fetched) and grows
the pool to that many at once, up to MAX. It shrinks by one slot per second down to MIN,
but only after no growth for ``keepalive`` seconds (Celery's ``AUTOSCALE_KEEPALIVE``
environment variable, 30 s by default), so a bursty queue keeps its processes warm.

``pool_grow`` and ``pool_shrink`` go through it, widening its bounds if they must, and the
``autoscale`` control command changes the bounds at run time. A pool keeps at least one
slot, so a MIN of 0 means 1.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celeriac.defaults import environment_number

if TYPE_CHECKING:
    from celeriac.worker.consumer import Consumer
    from celeriac.worker.pools.base import Pool
    from celeriac.worker.state import WorkerState

logger = logging.getLogger("celeriac.worker")

AUTOSCALE_KEEPALIVE = environment_number("AUTOSCALE_KEEPALIVE", 30.0)
INTERVAL = 1.0
"""Seconds between two looks at the work held."""


def grow(pool: Pool, consumer: Consumer, n: int) -> None:
    """Add ``n`` slots to the pool and let the consumer hand out ``n`` more jobs."""
    pool.grow(n)
    consumer.add_slots(n)


def shrink(pool: Pool, consumer: Consumer, n: int) -> None:
    """Remove ``n`` slots, each once it is idle.

    Raises:
        ValueError: the pool would be left without a slot.
    """
    pool.shrink(n)
    consumer.remove_slots(n)


def parse_autoscale(value: str) -> tuple[int, int]:
    """``"10,3"`` -> (10, 3); ``"10"`` -> (10, 0), as Celery reads ``--autoscale``.

    Raises:
        ValueError: not one or two whole numbers, MAX below 1 or MIN above MAX.
    """
    parts = [part.strip() for part in value.split(",")]
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        raise ValueError(f"--autoscale takes MAX or MAX,MIN, such as 10,3; not {value!r}") from None
    if len(numbers) > 2:
        raise ValueError(f"--autoscale takes MAX or MAX,MIN, such as 10,3; not {value!r}")
    maximum, minimum = numbers[0], numbers[1] if len(numbers) == 2 else 0
    if maximum < 1 or not 0 <= minimum <= maximum:
        raise ValueError(f"--autoscale needs 1 <= MAX and 0 <= MIN <= MAX; not {value!r}")
    return maximum, minimum


class Autoscaler:
    """Resize ``pool`` between ``min_concurrency`` and ``max_concurrency`` slots.

    ``scale`` makes one decision; ``start`` runs it every ``interval`` seconds in a thread.
    Every change of size goes through one lock, so the control commands and the thread
    never resize at once.
    """

    def __init__(
        self,
        pool: Pool,
        consumer: Consumer,
        state: WorkerState,
        max_concurrency: int,
        min_concurrency: int,
        *,
        keepalive: float = AUTOSCALE_KEEPALIVE,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.consumer = consumer
        self.state = state
        self.max_concurrency = max_concurrency
        self.min_concurrency = max(min_concurrency, 1)
        self.keepalive = keepalive
        self.interval = interval
        self._clock = clock
        self._last_growth = clock()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def processes(self) -> int:
        """Slots in the pool now."""
        return self.pool.limit

    @property
    def qty(self) -> int:
        """Tasks the worker holds: running and fetched, not yet done."""
        with self.state.lock:
            return len(self.state.active) + len(self.state.reserved)

    def start(self) -> None:
        """Look at the work held every ``interval`` seconds, in a thread of its own."""
        self._thread = threading.Thread(target=self._run, name="celeriac-autoscaler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop looking; the pool keeps its size."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def scale(self) -> None:
        """Grow to the work held (at most MAX), or shrink one slot toward it (at least MIN)."""
        with self._lock:
            wanted = min(max(self.qty, self.min_concurrency), self.max_concurrency)
            processes = self.processes
            if wanted > processes:
                self._grow(wanted - processes)
            elif wanted < processes and self._clock() - self._last_growth >= self.keepalive:
                self._shrink(1)

    def update(self, maximum: int | None = None, minimum: int | None = None) -> str:
        """Set new bounds (Celery's ``autoscale`` command) and fit the pool into them now.

        Raises:
            ValueError: MIN above MAX, or MAX below 1.
        """
        with self._lock:
            maximum = self.max_concurrency if maximum is None else int(maximum)
            minimum = self.min_concurrency if minimum is None else max(int(minimum), 1)
            if maximum < 1 or minimum > maximum:
                raise ValueError(
                    f"autoscale needs 1 <= min <= max, not max={maximum} min={minimum}"
                )
            self.max_concurrency, self.min_concurrency = maximum, minimum
            processes = self.processes
            if processes > maximum:
                self._shrink(processes - maximum)
            elif processes < minimum:
                self._grow(minimum - processes)
        return f"autoscale now max={maximum} min={minimum}"

    def force_scale_up(self, n: int) -> None:
        """Add ``n`` slots now (``pool_grow``), raising MAX if the pool would pass it."""
        with self._lock:
            self.max_concurrency = max(self.max_concurrency, self.processes + n)
            self._grow(n)

    def force_scale_down(self, n: int) -> None:
        """Remove ``n`` slots now (``pool_shrink``), lowering MIN if the pool would pass it.

        Raises:
            ValueError: the pool would be left without a slot.
        """
        with self._lock:
            remaining = self.processes - n
            shrink(self.pool, self.consumer, n)
            self.min_concurrency = min(self.min_concurrency, remaining)

    def info(self) -> dict[str, Any]:
        """The autoscaler as Celery's ``stats()`` shows it."""
        return {
            "max": self.max_concurrency,
            "min": self.min_concurrency,
            "current": self.processes,
            "qty": self.qty,
        }

    def _grow(self, n: int) -> None:
        logger.info("Scaling up %d processes.", n)
        grow(self.pool, self.consumer, n)
        self._last_growth = self._clock()

    def _shrink(self, n: int) -> None:
        logger.info("Scaling down %d processes.", n)
        shrink(self.pool, self.consumer, n)

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.scale()
            except Exception:
                logger.exception("The autoscaler could not resize the pool")
