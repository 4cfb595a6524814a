"""What one worker knows at run time: revoked ids, reserved and active requests, counters.

Shared by the consumer, the pool callbacks and remote control, from several threads;
every mutation holds the lock. A revoked id is kept until its expiry (a broadcast revoke
for ``worker_revoke_expires`` seconds; one read from the broker until the time recorded
there), and at most ``REVOKES_MAX`` of them, the oldest forgotten first.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING

from celeriac.defaults import environment_number

if TYPE_CHECKING:
    from celeriac.worker.request import Request

REVOKES_MAX = int(environment_number("CELERY_WORKER_REVOKES_MAX", 50_000))


class WorkerState:
    """Revoked ids, the requests held by this worker, and processed counts."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # Revoked task id -> the Unix time it stops counting as revoked, oldest first.
        self.revoked: OrderedDict[str, float] = OrderedDict()
        self.reserved: dict[str, Request] = {}
        self.active: dict[str, Request] = {}
        self.total: Counter[str] = Counter()
        self.processed = 0
        self.started = time.monotonic()

    def merge_revokes(self, revokes: Mapping[str, float]) -> int:
        """Remember revoked ids with their expiry; return how many were new here."""
        now = time.time()
        added = 0
        with self.lock:
            for task_id, expires_at in revokes.items():
                if expires_at <= now:
                    continue
                known = self.revoked.pop(task_id, None)
                added += known is None
                self.revoked[task_id] = max(expires_at, known or 0.0)
            self._forget_expired(now)
        return added

    def is_revoked(self, task_id: str) -> bool:
        """Tell whether ``task_id`` was revoked and that has not expired."""
        expires_at = self.revoked.get(task_id)
        return expires_at is not None and expires_at > time.time()

    def revoked_ids(self) -> list[str]:
        """The ids revoked and not expired, oldest revoke first."""
        now = time.time()
        with self.lock:
            return [task_id for task_id, expires_at in self.revoked.items() if expires_at > now]

    def _forget_expired(self, now: float) -> None:
        """Drop expired ids from the oldest end, and the oldest past ``REVOKES_MAX``."""
        while self.revoked:
            task_id, expires_at = next(iter(self.revoked.items()))
            if expires_at > now and len(self.revoked) <= REVOKES_MAX:
                return
            del self.revoked[task_id]

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
