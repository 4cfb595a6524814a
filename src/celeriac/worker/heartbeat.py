"""Heart: the worker's online, heartbeat and offline events, and the flushing of its task events.

Monitors take a worker for alive while its heartbeats come every ``freq`` seconds
(wire protocol §5.4). The worker batches its task events (``buffer_group=["task"]``);
the heart sends a batch ``flush_delay`` after its first event, so that a burst shares
one message yet every event reaches a monitor well within a second, and before every
heartbeat (the dispatcher sends what waits before an unbatched event).
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
from collections.abc import Callable
from typing import Any

from celeriac import __version__, signals
from celeriac.events.dispatcher import EventDispatcher

logger = logging.getLogger("celeriac.worker")

SOFTWARE = {"sw_ident": "py-celeriac", "sw_ver": __version__, "sw_sys": platform.system()}

# How long a batch of task events waits for more before it is sent.
FLUSH_DELAY = 0.1


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load, rounded as Celery sends it."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return [0.0, 0.0, 0.0]


class Heart:
    """Send ``worker-heartbeat`` every ``interval`` seconds between online and offline,
    and flush the dispatcher's batches ``flush_delay`` after :meth:`flush_soon`.

    Args:
        dispatcher: the worker's dispatcher.
        counters: returns (active, processed) for the events' fields.
        interval: seconds between heartbeats, sent as ``freq``.
        flush_delay: seconds a batch of task events waits for more.
        now: the monotonic clock the heartbeats are timed by.
    """

    def __init__(
        self,
        dispatcher: EventDispatcher,
        counters: Callable[[], tuple[int, int]],
        interval: float = 2.0,
        *,
        flush_delay: float = FLUSH_DELAY,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dispatcher = dispatcher
        self.counters = counters
        self.interval = interval
        self.flush_delay = flush_delay
        self.now = now
        self._stopped = threading.Event()
        # Set by flush_soon and by stop: either wakes the heart's thread.
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Announce the worker online and start beating."""
        self._send("worker-online")
        self._thread = threading.Thread(target=self._run, name="celeriac-heart", daemon=True)
        self._thread.start()

    def beat(self) -> None:
        """Send one heartbeat now (the ``heartbeat`` control command asks for it)."""
        self._send("worker-heartbeat")

    def flush_soon(self) -> None:
        """A task event was batched: send the batch within ``flush_delay`` seconds.

        Given to the dispatcher as ``on_send_buffered``; it runs for every event, so it
        takes the event's lock only when the flag is not set yet.
        """
        if not self._wake.is_set():
            self._wake.set()

    def stop(self) -> None:
        """Stop beating, send what waits and announce the worker offline."""
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._send("worker-offline")

    def _send(self, type_: str) -> None:
        active, processed = self.counters()
        fields: dict[str, Any] = dict(
            SOFTWARE, freq=self.interval, active=active, processed=processed, loadavg=load_average()
        )
        self.dispatcher.send(type_, **fields)
        signals.heartbeat_sent.send(sender=self)

    def _run(self) -> None:
        next_beat = self.now() + self.interval
        while not self._stopped.is_set():
            if self._wake.wait(max(0.0, next_beat - self.now())):
                self._wake.clear()
                # A burst of events shares one message; stop() sends what waits itself.
                if self._stopped.wait(self.flush_delay):
                    return
                self._guarded(self.dispatcher.flush)
            if self.now() >= next_beat:
                next_beat = self.now() + self.interval
                self._guarded(self.beat)

    def _guarded(self, action: Callable[[], None]) -> None:
        """Run ``action``; an error is logged and the heart goes on beating."""
        try:
            action()
        except Exception:
            logger.exception("%s failed", action.__name__)
