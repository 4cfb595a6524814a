"""Batcher: gather items from many threads and hand them over in lists (edge layer).

The worker batches its round trips (design section 7): acknowledgements and events are
added one at a time by the threads that produce them and flushed together, once
``max_items`` are waiting or ``max_delay`` seconds after the first of them arrived.

A batch whose flush fails with one of the ``retry_on`` errors (the broker went away) is
kept, ahead of later items, and flushed again after a growing pause, until it goes
through: an acknowledgement lost in a broker blip would leave its task pending under a
live worker and run it a second time later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

logger = logging.getLogger("celeriac.worker")

T = TypeVar("T")

FIRST_RETRY_DELAY = 0.05
MAX_RETRY_DELAY = 2.0


class Batcher(Generic[T]):
    """Collect items and call ``flush`` with lists of at most ``max_items`` of them.

    A background thread (``start``) flushes when a batch is due. Flushes run one at a
    time, so batches keep the order of ``add``. A batch that fails with a ``retry_on``
    error is kept and retried (see the module docstring); any other exception in
    ``flush`` is a bug of the flush function: it is logged and that batch dropped. Items
    added after ``stop`` are flushed at once in the adding thread.
    """

    def __init__(
        self,
        flush: Callable[[list[T]], None],
        *,
        max_items: int = 100,
        max_delay: float = 0.01,
        retry_on: tuple[type[Exception], ...] = (),
    ) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, not {max_items}")
        self._flush = flush
        self._max_items = max_items
        self._max_delay = max_delay
        self._retry_on = retry_on
        self._items: list[T] = []
        self._first_added_at = 0.0
        self._condition = threading.Condition()
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._is_stopping = False
        self._failing_since: float | None = None

    def start(self) -> None:
        """Start the background thread that flushes due batches."""
        self._thread = threading.Thread(target=self._run, name="celeriac-batcher", daemon=True)
        self._thread.start()

    def add(self, item: T) -> None:
        """Queue ``item`` for the next batch; safe to call from any thread."""
        with self._condition:
            if not self._items:
                self._first_added_at = time.monotonic()
            self._items.append(item)
            if len(self._items) in (1, self._max_items):
                self._condition.notify()
            is_stopping = self._is_stopping
        if is_stopping:
            self.flush_now()

    def pending(self) -> list[T]:
        """Return the items not flushed yet, a failed batch's included."""
        with self._condition:
            return list(self._items)

    def flush_now(self) -> bool:
        """Flush every waiting item now, in the calling thread.

        Returns False if a batch failed with a ``retry_on`` error; it is kept for later.
        """
        with self._flush_lock:
            while batch := self._take_batch():
                if not self._call_flush(batch):
                    return False
            return True

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the background thread, then flush what is still waiting.

        Failed batches are retried for up to ``timeout`` seconds; what is left then is
        logged as an error, item by item count, since it never reached its destination.
        """
        with self._condition:
            self._is_stopping = True
            self._condition.notify()
        if self._thread is not None:
            self._thread.join()
        deadline = time.monotonic() + timeout
        delay = FIRST_RETRY_DELAY
        while not self.flush_now():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.error(
                    "Gave up flushing %d items after %.0f s of failures",
                    len(self.pending()),
                    timeout,
                )
                return
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_RETRY_DELAY)

    def _run(self) -> None:
        delay = FIRST_RETRY_DELAY
        while self._wait_until_due():
            if self.flush_now():
                delay = FIRST_RETRY_DELAY
                continue
            with self._condition:
                if not self._is_stopping:
                    self._condition.wait(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)

    def _wait_until_due(self) -> bool:
        """Block until a batch is due; False once the batcher is stopping."""
        with self._condition:
            while not self._is_stopping:
                if len(self._items) >= self._max_items:
                    return True
                if not self._items:
                    self._condition.wait()
                    continue
                remaining = self._first_added_at + self._max_delay - time.monotonic()
                if remaining <= 0:
                    return True
                self._condition.wait(remaining)
            return False

    def _take_batch(self) -> list[T]:
        with self._condition:
            batch = self._items[: self._max_items]
            del self._items[: self._max_items]
            return batch

    def _call_flush(self, batch: list[T]) -> bool:
        """Flush one batch; on a ``retry_on`` error put it back first in line and return False."""
        try:
            self._flush(batch)
        except self._retry_on as exc:
            with self._condition:
                self._items[:0] = batch
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                    logger.warning(
                        "Flushing a batch of %d items failed, kept to retry: %s", len(batch), exc
                    )
            return False
        except Exception:  # a failed batch must not stop the batching of later items
            logger.exception("Flushing a batch of %d items failed", len(batch))
        if self._failing_since is not None:
            logger.info("Flushing works again after %.1f s", time.monotonic() - self._failing_since)
            self._failing_since = None
        return True
