"""Heart: the worker's online, heartbeat and offline events, which monitors use for liveness."""

from __future__ import annotations

import logging
import os
import platform
import threading
from collections.abc import Callable
from typing import Any

from celeriac import __version__, signals
from celeriac.events.dispatcher import EventDispatcher

SOFTWARE = {"sw_ident": "py-celeriac", "sw_ver": __version__, "sw_sys": platform.system()}


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load, rounded as Celery sends it."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return [0.0, 0.0, 0.0]


class Heart:
    """Send ``worker-heartbeat`` every ``interval`` seconds, between online and offline."""

    def __init__(
        self,
        dispatcher: EventDispatcher,
        counters: Callable[[], tuple[int, int]],
        interval: float = 2.0,
    ) -> None:
        self.dispatcher = dispatcher
        self.counters = counters
        self.interval = interval
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def _send(self, type_: str) -> None:
        active, processed = self.counters()
        fields: dict[str, Any] = dict(
            SOFTWARE, freq=self.interval, active=active, processed=processed, loadavg=load_average()
        )
        self.dispatcher.send(type_, **fields)
        signals.heartbeat_sent.send(sender=self)

    def start(self) -> None:
        """Announce the worker online and start beating."""
        self._send("worker-online")
        self._thread = threading.Thread(target=self._run, name="celeriac-heart", daemon=True)
        self._thread.start()

    def beat(self) -> None:
        """Send one heartbeat now (the ``heartbeat`` control command asks for it)."""
        self._send("worker-heartbeat")

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.beat()
            except Exception:
                logging.getLogger("celeriac.worker").exception("Sending a heartbeat failed")

    def stop(self) -> None:
        """Stop beating and announce the worker offline."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._send("worker-offline")
