"""Solo pool: run each job inline in the caller's thread, one at a time (edge layer)."""

from __future__ import annotations

import os
from typing import Any

from celeriac.worker.pools import TimeLimitWarning, describe_timeouts, not_run_outcome, run_job
from celeriac.worker.pools.base import DoneCallback, Job, JobTarget


class SoloPool:
    """Run jobs in the thread that applies them: ``apply`` returns once ``on_done`` has run.

    Nothing can interrupt a job running inline, so time limits are not enforced (a
    warning is logged once), ``terminate_job`` finds nothing and the pool cannot be
    resized.
    """

    limit: int = 1

    def __init__(
        self,
        target: JobTarget,
        *,
        soft_time_limit: float | None = None,
        time_limit: float | None = None,
    ) -> None:
        self._target = target
        self._soft_time_limit = soft_time_limit
        self._time_limit = time_limit
        self._time_limit_warning = TimeLimitWarning("solo", soft_time_limit, time_limit)
        self._is_stopped = False

    def start(self) -> None:
        """Do nothing: the solo pool has no threads or processes of its own."""

    def apply(self, job: Job, on_done: DoneCallback) -> None:
        """Run ``job`` now and call ``on_done`` with its outcome before returning."""
        if self._is_stopped:
            on_done(not_run_outcome(job))
            return
        self._time_limit_warning.check(job)
        on_done(run_job(self._target, job))

    def terminate_job(self, task_id: str, signum: int) -> bool:
        """Return False: a job running inline cannot be stopped from outside."""
        return False

    def grow(self, n: int = 1) -> None:
        """Refuse: the solo pool has exactly one slot.

        Raises:
            ValueError: always, as the pool cannot be resized.
        """
        raise ValueError("The solo pool cannot grow: it runs one job at a time")

    def shrink(self, n: int = 1) -> None:
        """Refuse: the solo pool has exactly one slot.

        Raises:
            ValueError: always, as the pool cannot be resized.
        """
        raise ValueError("The solo pool cannot shrink: it runs one job at a time")

    def stop(self, *, graceful: bool) -> None:
        """Refuse further jobs; a job running inline ends when it ends either way."""
        self._is_stopped = True

    def info(self) -> dict[str, Any]:
        """Describe the pool for ``inspect stats``."""
        return {
            "implementation": "celeriac.worker.pools.solo:SoloPool",
            "max-concurrency": self.limit,
            "processes": [os.getpid()],
            "max-tasks-per-child": "N/A",
            "timeouts": describe_timeouts(self._soft_time_limit, self._time_limit),
        }
