"""Batcher: gather items from many threads and hand them over in lists (edge layer).

The worker batches its round trips (design section 7): acknowledgements and events are
added one at a time by the threads that produce them and flushed together, once
``max_items`` are waiting or ``max_delay`` seconds after the first of them arrived.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

logger = logging.getLogger("celeriac.worker")

T = TypeVar("T")


class Batcher(Generic[T]):
    """Collect items and call ``flush`` with lists of at most ``max_items`` of them.

    A background thread (``start``) flushes when a batch is due. Flushes run one at a
    time, so batches keep the order of ``add``. An exception in ``flush`` is logged and
    that batch dropped: retrying is up to the flush function. Items added after ``stop``
    are flushed at once in the adding thread.
    """

    def __init__(
        self, flush: Callable[[list[T]], None], *, max_items: int = 100, max_delay: float = 0.01
    ) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, not {max_items}")
        self._flush = flush
        self._max_items = max_items
        self._max_delay = max_delay
        self._items: list[T] = []
        self._first_added_at = 0.0
        self._condition = threading.Condition()
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._is_stopping = False

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

    def flush_now(self) -> None:
        """Flush every waiting item now, in the calling thread."""
        with self._flush_lock:
            while batch := self._take_batch():
                self._call_flush(batch)

    def stop(self) -> None:
        """Stop the background thread, then flush what is still waiting."""
        with self._condition:
            self._is_stopping = True
            self._condition.notify()
        if self._thread is not None:
            self._thread.join()
        self.flush_now()

    def _run(self) -> None:
        while self._wait_until_due():
            self.flush_now()

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

    def _call_flush(self, batch: list[T]) -> None:
        try:
            self._flush(batch)
        except Exception:  # a failed batch must not stop the batching of later items
            logger.exception("Flushing a batch of %d items failed", len(batch))
