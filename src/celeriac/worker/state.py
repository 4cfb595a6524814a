"""What one worker knows at run time: revoked ids, reserved and active requests, counters.

Shared by the consumer, the pool callbacks and (later) remote control, from several
threads; every mutation holds the lock.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celeriac.worker.request import Request

REVOKES_MAX = 50_000


class WorkerState:
    """Revoked ids, the requests held by this worker, and processed counts."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.revoked: OrderedDict[str, float] = OrderedDict()
        self.reserved: dict[str, Request] = {}
        self.active: dict[str, Request] = {}
        self.total: Counter[str] = Counter()
        self.processed = 0
        self.started = time.monotonic()

    def revoke(self, task_id: str) -> None:
        """Remember a revoked id (oldest forgotten past ``REVOKES_MAX``)."""
        with self.lock:
            self.revoked[task_id] = time.time()
            while len(self.revoked) > REVOKES_MAX:
                self.revoked.popitem(last=False)

    def is_revoked(self, task_id: str) -> bool:
        """Tell whether ``task_id`` was revoked."""
        return task_id in self.revoked

    def reserve(self, request: Request) -> None:
        """Record a request received and waiting for a pool slot."""
        with self.lock:
            self.reserved[request.tag] = request

    def activate(self, request: Request) -> None:
        """Move a request from reserved to active."""
        with self.lock:
            self.reserved.pop(request.tag, None)
            self.active[request.tag] = request

    def finish(self, request: Request) -> None:
        """Forget a finished request and count it."""
        with self.lock:
            self.active.pop(request.tag, None)
            self.reserved.pop(request.tag, None)
            self.total[request.display_name] += 1
            self.processed += 1

    def held(self) -> int:
        """How many messages this worker holds (reserved plus running)."""
        return len(self.reserved) + len(self.active)

    def uptime(self) -> float:
        """Seconds since the worker started."""
        return time.monotonic() - self.started
